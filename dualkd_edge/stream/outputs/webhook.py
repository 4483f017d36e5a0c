"""`--webhook URL`: each NG decision POSTed as JSON (the JSONL record plus `"event": "NG"`), retried
with backoff when the receiver is unreachable or answers 5xx/429. Standard library only.
`https://user:password@host/path` sends HTTP Basic credentials; they are never printed, and neither
are the URL's path and query (Slack-style keys, signatures): only scheme, host and port are shown.
Redirects are not followed: a 3xx answer is a failed delivery (following one would send the
credentials to another host, or downgrade https to http, and lose the body)."""

from __future__ import annotations

import base64
import json
import logging
import urllib.error
import urllib.request
from urllib.parse import unquote, urlsplit, urlunsplit

from dualkd_edge.version import __version__
from dualkd_edge.errors import UserError
from dualkd_edge.stream.outputs.delivery import QueuedSink, RetryDelays
from dualkd_edge.stream.results import FrameResult
from dualkd_edge.stream.outputs.credentials import webhook_display

log = logging.getLogger("dualkd_edge")


def split_credentials(url: str) -> tuple[str, str | None]:
    """(URL without user:password@, the Basic Authorization header value or None)."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise UserError(f"--webhook: expected an http:// or https:// URL, got {webhook_display(url)!r}")
    if parts.username is None:
        return url, None
    netloc = parts.hostname + (f":{parts.port}" if parts.port else "")
    token = base64.b64encode(f"{unquote(parts.username)}:{unquote(parts.password or '')}".encode()).decode()
    return urlunsplit(parts._replace(netloc=netloc)), f"Basic {token}"


class _RefuseRedirects(urllib.request.HTTPRedirectHandler):
    """urllib's default handler follows a redirect to any host with our Authorization header."""

    def redirect_request(self, req, fp, code, msg, headers, newurl):  # noqa: ANN001, PLR0913 - urllib's signature
        return None  # urllib then raises HTTPError with the 3xx code


_OPENER = urllib.request.build_opener(_RefuseRedirects)


class WebhookSink(QueuedSink):
    def __init__(self, url: str, attempts: int = 5, timeout: float = 3.0, queue_size: int = 256) -> None:
        self.url, self.authorization = split_credentials(url)
        super().__init__("webhook", webhook_display(url), queue_size=queue_size)
        self.attempts = attempts
        self.timeout = timeout
        self.delays = RetryDelays(first=0.5, longest=4.0)
        self.failing = False
        self.start()

    def selects(self, result: FrameResult) -> bool:
        return result.prediction.is_anomaly

    def make_record(self, result: FrameResult) -> dict:
        return {"event": "NG", **result.record()}

    def _post(self, body: bytes) -> None:
        headers = {"Content-Type": "application/json", "User-Agent": f"dualkd-edge/{__version__}"}
        if self.authorization:
            headers["Authorization"] = self.authorization
        request = urllib.request.Request(self.url, data=body, headers=headers, method="POST")
        with _OPENER.open(request, timeout=self.timeout) as reply:
            reply.read()

    def deliver(self, record: dict) -> bool:
        body = json.dumps(record).encode()
        for attempt in range(1, self.attempts + 1):
            try:
                self._post(body)
            except urllib.error.HTTPError as exc:
                self.delivery.last_error = f"HTTP {exc.code} {exc.reason}"
                if 300 <= exc.code < 400:
                    location = webhook_display(exc.headers.get("Location") or "") if exc.headers else "?"
                    self.delivery.last_error += f" to {location}: redirects are not followed (give the final URL)"
                if exc.code < 500 and exc.code != 429:  # the receiver refuses this event: retrying will not help
                    log.warning("webhook %s: %s; event dropped", self.delivery.target, self.delivery.last_error)
                    return False
            except (OSError, ValueError) as exc:  # URLError, timeouts, refused connections
                self.delivery.last_error = f"{type(getattr(exc, 'reason', exc)).__name__}: {getattr(exc, 'reason', exc)}"
            else:
                if self.failing:
                    self.failing = False
                    self.count("reconnects")
                    log.info("webhook %s: reachable again", self.delivery.target)
                self.delivery.connected = True
                return True
            if not self.failing:
                self.failing = True
                log.warning("webhook %s: %s; retrying with backoff", self.delivery.target, self.delivery.last_error)
            self.delivery.connected = False
            if attempt == self.attempts or self.abandon.is_set():
                return False
            self.wait(self.delays(attempt))
        return False
