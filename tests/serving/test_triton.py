"""Triton Inference Server: a REAL tritonserver (PyPI's nvidia-pytriton wheel, Python backend, CPU)
serves our export; scores equal local ONNX Runtime; requests are batched; `infer` and `bench`
stream through it. The onnxruntime / tensorrt configs (GPU servers) are checked against Triton's
config schema. The server is started once for the module (about 3 s)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import threading
from pathlib import Path

import numpy as np
import pytest
from helpers import REPO, assert_one_line_error, parts, run_cli

from support.stream_servers import free_port

tritonclient = pytest.importorskip("tritonclient.grpc", reason="needs the [triton] extra (tritonclient)")

# The server's environment: the [serve] extra, apart from the test venv (its stub needs numpy<2).
SERVER_ENV = Path(os.environ.get("DUALKD_TRITON_ENV", REPO / ".ci" / "cache" / "triton-env"))
SERVE = SERVER_ENV / "bin" / "dualkd-edge"


@pytest.fixture(scope="module")
def served(dynamic_onnx, tmp_path_factory):
    """(grpc url, http url, model name): our export in a python-backend repository, served."""
    if not SERVE.is_file():
        pytest.skip(f"no server environment at {SERVER_ENV}: .ci/run makes it (python3 -m venv {SERVER_ENV} && "
                    f"{SERVER_ENV}/bin/pip install -e '.[serve]')")
    from dualkd_edge.serving.triton_repository import TritonRepoOptions, write_triton_repository
    from dualkd_edge.serving.triton_server import wait_until_ready

    repo = tmp_path_factory.mktemp("triton") / "repo"
    write_triton_repository(dynamic_onnx, repo, TritonRepoOptions(name="parts", backend="python", max_batch=8,
                                                                   queue_delay_us=20000))
    http_port, grpc_port = free_port(), free_port()
    log = open(repo.parent / "server.log", "w")
    proc = subprocess.Popen([str(SERVE), "serve", str(repo), "--http-port", str(http_port), "--grpc-port",
                             str(grpc_port)], stdout=log, stderr=subprocess.STDOUT)
    try:
        wait_until_ready(f"127.0.0.1:{grpc_port}", "parts", timeout=90, process=proc)
        yield f"127.0.0.1:{grpc_port}", f"127.0.0.1:{http_port}", "parts"
    except Exception:
        log.flush()
        print((repo.parent / "server.log").read_text()[-3000:])
        raise
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()


def _remote(client_module, url: str, model: str, batch: np.ndarray) -> dict[str, np.ndarray]:
    client = client_module.InferenceServerClient(url)
    try:
        inp = client_module.InferInput("images", list(batch.shape), "FP32")
        inp.set_data_from_numpy(batch)
        result = client.infer(model, [inp])
        return {o: result.as_numpy(o) for o in ("score", "local_score", "semantic_score", "anomaly_map", "score_logit")}
    finally:
        client.close()


@pytest.mark.servers
def test_served_scores_equal_local_onnxruntime_over_grpc_and_http(served, dynamic_onnx):
    import tritonclient.http as httpclient

    from dualkd_edge import Detector

    grpc_url, http_url, model = served
    with Detector.load(dynamic_onnx) as det:
        batch = det.prepare(parts(3)).tensor
        local = det.backend.infer(batch)
    for module, url in ((tritonclient, grpc_url), (httpclient, http_url)):
        remote = _remote(module, url, model, batch)
        assert remote["score"].shape == (3, 1) and remote["anomaly_map"].shape == (3, 1, 112, 112)
        for name, value in local.items():
            np.testing.assert_allclose(remote[name].reshape(value.shape), value, atol=1e-5, rtol=0, err_msg=name)


@pytest.mark.servers
def test_concurrent_requests_are_batched_by_the_server(served):
    from dualkd_edge.runtime.triton_backend import TritonBackend

    grpc_url, _, model = served
    backend = TritonBackend(f"{grpc_url}/{model}")
    before = backend.statistics()
    x = np.random.default_rng(0).standard_normal((1, 3, 112, 112)).astype(np.float32)
    errors: list[BaseException] = []

    def client() -> None:
        try:
            with TritonBackend(f"{grpc_url}/{model}") as own:
                for _ in range(3):
                    own.infer(x)
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=client) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert not errors, errors
    after = backend.statistics(at_least=before["requests"] + 24)
    backend.close()
    assert after["requests"] - before["requests"] == 24
    executions = after["executions"] - before["executions"]
    batched = {int(k[6:]): after[k] - before.get(k, 0) for k in after if k.startswith("batch_")}
    # 24 one-image requests arrived together: the dynamic batcher put several into one execution
    assert executions < 24 and any(size > 1 and n > 0 for size, n in batched.items()), batched


@pytest.mark.servers
def test_infer_streams_through_triton_with_the_server_split(served, dynamic_onnx, small_dataset, tmp_path):
    grpc_url, _, model = served
    folder = small_dataset / "washer" / "test" / "spot"
    remote = run_cli("infer", "--triton", f"{grpc_url}/{model}", folder, "--jsonl", tmp_path / "r.jsonl",
                     "--out", tmp_path / "out", "--batch", "2", "--save-images", "anomalies")
    assert remote.returncode == 0, remote.stderr
    local = run_cli("infer", dynamic_onnx, folder, "--jsonl", tmp_path / "l.jsonl")
    assert local.returncode == 0, local.stderr
    r_lines = [json.loads(x) for x in (tmp_path / "r.jsonl").read_text().splitlines()]
    l_lines = [json.loads(x) for x in (tmp_path / "l.jsonl").read_text().splitlines()]
    assert len(r_lines) == len(l_lines) == 3
    for r, lo in zip(r_lines, l_lines):
        assert r["source"] == lo["source"] and r["is_anomaly"] == lo["is_anomaly"]
        for key in ("score", "score_logit", "local_score", "semantic_score"):
            assert r[key] == pytest.approx(lo[key], abs=2e-6), key
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    triton = summary["triton"]
    assert triton["requests_sent"] == triton["server_requests"] >= 2 and triton["backend"] == "python"
    assert triton["roundtrip_ms"] == pytest.approx(triton["network_ms"] + triton["server_ms"], rel=1e-6)
    assert 0 < triton["compute_ms"] <= triton["server_ms"]
    assert "network + (de)serialisation" in remote.stdout


@pytest.mark.servers
def test_bench_times_the_server_and_splits_each_call(served, tmp_path):
    grpc_url, _, model = served
    proc = run_cli("bench", "--triton", f"{grpc_url}/{model}", "--batch", "1,2", "--warmup", "1", "--iters", "4",
                   "--json", tmp_path / "b.json")
    assert proc.returncode == 0, proc.stderr
    report = json.loads((tmp_path / "b.json").read_text())
    rows = report["rows"]
    assert [r["batch"] for r in rows] == [1, 2] and all(r["backend"].startswith("triton") for r in rows)
    for r in rows:
        assert {"roundtrip_ms", "queue_ms", "compute_ms", "network_ms"} <= set(r["stages_ms"])
        assert r["stages_ms"]["compute_ms"]["p50_ms"] > 0
    assert list(report["triton"].values())[0]["server_requests"] >= 8


@pytest.mark.servers
def test_triton_client_errors_are_one_line(served, small_dataset):
    grpc_url, _, _ = served
    folder = small_dataset / "washer" / "test" / "good"
    assert_one_line_error(run_cli("infer", "--triton", "no-port-or-model", folder), "--triton", "HOST:PORT/MODEL")
    assert_one_line_error(run_cli("infer", "--triton", f"{grpc_url}/absent", folder), "--triton", "absent")
    assert_one_line_error(run_cli("infer", "--triton", f"127.0.0.1:{free_port()}/parts", folder), "--triton")
    assert_one_line_error(run_cli("infer", "--triton", f"{grpc_url}/parts", "m.onnx", folder), "--triton",
                          "only SOURCE")


def _engine_with_sidecar(tmp_path: Path, onnx: Path, input_dtype: str = "float", max_batch: int = 16) -> Path:
    from dualkd_edge.artifacts import read_metadata
    from dualkd_edge.artifacts.engines import write_sidecar

    meta = read_metadata(onnx)
    meta.input.dtype = input_dtype
    engine = tmp_path / "m.plan"
    engine.write_bytes(b"engine bytes")  # the repository writer copies it; nothing here deserialises it
    write_sidecar(engine, {"tensorrt_version": "10.3.0", "gpu": {"name": "Orin"}, "precision": "fp16",
                           "build_options": {"input_shapes": {"min": [1], "opt": [4], "max": [max_batch]}},
                           "metadata": meta.to_dict()})
    return engine


@pytest.mark.servers
def test_onnxruntime_and_tensorrt_configs_follow_tritons_schema(dynamic_onnx, tmp_path):
    from dualkd_edge.artifacts import read_metadata
    from dualkd_edge.metadata import ArtifactMetadata
    from support.config_files import parse_config

    proc = run_cli("triton", dynamic_onnx, "--out", tmp_path / "repo", "--name", "ort", "--max-batch", "4",
                   "--queue-delay-us", "500", "--instances", "2")
    assert proc.returncode == 0, proc.stderr
    engine = _engine_with_sidecar(tmp_path, dynamic_onnx, input_dtype="uint8")
    proc = run_cli("triton", engine, "--out", tmp_path / "repo", "--name", "trt")
    assert proc.returncode == 0, proc.stderr
    ort = parse_config((tmp_path / "repo" / "ort" / "config.pbtxt").read_text())
    trt = parse_config((tmp_path / "repo" / "trt" / "config.pbtxt").read_text())
    assert (ort.backend, ort.max_batch_size, trt.backend, trt.max_batch_size) == ("onnxruntime", 4, "tensorrt", 8)
    assert sorted(p.name for p in (tmp_path / "repo" / "ort" / "1").iterdir()) == ["model.onnx"]
    assert sorted(p.name for p in (tmp_path / "repo" / "trt" / "1").iterdir()) == ["model.plan", "model.plan.json"]
    assert ort.dynamic_batching.max_queue_delay_microseconds == 500
    assert ort.instance_group[0].count == 2 and ort.instance_group[0].kind == 1  # KIND_GPU
    # float graphs take NCHW, uint8 graphs NHWC frames (the sidecar says uint8 here)
    assert (ort.input[0].name, ort.input[0].data_type, list(ort.input[0].dims)) == ("images", 11, [3, 112, 112])
    assert (trt.input[0].data_type, list(trt.input[0].dims)) == (2, [112, 112, 3])  # TYPE_UINT8
    outputs = {o.name: o for o in ort.output}
    assert list(outputs) == ["score", "local_score", "semantic_score", "anomaly_map", "score_logit"]
    assert list(outputs["anomaly_map"].dims) == [1, 112, 112]
    assert list(outputs["score"].dims) == [1] and outputs["score"].HasField("reshape")
    assert list(outputs["score"].reshape.shape) == []
    meta = ArtifactMetadata.from_json(ort.parameters["dualkd_edge_metadata"].string_value)
    assert meta.to_dict() == read_metadata(dynamic_onnx).to_dict()
    assert float(ort.parameters["threshold"].string_value) == meta.threshold
    assert json.loads(ort.parameters["calibration"].string_value)["local"]["mu"] == meta.calibration.local.mu


@pytest.mark.servers
def test_repository_refusals_are_one_line(trained_run, dynamic_onnx, tmp_path):
    out = tmp_path / "repo"
    assert_one_line_error(run_cli("triton", trained_run, "--out", out), "MODEL", "export")
    assert_one_line_error(run_cli("triton", dynamic_onnx, "--out", out, "--backend", "tensorrt"), "--backend tensorrt")
    assert_one_line_error(run_cli("triton", dynamic_onnx, "--out", out, "--backend", "tf"), "--backend")
    assert_one_line_error(run_cli("triton", dynamic_onnx, "--out", out, "--name", "a/b"), "--name")
    engine = _engine_with_sidecar(tmp_path, dynamic_onnx, max_batch=4)
    assert_one_line_error(run_cli("triton", engine, "--out", out, "--max-batch", "8"), "--max-batch", "profile")
    # serving needs the [serve] extra in an environment with numpy < 2: a clear line either way here
    proc = run_cli("serve", tmp_path / "repo")
    assert_one_line_error(proc)
    assert not (out / "dualkd").exists()
