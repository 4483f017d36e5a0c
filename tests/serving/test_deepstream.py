"""`dualkd-edge deepstream`: DeepStream cannot run here (no Jetson, no GPU), so the written files are
checked: the configs parse as the INI key files DeepStream reads and agree with the model's
metadata, the rewritten pixel-input graph scores as the original export does, and the probe's
decision logic agrees with our runtime."""

from __future__ import annotations

import importlib.util
import json

import numpy as np
import pytest
from helpers import assert_one_line_error, parts, run_cli


@pytest.fixture(scope="module")
def written(dynamic_onnx, tmp_path_factory):
    out = tmp_path_factory.mktemp("ds")
    proc = run_cli("deepstream", dynamic_onnx, "--out", out, "--sources", "4")
    assert proc.returncode == 0, proc.stderr
    return out


def test_configs_parse_and_agree_with_the_model(written, dynamic_onnx):
    from dualkd_edge.artifacts import read_metadata
    from support.config_files import read_ini

    meta = read_metadata(dynamic_onnx)
    infer = read_ini(written / "config_infer_dualkd.txt")["property"]
    assert (infer["network-type"], infer["output-tensor-meta"], infer["batch-size"]) == ("100", "1", "4")
    assert infer["infer-dims"] == f"3;{meta.input.height};{meta.input.width}"
    assert infer["output-blob-names"].split(";") == list(meta.export["outputs"])
    assert infer["network-mode"] == "2" and (written / infer["onnx-file"]).is_file()
    assert infer["model-engine-file"].endswith("_b4_gpu0_fp16.engine")
    # nvinfer's y = net-scale-factor * (x - offset) must be what the graph's metadata expects
    ds = read_metadata(written / infer["onnx-file"])
    scale = float(infer["net-scale-factor"])
    offsets = [float(v) for v in infer["offsets"].split(";")]
    for c in range(3):
        assert scale * (200.0 - offsets[c]) == pytest.approx((200.0 / 255 - ds.input.mean[c]) / ds.input.std[c])
    assert infer["model-color-format"] == "0" and ds.input.color == "RGB"
    app = read_ini(written / "deepstream_app_config.txt")
    assert [s for s in app.sections() if s.startswith("source")] == [f"source{i}" for i in range(4)]
    assert all(app[f"source{i}"]["type"] == "4" and app[f"source{i}"]["uri"].startswith("rtsp://") for i in range(4))
    assert app["streammux"]["batch-size"] == "4" and app["streammux"]["live-source"] == "1"
    assert app["primary-gie"]["config-file"] == "config_infer_dualkd.txt"
    probe_meta = json.loads((written / "dualkd_meta.json").read_text())
    assert probe_meta["threshold"] == meta.threshold and probe_meta["sources"] == 4
    assert probe_meta["calibration"]["semantic"]["sigma"] == meta.calibration.semantic.sigma


def test_pixel_graph_scores_as_the_export_and_the_probe_decides_as_we_do(written, dynamic_onnx):
    from dualkd_edge import Detector

    spec = importlib.util.spec_from_file_location("dualkd_probe", written / "dualkd_probe.py")
    probe = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(probe)  # without DeepStream: gi and pyds are only imported to run it
    meta = json.loads((written / "dualkd_meta.json").read_text())
    images = parts(4)
    with Detector.load(dynamic_onnx) as ours, Detector.load(written / "model.deepstream.onnx") as ds:
        expected, expected_raw = ours.predict(images), ours.infer_raw(images)
        raw = ds.infer_raw(images)  # the graph fed RGB pixels 0..255, as nvinfer feeds it
    np.testing.assert_allclose(raw["anomaly_map"], expected_raw["anomaly_map"], atol=1e-5)
    for i, pred in enumerate(expected):
        decided = probe.decide({k: v[i] for k, v in raw.items()}, meta)
        assert decided["score"] == pytest.approx(pred.score, abs=1e-5)
        assert decided["score_logit"] == pytest.approx(pred.score_logit, abs=1e-4)
        assert decided["is_anomaly"] == pred.is_anomaly
        noisy_or = 1 - (1 - decided["p_local"]) * (1 - decided["p_semantic"])
        assert noisy_or == pytest.approx(pred.score, abs=1e-5)  # the calibration, applied by the probe
        without_logit = probe.decide({k: v[i] for k, v in raw.items() if k != "score_logit"}, meta)
        assert without_logit["score_logit"] == pytest.approx(pred.score_logit, rel=1e-4, abs=1e-4)


def test_deepstream_refusals(trained_run, dynamic_onnx, tmp_path):
    assert_one_line_error(run_cli("deepstream", trained_run, "--out", tmp_path / "d"), "MODEL", "ONNX")
    assert_one_line_error(run_cli("deepstream", dynamic_onnx, "--out", tmp_path / "d", "--precision", "int8"),
                          "--precision int8", "Q/DQ")
    assert_one_line_error(run_cli("deepstream", dynamic_onnx, "--out", tmp_path / "d", "--sources", "0"), "--sources")
