"""Decisions that hold on a line: the false-alarm budget, `calibrate` on real captures (H.264 videos,
an RTSP stream on 127.0.0.1), the drift watch, hot swap under a running `infer`, provenance and
`info`. Real ONNX Runtime sessions of a briefly trained tiny model (random teacher), real ffmpeg
encodes, no stand-ins for our own parts."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import numpy as np
import pytest

from helpers import assert_one_line_error, needs_torch, run_cli, scrape

needs_ffmpeg = pytest.mark.skipif(shutil.which("ffmpeg") is None, reason="needs ffmpeg (libx264) to film the videos")


# -- the budget: order statistics, checked against scipy's Beta quantiles --------------------------------


def test_rate_upper_bound_is_the_clopper_pearson_bound():
    beta = pytest.importorskip("scipy.stats").beta
    from dualkd_edge.decision.budget import normal_images_needed, rate_upper_bound

    for k, n in ((0, 300), (0, 50), (5, 1000), (30, 2000)):
        assert rate_upper_bound(k, n, 0.95) == pytest.approx(beta.ppf(0.95, k + 1, n - k), rel=1e-6)
    assert normal_images_needed(0.01) == 299  # the "about 300 frames for 1%" rule


def test_budget_threshold_keeps_its_promise_on_fresh_normal_parts():
    from dualkd_edge.decision.budget import budget_threshold

    rng = np.random.default_rng(0)
    t = budget_threshold(rng.gamma(2.0, 1.0, 2000), max_fpr=0.01)
    assert t.resolved and t.promised_fpr <= 0.01 and t.flagged_normal > 0
    fresh = rng.gamma(2.0, 1.0, 200_000)
    assert (fresh >= t.threshold_logit).mean() <= 0.01
    assert "per 1000 good parts" in t.describe() and "too few" not in t.describe()


def test_too_few_normal_images_warn_and_take_the_most_conservative_threshold():
    from dualkd_edge.decision.budget import budget_threshold

    scores = np.random.default_rng(1).normal(size=60)
    t = budget_threshold(scores, max_fpr=0.01)
    assert not t.resolved and t.threshold_logit > scores.max() and t.flagged_normal == 0
    text = t.describe()
    assert "too few to promise" in text and "about 299 needed" in text
    assert t.promised_fpr == pytest.approx(1 - 0.05 ** (1 / 60), rel=1e-6)  # what it can promise


# -- the drift watch: a bad batch of parts is not drift; a dimmed lamp is ----------------------------------


def _line_logits(rng, n, defect_share, shift=0.0):
    """Normal parts from the calibration's distribution (+ shift), defective parts far above it."""
    normal = rng.gamma(2.0, 0.5, n) + shift
    defective = rng.random(n) < defect_share
    return np.where(defective, normal + rng.uniform(3, 10, n), normal)


def test_drift_does_not_fire_on_a_line_with_one_part_in_five_defective():
    from dualkd_edge.decision.drift import DriftMonitor, score_quantiles

    rng = np.random.default_rng(2)
    monitor = DriftMonitor("cam", "station", score_quantiles(rng.gamma(2.0, 0.5, 300)))
    events = [monitor.update(i, v, (0.0, 0.0)) for i, v in enumerate(_line_logits(rng, 100_000, 0.2))]
    assert not any(events) and not monitor.state.alarm


def test_drift_fires_on_a_dimmed_lamp_and_clears_when_it_recovers():
    from dualkd_edge.decision.drift import DriftMonitor, score_quantiles

    rng = np.random.default_rng(3)
    monitor = DriftMonitor("cam", "station", score_quantiles(rng.gamma(2.0, 0.5, 300)))
    stream = np.concatenate([_line_logits(rng, 500, 0.2), _line_logits(rng, 1000, 0.2, shift=3.0),
                             _line_logits(rng, 1000, 0.2)])
    for i, v in enumerate(stream):
        monitor.update(i, v, (4.0 if 500 <= i < 1500 else 0.0, 0.1))
    state = monitor.state
    assert state.alarm and state.direction == "up" and 500 <= state.first_frame < 800
    assert not state.active and 1500 <= state.cleared_frame < 1900
    assert [e["event"] for e in state.events] == ["alarm", "cleared"]
    assert state.message.startswith("drift on cam cleared")


# -- on real captures ----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def station(separating_run, tmp_path_factory):
    """An ONNX model trained on stills, and H.264 videos of the same kinds of parts: commissioning
    (good parts), the line (about 1 in 5 defective, labelled) and the line with the lamp dimmed."""
    if shutil.which("ffmpeg") is None:
        pytest.skip("needs ffmpeg (libx264) to film the videos")
    pytest.importorskip("torch", reason="needs PyTorch to export the model")
    from dualkd_edge.data.synth import camera_frames, write_h264
    from dualkd_edge.trace.onnx_export import ExportOptions, export_onnx

    run, _data = separating_run
    root = tmp_path_factory.mktemp("station")
    model = export_onnx(run, root / "m.onnx", ExportOptions()).path
    write_h264(root / "commission.mp4", [f for f, _ in camera_frames(150, 11)])
    line = camera_frames(300, 12, defect_every=5)
    write_h264(root / "line.mp4", [f for f, _ in line])
    write_h264(root / "shifted.mp4", [f for f, _ in camera_frames(300, 12, defect_every=5, lamp=0.6, blur=1.0)])
    return {"root": root, "model": model, "run": run, "labels": [d for _, d in line]}


@pytest.fixture
def calibrated(station, tmp_path):
    """A copy of the station's model, commissioned on its video (the CLI, as a user runs it)."""
    model = tmp_path / "m.onnx"
    shutil.copyfile(station["model"], model)
    before = json.loads(run_cli("info", model, "--json").stdout)
    proc = run_cli("calibrate", model, station["root"] / "commission.mp4", "--frames", "150", "--max-fpr", "0.01")
    assert proc.returncode == 0, proc.stderr
    return model, before, proc


def _records(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


@needs_torch
@needs_ffmpeg
def test_calibrate_stores_a_named_calibration_and_info_shows_it(calibrated):
    model, before, proc = calibrated
    assert "calibration 'commission' stored" in proc.stdout and "set aside as probably not good parts" in proc.stdout
    # 150 frames cannot resolve a 1% budget: said, with what they can promise
    assert "too few to promise a 0.01 false-alarm rate" in proc.stdout and "per 1000 good parts" in proc.stdout
    info = json.loads(run_cli("info", model, "--json").stdout)
    assert [c["name"] for c in info["calibrations"]] == ["training", "commission"]
    station = info["calibrations"][1]
    assert station["default"] and station["frames"] + station["outliers"] == 150 and station["max_fpr"] == 0.01
    assert info["model_id"] == before["model_id"]  # recalibrating keeps what the model computes
    [entry] = info["history"]
    assert entry["command"] == "calibrate" and entry["calibration"] == "commission"
    assert entry["data"] == {"source": str(station["source"]), "frames": station["frames"]}
    assert entry["threshold"]["from"] == before["calibrations"][0]["threshold"]
    assert entry["threshold"]["to"] == station["threshold"] and entry["tool_version"]
    text = run_cli("info", model).stdout
    assert "* commission" in text and "calibrate  [commission]" in text and info["model_id"] in text


@needs_torch
@needs_ffmpeg
def test_the_line_decides_with_the_camera_calibration_and_records_it(calibrated, station, tmp_path):
    model, _, _ = calibrated
    info = json.loads(run_cli("info", model, "--json").stdout)
    jsonl = tmp_path / "line.jsonl"
    proc = run_cli("infer", model, station["root"] / "line.mp4", "--jsonl", jsonl, "--out", tmp_path / "run")
    assert proc.returncode == 0, proc.stderr
    records = _records(jsonl)
    assert [r["frame"] for r in records] == list(range(300))
    threshold = info["calibrations"][1]["threshold"]
    assert {(r["model_id"], r["calibration"], r["threshold"]) for r in records} == {(info["model_id"], "commission", threshold)}
    good = [r["is_anomaly"] for r, d in zip(records, station["labels"]) if d is None]
    bad = [r["is_anomaly"] for r, d in zip(records, station["labels"]) if d is not None]
    assert np.mean(good) <= 0.05 and np.mean(bad) >= 0.15, (np.mean(good), np.mean(bad))
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["drift"]["alarm"] is False and summary["drift"]["first_frame"] is None
    assert summary["drift"]["watching"] and summary["frames"] == 300 and "fps" in summary and "dropped" in summary
    assert "drift" not in proc.stderr.lower()


@needs_torch
@needs_ffmpeg
def test_a_dimmed_lamp_raises_the_drift_alarm_everywhere(calibrated, station, tmp_path):
    from support.stream_servers import free_port

    model, _, _ = calibrated
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "dualkd_edge.cli", "infer", str(model), str(station["root"] / "shifted.mp4"),
                             "--out", str(tmp_path / "shifted"), "--http", f"127.0.0.1:{port}", "--fps-limit", "60"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    seen = {}
    t_end = time.monotonic() + 60
    while proc.poll() is None and time.monotonic() < t_end and not seen.get("metrics"):
        try:
            metrics = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2).read().decode()
            page = json.loads(urllib.request.urlopen(f"http://127.0.0.1:{port}/api/summary", timeout=2).read())
        except OSError:
            time.sleep(0.2)
            continue
        if any(name == "dualkd_drift_alarm" and dict(labels)["source"].endswith("shifted.mp4") and value == 1
               for (name, labels), value in scrape(metrics).items()):
            seen["metrics"], seen["page"] = metrics, page
        time.sleep(0.2)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err
    assert seen, "the drift gauge never showed 1 on /metrics"
    assert seen["page"]["drift"]["alarm"] and "shifted.mp4: normal parts" in seen["page"]["drift"]["messages"][0]
    warnings = [line for line in err.splitlines() if "drift" in line and line.startswith("WARNING")]
    assert len(warnings) == 1 and "shifted.mp4" in warnings[0] and "higher" in warnings[0]
    summary = json.loads((tmp_path / "shifted" / "summary.json").read_text())
    assert summary["drift"]["alarm"] is True and summary["drift"]["first_frame"] <= 300
    assert summary["sources"][0]["drift"]["alarm"] is True and "DRIFT" in out


@pytest.mark.servers
@needs_torch
@needs_ffmpeg
def test_calibrate_on_a_live_rtsp_stream(station, tmp_path):
    from support.stream_servers import RtspServer

    model = tmp_path / "m.onnx"
    shutil.copyfile(station["model"], model)
    server = RtspServer(station["root"] / "commission.mp4", max_seconds=60, tmp=tmp_path).start()
    try:
        proc = run_cli("calibrate", model, server.url, "--frames", "40", "--name", "cam1", "--max-fpr", "0.05")
    finally:
        server.stop()
    assert proc.returncode == 0, proc.stderr
    info = json.loads(run_cli("info", model, "--json").stdout)
    cam = info["calibrations"][-1]
    assert cam["name"] == "cam1" and cam["frames"] + cam["outliers"] == 40 and cam["source"] == server.url


@needs_torch
@needs_ffmpeg
def test_each_source_of_a_list_decides_with_its_own_calibration(calibrated, station, tmp_path):
    model, _, _ = calibrated
    video = station["root"] / "line.mp4"
    sources = tmp_path / "cams.txt"
    sources.write_text(f"calibration=commission {video}\ncalibration=training {video}\n")
    jsonl = tmp_path / "d.jsonl"
    proc = run_cli("infer", model, sources, "--jsonl", jsonl, "--max-frames", "40", "--out", tmp_path / "o")
    assert proc.returncode == 0, proc.stderr
    by_source = {r["source_index"]: r["calibration"] for r in _records(jsonl)}
    assert by_source == {0: "commission", 1: "training"}
    summary = json.loads((tmp_path / "o" / "summary.json").read_text())
    assert len(summary["sources"]) == 2 and all("drift" in s for s in summary["sources"])
    assert set(summary["drift"]) >= {"alarm", "first_frame"}


@needs_torch
@needs_ffmpeg
def test_bad_calibration_requests_are_one_line_errors(calibrated, station, tmp_path):
    model, _, _ = calibrated
    video = station["root"] / "line.mp4"
    assert_one_line_error(run_cli("infer", model, video, "--calibration", "nope"), "--calibration", "nope", "commission")
    assert_one_line_error(run_cli("calibrate", model, video, "--frames", "5"), "--frames")
    assert_one_line_error(run_cli("calibrate", model, video, "--name", "training"), "--name", "training")
    assert_one_line_error(run_cli("calibrate", model, video, "--max-fpr", "1.5"), "--max-fpr")
    listing = tmp_path / "two.txt"
    listing.write_text(f"{video}\n{video}\n")
    assert_one_line_error(run_cli("calibrate", model, listing), "SOURCE", "one camera")
    assert_one_line_error(run_cli("info", tmp_path / "missing.onnx"), "MODEL", "missing.onnx")


# -- hot swap under a running infer -------------------------------------------------------------------


def _wait_for(condition, timeout: float = 60.0, what: str = "") -> None:
    t_end = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > t_end:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.1)


@needs_torch
@needs_ffmpeg
def test_a_running_infer_takes_a_new_calibration_and_refuses_a_corrupt_model(station, tmp_path):
    from dualkd_edge.trace.onnx_export import ExportOptions, export_onnx

    model = tmp_path / "m.onnx"
    shutil.copyfile(station["model"], model)
    video = tmp_path / "long.mp4"  # 900 frames at 50 FPS: 18 s
    from dualkd_edge.data.synth import camera_frames, write_h264

    write_h264(video, [f for f, _ in camera_frames(900, 21, defect_every=5)])
    jsonl = tmp_path / "long.jsonl"
    proc = subprocess.Popen([sys.executable, "-m", "dualkd_edge.cli", "infer", str(model), str(video), "--jsonl", str(jsonl),
                             "--fps-limit", "50", "--out", str(tmp_path / "o")],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        _wait_for(lambda: jsonl.exists() and len(_records(jsonl)) > 20, what="the first decisions")
        first = _records(jsonl)[0]
        assert first["calibration"] == "training"
        calibrate = run_cli("calibrate", model, station["root"] / "commission.mp4", "--frames", "60", "--name", "swapped",
                            "--max-fpr", "0.2")
        assert calibrate.returncode == 0, calibrate.stderr
        t_calibrated = time.monotonic()
        _wait_for(lambda: _records(jsonl)[-1]["calibration"] == "swapped", what="the new calibration in the JSONL")
        assert time.monotonic() - t_calibrated < 5.0  # "within a couple of seconds" (poll: 0.5 s, load, warm-up)
        # a corrupt file renamed over the model, then one with another input contract: both refused
        corrupt = tmp_path / "corrupt.onnx"
        corrupt.write_bytes(b"\x08\x07not an onnx file" * 100)
        os.replace(corrupt, model)
        other = export_onnx(station["run"], tmp_path / "uint8.onnx", ExportOptions(input_dtype="uint8")).path
        time.sleep(1.5)
        os.replace(other, model)
        time.sleep(1.5)
        proc.send_signal(signal.SIGHUP)  # reload on request: the same refusal, the run goes on
        out, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, err
    records = _records(jsonl)
    assert [r["frame"] for r in records] == list(range(900))  # nothing dropped or reordered
    names = [r["calibration"] for r in records]
    switch = names.index("swapped")
    assert set(names[:switch]) == {"training"} and set(names[switch:]) == {"swapped"}
    assert records[switch]["threshold"] != records[0]["threshold"]
    refusals = [line for line in err.splitlines() if "replacement refused" in line]
    assert len(refusals) >= 2 and "not a readable ONNX file" in refusals[0] and "input contract" in err
    summary = json.loads((tmp_path / "o" / "summary.json").read_text())
    assert summary["frames"] == 900 and len(summary["swaps"]) == 1 and len(summary["refused_swaps"]) >= 2
    assert summary["swaps"][0]["calibration"] == {"from": "training", "to": "swapped"}
