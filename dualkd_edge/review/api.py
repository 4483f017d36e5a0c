"""The review routes of the dashboard (`infer --http ... --review DIR`), for the page and for scripts:

  GET  /review                      the review page (review.html)
  GET  /api/review                  {"items": [{id, source, frame, score, ..., image, overlay}], "defect_types", "stats"}
  GET  /api/review/ID/image.jpg     the frame;  /api/review/ID/overlay.jpg  with its heat map
  POST /api/review/ID               {"label": "good"|"defect"[, "defect_type": T]}, Authorization: Bearer TOKEN

Answering needs a dashboard token on loopback too (401 without): nothing a passer-by on the network
clicks can change what the line learns."""

from __future__ import annotations

import json
import re
from http import HTTPStatus
from importlib import resources

from dualkd_edge.review.stats import ReviewStats
from dualkd_edge.review.store import ReviewStore

_ITEM_ROUTE = re.compile(r"/api/review/([A-Za-z0-9][A-Za-z0-9._-]{0,127})(?:/(image|overlay)\.jpg)?")
MAX_BODY = 4096


class ReviewApi:
    def __init__(self, store: ReviewStore, stats: ReviewStats) -> None:
        self.store = store
        self.stats = stats
        self.page = resources.files("dualkd_edge.stream.dashboard").joinpath("review.html").read_bytes()

    def handles(self, path: str) -> bool:
        return path == "/review" or path == "/api/review" or path.startswith("/api/review/")

    def get(self, dashboard, req, path: str) -> None:
        if path == "/review":
            dashboard.send(req, HTTPStatus.OK, "text/html; charset=utf-8", self.page, page=self.page)
            return
        if path == "/api/review":
            items = [self._item(r) for r in self.store.queue()]
            body = {"items": items, "defect_types": self.store.header().get("defect_types") or [],
                    "stats": self.stats.summary()}
            dashboard.send(req, HTTPStatus.OK, "application/json", json.dumps(body).encode())
            return
        m = _ITEM_ROUTE.fullmatch(path)
        if not m or not m.group(2):
            dashboard.send(req, HTTPStatus.NOT_FOUND, "text/plain", b"not found\n")
            return
        suffix = ".jpg" if m.group(2) == "image" else ".overlay.jpg"
        try:
            data = self.store.item_path(m.group(1), suffix).read_bytes()
        except (KeyError, OSError):
            dashboard.send(req, HTTPStatus.NOT_FOUND, "text/plain", b"no such item\n")
            return
        dashboard.send(req, HTTPStatus.OK, "image/jpeg", data)

    @staticmethod
    def _item(record: dict) -> dict:
        keep = ("id", "source", "source_index", "frame", "timestamp", "score", "score_logit", "is_anomaly",
                "threshold", "calibration", "model_id", "kept_because")
        item = {k: record.get(k) for k in keep}
        item["image"] = f"/api/review/{record['id']}/image.jpg"
        item["overlay"] = f"/api/review/{record['id']}/overlay.jpg"
        return item

    def post(self, dashboard, req, path: str) -> None:
        m = _ITEM_ROUTE.fullmatch(path)
        if not m or m.group(2):
            dashboard.send(req, HTTPStatus.NOT_FOUND, "text/plain", b"not found\n")
            return
        who = dashboard.answer_token(req)
        if who is None:
            dashboard.send(req, HTTPStatus.UNAUTHORIZED, "application/json",
                           b'{"error": "answering needs the dashboard token (Authorization: Bearer TOKEN)"}\n',
                           [("WWW-Authenticate", 'Bearer realm="dualkd-edge"')])
            return
        try:
            length = int(req.headers.get("Content-Length") or 0)
            if not 0 < length <= MAX_BODY or "application/json" not in (req.headers.get("Content-Type") or ""):
                raise ValueError("expected a JSON body (Content-Type: application/json) of at most 4 KiB")
            body = json.loads(req.rfile.read(length))
            answer = self.store.answer(m.group(1), body.get("label"), who, body.get("defect_type"))
        except KeyError:
            dashboard.send(req, HTTPStatus.NOT_FOUND, "application/json", b'{"error": "no such item"}\n')
            return
        except (ValueError, AttributeError) as exc:
            dashboard.send(req, HTTPStatus.BAD_REQUEST, "application/json", json.dumps({"error": str(exc)}).encode())
            return
        self.stats.add(self.store.record(answer.id), answer)
        dashboard.send(req, HTTPStatus.OK, "application/json", json.dumps({"ok": True, **vars(answer)}).encode())
