"""A model served by Triton Inference Server, as a Backend: `infer --triton HOST:PORT/NAME` and
`bench --triton` run the same streams, sinks and reports with inference done by the server over
gRPC (tritonclient, the `[triton]` extra).

The client needs nothing but the address: the model's metadata (input spec, calibration,
threshold) comes from the `parameters` that `dualkd-edge triton` wrote into the model's config.
Where the time goes is read from the server's own statistics: its queue and compute time per
request; the rest of the round trip is the network and (de)serialisation."""

from __future__ import annotations

import logging
import re
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from dualkd_edge.artifacts import INPUT_NAME
from dualkd_edge.artifacts.contract import model_outputs
from dualkd_edge.errors import MissingDependencyError, UserError
from dualkd_edge.metadata import ArtifactMetadata
from dualkd_edge.runtime.base import Backend
from dualkd_edge.serving.triton_repository import METADATA_PARAMETER

log = logging.getLogger("dualkd_edge")

DEFAULT_GRPC_PORT = 8001
WIRE_DTYPES = {"uint8": "UINT8", "float": "FP32"}
STAT_KEYS = ("success", "queue", "compute_input", "compute_infer", "compute_output")


@dataclass(frozen=True)
class Endpoint:
    host: str
    port: int
    model: str
    cafile: str | None = None  # gRPC over TLS, the server verified against this CA (--triton-cafile)

    @property
    def url(self) -> str:
        return f"{self.host}:{self.port}"

    def __str__(self) -> str:
        return f"{self.url}/{self.model}"


def parse_endpoint(text: str, what: str = "--triton") -> Endpoint:
    """HOST:PORT/NAME (gRPC port; 8001 when left out), optionally grpc://-prefixed."""
    m = re.fullmatch(r"(?:grpc://)?(\[[^\]]+\]|[^:/\s]+)(?::(\d+))?/([^/\s]+)", text.strip())
    if not m:
        raise UserError(f"{what}: expected HOST:PORT/MODEL (Triton's gRPC port, e.g. 127.0.0.1:8001/dualkd), got {text!r}")
    port = int(m.group(2) or DEFAULT_GRPC_PORT)
    if not 0 < port < 65536:
        raise UserError(f"{what}: port {port} is not a TCP port")
    return Endpoint(m.group(1), port, m.group(3))


def _stat_snapshot(model_stats: dict) -> dict[str, int]:
    """Cumulative counters of one model's statistics (gRPC JSON: 64-bit numbers come as strings)."""
    inference = model_stats.get("inference_stats", {})
    snap = {f"{k}_ns": int(inference.get(k, {}).get("ns", 0)) for k in STAT_KEYS}
    snap["requests"] = int(inference.get("success", {}).get("count", 0))
    snap["executions"] = int(model_stats.get("execution_count", 0))
    snap["inferences"] = int(model_stats.get("inference_count", 0))
    for b in model_stats.get("batch_stats", []):
        snap[f"batch_{int(b['batch_size'])}"] = int(b.get("compute_infer", {}).get("count", 0))
    return snap


def server_split(before: dict[str, int], after: dict[str, int], roundtrip_ms: float | None = None) -> dict[str, float]:
    """Per-request means between two snapshots: time in the server, in its queue, computing;
    with the client's round trip, what the network and (de)serialisation took."""
    d = {k: after.get(k, 0) - before.get(k, 0) for k in after}
    n = d.get("requests", 0)
    if n <= 0:
        return {}
    split = {"server_ms": d["success_ns"] / n / 1e6, "queue_ms": d["queue_ns"] / n / 1e6,
             "compute_ms": (d["compute_input_ns"] + d["compute_infer_ns"] + d["compute_output_ns"]) / n / 1e6}
    if roundtrip_ms is not None:
        split["network_ms"] = max(0.0, roundtrip_ms - split["server_ms"])
    return split


class TritonBackend(Backend):
    name = "triton"

    def _tls(self) -> dict:
        """gRPC SSL arguments: the CA file's certificates as the roots the server must chain to."""
        if self.endpoint.cafile is None:
            return {}
        try:
            roots = Path(self.endpoint.cafile).read_bytes()
        except OSError as exc:
            raise UserError(f"--triton-cafile: cannot read {self.endpoint.cafile} ({exc.strerror or exc})") from None
        if b"-----BEGIN CERTIFICATE-----" not in roots:
            raise UserError(f"--triton-cafile: {self.endpoint.cafile} holds no PEM certificate")
        return {"ssl": True, "root_certificates": str(self.endpoint.cafile)}

    def __init__(self, endpoint: str | Endpoint, timeout_s: float = 30.0) -> None:
        super().__init__()
        try:
            import tritonclient.grpc as grpcclient
        except ImportError:
            raise MissingDependencyError("tritonclient is not installed: pip install 'dualkd-edge[triton]'") from None
        self._grpc = grpcclient
        self.endpoint = endpoint if isinstance(endpoint, Endpoint) else parse_endpoint(endpoint)
        self.timeout_s = timeout_s
        self.client = grpcclient.InferenceServerClient(self.endpoint.url, **self._tls())
        config = self._model_config()
        self.meta = self._metadata(config)
        self.max_batch = int(config.get("max_batch_size", 0)) or None
        self.fixed_batch = None
        inputs = {i["name"]: i for i in config.get("input", [])}
        if INPUT_NAME not in inputs:
            raise UserError(f"--triton: {self.endpoint} has no input {INPUT_NAME!r}; not a dualkd-edge model")
        self.output_names = model_outputs({o["name"] for o in config.get("output", [])}, f"--triton {self.endpoint}")
        self.backend_name = config.get("backend") or config.get("platform", "?")
        self.roundtrips_ms: list[float] = []
        self._start = self._last = self.statistics()

    # -- connection ---------------------------------------------------------------------------
    def _model_config(self) -> dict:
        from tritonclient.utils import InferenceServerException

        try:
            if not self.client.is_model_ready(self.endpoint.model):
                raise UserError(f"--triton: model {self.endpoint.model!r} is not ready on {self.endpoint.url} "
                                "(see the server's log; list models with its /v2/repository/index)")
            return self.client.get_model_config(self.endpoint.model, as_json=True)["config"]
        except InferenceServerException as exc:
            raise UserError(f"--triton: {self.endpoint.url}: {str(exc).splitlines()[0][:200]} "
                            "(is tritonserver running, and is this its gRPC port?)") from None

    def _metadata(self, config: dict) -> ArtifactMetadata:
        params = config.get("parameters", {})
        if METADATA_PARAMETER not in params:
            raise UserError(f"--triton: {self.endpoint} has no {METADATA_PARAMETER} parameter in its config; "
                            "write the repository with `dualkd-edge triton`")
        return ArtifactMetadata.from_json(params[METADATA_PARAMETER]["string_value"], f"--triton {self.endpoint}")

    # -- inference ----------------------------------------------------------------------------
    def _run(self, batch: np.ndarray) -> dict[str, np.ndarray]:
        from tritonclient.utils import InferenceServerException

        inp = self._grpc.InferInput(INPUT_NAME, list(batch.shape), WIRE_DTYPES[self.meta.input.dtype])
        inp.set_data_from_numpy(np.ascontiguousarray(batch))
        wanted = [self._grpc.InferRequestedOutput(n) for n in self.output_names]
        t0 = time.perf_counter()
        try:
            result = self.client.infer(self.endpoint.model, [inp], outputs=wanted, client_timeout=self.timeout_s)
        except InferenceServerException as exc:
            raise UserError(f"--triton {self.endpoint}: {str(exc).splitlines()[0][:300]}") from None
        roundtrip = (time.perf_counter() - t0) * 1e3
        self.roundtrips_ms.append(roundtrip)
        self.last_timings["roundtrip_ms"] = roundtrip
        n = batch.shape[0]
        out = {}
        for name in self.output_names:
            value = result.as_numpy(name)
            out[name] = value.reshape(n, 1, *value.shape[-2:]) if name == "anomaly_map" else value.reshape(n)
        return out

    # -- where the time went ------------------------------------------------------------------
    def statistics(self, at_least: int = 0, wait_s: float = 1.0) -> dict[str, int]:
        """The model's cumulative server-side counters. The server records a request just after
        sending its response: with `at_least`, wait (up to `wait_s`) until that many have been."""
        t_end = time.monotonic() + wait_s
        while True:
            stats = self.client.get_inference_statistics(self.endpoint.model, as_json=True)
            models = stats.get("model_stats", [])
            snap = _stat_snapshot(models[0]) if models else {}
            if snap.get("requests", 0) >= at_least or time.monotonic() > t_end:
                return snap
            time.sleep(0.005)

    def stage_timings(self) -> dict[str, float]:
        """The last call's round trip split with the server's statistics (one extra request to the
        server: `bench` calls this between timed calls). Exact while no other client uses the model;
        else the split is the mean over every request the server finished meanwhile."""
        now = self.statistics(at_least=self._last.get("requests", 0) + 1)
        split = server_split(self._last, now, self.last_timings.get("roundtrip_ms"))
        self._last = now
        return {**self.last_timings, **split}

    def server_report(self) -> dict:
        """Since this backend connected: requests, round trip, and the server's per-request split;
        how often the server batched requests together (executions with more than one)."""
        now = self.statistics(at_least=self._start.get("requests", 0) + len(self.roundtrips_ms))
        rt = float(np.mean(self.roundtrips_ms)) if self.roundtrips_ms else None
        delta = {k: now.get(k, 0) - self._start.get(k, 0) for k in now}
        batches = {int(k[6:]): v for k, v in delta.items() if k.startswith("batch_") and v > 0}
        return {"endpoint": str(self.endpoint), "backend": self.backend_name, "requests_sent": len(self.roundtrips_ms),
                "server_requests": delta.get("requests", 0), "server_executions": delta.get("executions", 0),
                "batch_sizes": dict(sorted(batches.items())), "roundtrip_ms": rt,
                **server_split(self._start, now, rt)}

    def describe(self) -> str:
        return f"triton {self.endpoint} ({self.backend_name})"

    def close(self) -> None:
        if self.client is not None:
            self.client.close()
            self.client = None  # type: ignore[assignment]


def format_server_report(report: dict) -> str:
    """One paragraph for `infer`'s and `bench`'s output."""
    if not report.get("server_requests"):
        return f"triton {report['endpoint']}: no requests finished on the server"
    sizes = ", ".join(f"{b}: {c}" for b, c in report["batch_sizes"].items()) or "n/a"
    line = (f"triton {report['endpoint']} ({report['backend']}): {report['requests_sent']} requests sent, "
            f"{report['server_requests']} finished on the server in {report['server_executions']} executions "
            f"(executions per batch size {sizes})")
    if report.get("roundtrip_ms") is not None:
        line += (f"\n  per request: round trip {report['roundtrip_ms']:.2f} ms = network + (de)serialisation "
                 f"{report['network_ms']:.2f} ms + in the server {report['server_ms']:.2f} ms (queue "
                 f"{report['queue_ms']:.2f} ms, compute {report['compute_ms']:.2f} ms; Triton's statistics)")
    return line
