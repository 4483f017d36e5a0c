"""`dualkd-edge infer` on real streams served on 127.0.0.1, video files and folders."""

from __future__ import annotations

import json
import math
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from importlib.metadata import packages_distributions
from pathlib import Path

import cv2
import numpy as np
import pytest
from helpers import assert_one_line_error, run_cli

from support.stream_servers import MjpegServer, RtspServer, write_video

from dualkd_edge.stream.outputs.core_share import leaves_a_core, physical_cores


@pytest.fixture
def model(dynamic_onnx):
    """The shared dynamic-batch export (conftest)."""
    return dynamic_onnx


def _lines(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_video_file_every_frame_in_order(model, tmp_path):
    video = write_video(tmp_path / "parts.mp4", n=45)
    out = tmp_path / "out"
    proc = run_cli("infer", model, video, "--out", out, "--jsonl", out / "frames.jsonl", "--save-video",
                   "--save-images", "all", "--batch", "4")
    assert proc.returncode == 0, proc.stderr
    lines = _lines(out / "frames.jsonl")
    assert [r["frame"] for r in lines] == list(range(45))
    for r in lines:
        assert 0 <= r["score"] <= 1 and r["is_anomaly"] == (r["score"] >= r["threshold"])
        # -log(1 - score), checked where the 6-digit rounding of score leaves it well defined
        assert r["score_logit"] == pytest.approx(-math.log1p(-r["score"]), rel=1e-3, abs=1e-4) or r["score"] > 0.99
        assert set(r["latency_ms"]) == {"decode_ms", "resize_ms", "preprocess_ms", "inference_ms", "postprocess_ms", "output_ms",
                                           "e2e_ms"}
        # the decision's times: overlays and files are written off the inference thread, timed apart
        assert r["latency_ms"]["e2e_ms"] >= r["latency_ms"]["inference_ms"] > 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["frames"] == 45 and summary["dropped"] == 0 and summary["errors"] == []
    files = summary["file_outputs"]
    assert files["sinks"] == ["--save-images", "--save-video", "--jsonl"]  # pictures first, then the record
    assert files["ms_per_frame"]["p50"] > 0
    assert summary["latency_ms"]["e2e_ms"]["p50"] > 0
    # the overlay thread got a core of its own or not, as measured on the first frame (core_share.py)
    left = re.search(r"model: (\d+) CPU thread\(s\), one core left for the overlays \(([\d.]+) ms per frame "
                     r"beside the model's ([\d.]+) ms per image", proc.stderr)
    kept = re.search(r"model: every CPU core \(([\d.]+) ms per image; the overlays' ([\d.]+) ms", proc.stderr)
    if physical_cores() > 1:
        assert (left is None) != (kept is None), proc.stderr
        if left:
            assert int(left[1]) == physical_cores() - 1
            assert leaves_a_core(float(left[3]), float(left[2]), physical_cores())
        else:
            assert not leaves_a_core(float(kept[1]), float(kept[2]), physical_cores())
    cap = cv2.VideoCapture(str(out / "video" / "00_parts.mp4"))
    assert int(cap.get(cv2.CAP_PROP_FRAME_COUNT)) == 45
    ok, frame = cap.read()
    # overlay frames: the 128 px image enlarged 3x to stay legible, banner above, colour bar below
    assert ok and frame.shape[1] == 384 and frame.shape[0] > 384
    assert len(list((out / "images").glob("*.jpg"))) == 45
    assert not list((out / "video").glob(".*partial*"))


def test_saved_images_get_defect_masks_beside_them(model, tmp_path):
    from dualkd_edge.data.synth import render_part

    folder = tmp_path / "frames"
    folder.mkdir()
    for i, defect in enumerate([None, "scratch", None, "missing"]):
        cv2.imwrite(str(folder / f"{i}.png"), cv2.resize(render_part("washer", 500 + i, defect=defect)[0], (640, 480)))
    out = tmp_path / "out"
    proc = run_cli("infer", model, folder, "--out", out, "--save-images", "all", "--save-masks")
    assert proc.returncode == 0, proc.stderr
    overlays = sorted((out / "images").glob("*.jpg"))
    masks = sorted((out / "images").glob("*_mask.png"))
    assert len(overlays) == len(masks) == 4
    assert [m.name.replace("_mask.png", ".jpg") for m in masks] == [o.name for o in overlays]
    for m in masks:
        mask = cv2.imread(str(m), cv2.IMREAD_UNCHANGED)
        assert mask.shape == (480, 640) and mask.dtype == np.uint8 and set(np.unique(mask)) <= {0, 255}
    overlay = cv2.imread(str(overlays[0]))
    assert overlay.shape[1] == 640 and overlay.shape[0] > 480  # image size, plus banner and colour bar
    assert_one_line_error(run_cli("infer", model, folder, "--out", out, "--save-masks"), "--save-masks",
                          "--save-images")


def test_model_without_map_statistics_still_draws_but_refuses_masks(model, tmp_path):
    """Artifacts exported before the calibrated scale: per-image colours, one warning, no masks."""
    from dualkd_edge.artifacts.onnx_files import (
        load_onnx_model,
        onnx_metadata,
        save_onnx_atomic,
        set_onnx_metadata,
    )
    from dualkd_edge.data.synth import render_part

    proto = load_onnx_model(model, load_weights=True)
    meta = onnx_metadata(proto, model)
    meta.calibration.anomaly_map = None
    set_onnx_metadata(proto, meta)
    old = tmp_path / "old.onnx"
    save_onnx_atomic(proto, old)
    folder = tmp_path / "frames"
    folder.mkdir()
    for i in range(3):
        cv2.imwrite(str(folder / f"{i}.png"), render_part("bracket", 600 + i)[0])
    proc = run_cli("infer", old, folder, "--out", tmp_path / "out", "--save-images", "all")
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr.count("no anomaly-map statistics") == 1 and "stretched per image" in proc.stderr
    assert len(list((tmp_path / "out" / "images").glob("*.jpg"))) == 3
    assert_one_line_error(run_cli("infer", old, folder, "--out", tmp_path / "o2", "--save-images", "all",
                                  "--save-masks"), "--save-masks", "no anomaly-map statistics", "retrain")


def test_folder_with_corrupted_file_and_non_image(model, tmp_path):
    from dualkd_edge.data.synth import render_part

    folder = tmp_path / "imgs"
    folder.mkdir()
    for i in range(5):
        cv2.imwrite(str(folder / f"{i}.png"), render_part("washer", i)[0])
    (folder / "corrupt.png").write_bytes(b"\x89PNG\r\n\x1a\n broken")
    (folder / "readme.txt").write_text("not an image")
    proc = run_cli("infer", model, folder, "--jsonl", tmp_path / "f.jsonl")
    assert proc.returncode == 0, proc.stderr
    assert len(_lines(tmp_path / "f.jsonl")) == 5
    assert "corrupt.png" in proc.stderr and "readme.txt" in proc.stderr
    assert "skipped files 2" in proc.stdout


def test_glob_and_source_list_run_concurrently(model, tmp_path):
    from dualkd_edge.data.synth import render_part

    for i in range(3):
        cv2.imwrite(str(tmp_path / f"a{i}.png"), render_part("bracket", i)[0])
    video = write_video(tmp_path / "v.mp4", n=10)
    listing = tmp_path / "sources.txt"
    listing.write_text(f"# two streams\n{tmp_path / 'a*.png'}\n{video}\n")
    proc = run_cli("infer", model, listing, "--jsonl", tmp_path / "l.jsonl", "--batch", "2")
    assert proc.returncode == 0, proc.stderr
    lines = _lines(tmp_path / "l.jsonl")
    assert sorted({r["source_index"] for r in lines}) == [0, 1]
    assert sum(r["source_index"] == 0 for r in lines) == 3 and sum(r["source_index"] == 1 for r in lines) == 10


@pytest.mark.servers
def test_http_mjpeg_live_source_counts_drops(model, tmp_path):
    server = MjpegServer(fps=30, max_seconds=30).start()
    try:
        proc = run_cli("infer", model, server.url, "--jsonl", tmp_path / "h.jsonl", "--max-frames", "12",
                       "--fps-limit", "4", "--out", tmp_path / "o")
    finally:
        server.stop()
    assert proc.returncode == 0, proc.stderr
    assert len(_lines(tmp_path / "h.jsonl")) == 12
    summary = json.loads((tmp_path / "o" / "summary.json").read_text())
    # at 4 frames/s against a 30 FPS camera most frames are dropped, and counted
    assert summary["dropped"] > 30


@pytest.mark.servers
def test_reconnects_after_server_restart(model, tmp_path):
    from dualkd_edge import Detector
    from dualkd_edge.stream.capture.threads import RetryPolicy
    from dualkd_edge.stream.pipeline import StreamOptions, StreamRunner
    from dualkd_edge.stream.capture.sources import parse_source

    server = MjpegServer(fps=20, max_seconds=2.0).start()  # each connection ends after 2 s

    def restart():
        time.sleep(2.5)
        server.stop()
        time.sleep(1.0)
        server.start()

    import threading

    threading.Thread(target=restart, daemon=True).start()
    with Detector.load(model) as det:
        runner = StreamRunner(det, parse_source(server.url), StreamOptions(
            max_frames=70, retry=RetryPolicy(max_retries=8, first_delay=0.3, open_timeout_ms=2000, read_timeout_ms=2000)))
        summary = runner.run()
    server.stop()
    assert summary.frames == 70
    assert summary.sources[0].reconnects >= 1
    assert summary.errors == []


@pytest.mark.servers
@pytest.mark.skipif(shutil.which("ffmpeg") is None, reason="ffmpeg not installed (.ci/run installs it)")
def test_rtsp_stream_from_ffmpeg(model, tmp_path):
    server = RtspServer(write_video(tmp_path / "src.mp4", n=60), max_seconds=40, tmp=tmp_path).start()
    try:
        proc = run_cli("infer", model, server.url, "--jsonl", tmp_path / "r.jsonl", "--max-frames", "20",
                       "--out", tmp_path / "o", "--save-video")
    finally:
        server.stop()
    assert proc.returncode == 0, proc.stderr
    lines = _lines(tmp_path / "r.jsonl")
    assert len(lines) == 20 and all(r["source"] == server.url for r in lines)
    assert (tmp_path / "o" / "video").is_dir()


@pytest.mark.servers
def test_sigint_stops_cleanly_with_summary(model, tmp_path):
    server = MjpegServer(fps=15, max_seconds=60).start()
    out = tmp_path / "o"
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    proc = subprocess.Popen([sys.executable, "-m", "dualkd_edge.cli", "infer", str(model), server.url, "--out", str(out),
                             "--jsonl", str(out / "s.jsonl"), "--save-video"], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=env)
    try:
        t_end = time.monotonic() + 60
        while time.monotonic() < t_end:
            if (out / "s.jsonl").is_file() and len((out / "s.jsonl").read_text().splitlines()) >= 5:
                break
            time.sleep(0.2)
        proc.send_signal(signal.SIGINT)
        stdout, stderr = proc.communicate(timeout=30)
    finally:
        server.stop()
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, stderr
    assert "Traceback" not in stderr and "(interrupted)" in stdout
    summary = json.loads((out / "summary.json").read_text())
    assert summary["interrupted"] is True
    lines = _lines(out / "s.jsonl")  # every line complete JSON
    assert summary["frames"] == len(lines) >= 5
    videos = list((out / "video").glob("*.mp4"))
    assert len(videos) == 1 and not videos[0].name.startswith(".")
    cap = cv2.VideoCapture(str(videos[0]))
    assert int(cap.get(cv2.CAP_PROP_FRAME_COUNT)) == len(lines)


def test_sources_that_do_not_exist_are_clear_errors(model, tmp_path):
    assert_one_line_error(run_cli("infer", model, tmp_path / "missing.mp4"), "missing.mp4", "does not exist")
    from support.stream_servers import free_port

    url = f"rtsp://admin:secret@127.0.0.1:{free_port()}/cam"
    proc = run_cli("infer", model, url, "--retries", "1")
    assert_one_line_error(proc, "could not be opened", "***@127.0.0.1")
    assert "secret" not in proc.stderr + proc.stdout
    assert_one_line_error(run_cli("infer", model, tmp_path, "--batch", "0"), "--batch")
    assert_one_line_error(run_cli("infer", model, tmp_path, "--save-video"), "--out")
    if "opencv-python-headless" in packages_distributions().get("cv2", []):
        assert_one_line_error(run_cli("infer", model, write_video(tmp_path / "v.mp4", n=2), "--show"), "--show", "no GUI")
    notes = tmp_path / "notes.doc"
    notes.write_text("x")
    assert_one_line_error(run_cli("infer", model, notes), "neither an image")


def test_redaction():
    from dualkd_edge.stream.capture.sources import redact

    assert redact("rtsp://user:pw@10.0.0.5:554/s") == "rtsp://***@10.0.0.5:554/s"
    assert redact("http://cam.local/mjpg") == "http://cam.local/mjpg"


def test_the_overlay_thread_gets_a_core_only_when_it_costs_the_model_less():
    """The rule in core_share.py against what the 2-core VM measured (FPS with outputs / without)."""
    assert leaves_a_core(model_ms=10, outputs_ms=15, cores=2)  # tiny at 720p: 0.71x with a core left, 0.46x without
    assert not leaves_a_core(model_ms=65, outputs_ms=5, cores=2)  # edge-s224 INT8: 0.73x with, 0.89x without
    assert not leaves_a_core(model_ms=65, outputs_ms=15, cores=2)
    assert leaves_a_core(model_ms=65, outputs_ms=15, cores=8)  # a core is 1/7 of the model there, not 1/1
    assert not leaves_a_core(model_ms=1, outputs_ms=100, cores=1)  # nothing to leave


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="per-thread niceness is Linux's")
@pytest.mark.parametrize("yield_cpu", [True, False])
def test_file_outputs_run_in_order_below_the_inference_threads_priority(yield_cpu):
    """The file-output thread yields the CPU to a model that takes every core (file_worker.py), keeps
    its priority where a core was left for it, and writes every frame in order either way; the
    inference thread's priority is left as it was."""
    import threading

    from dualkd_edge.stream.outputs.file_worker import OUTPUT_THREAD_NICE, FileOutputWorker
    from dualkd_edge.stream.outputs.sinks import Sink

    class Recorder(Sink):
        off_thread = True

        def __init__(self) -> None:
            self.seen: list[tuple[int, int]] = []

        def write(self, result) -> None:
            self.seen.append((result, os.getpriority(os.PRIO_PROCESS, threading.get_native_id())))

    own = os.getpriority(os.PRIO_PROCESS, threading.get_native_id())
    sink = Recorder()
    worker = FileOutputWorker([sink], on_error=lambda s, e: None, failed=set(), capacity=2, yield_cpu=yield_cpu)
    worker.start()
    for k in range(20):  # more than the queue holds: submit waits instead of dropping
        worker.submit(k)
    worker.finish()
    assert [k for k, _ in sink.seen] == list(range(20))
    assert {nice for _, nice in sink.seen} == {max(own, OUTPUT_THREAD_NICE) if yield_cpu else own}
    assert os.getpriority(os.PRIO_PROCESS, threading.get_native_id()) == own


def test_the_file_outputs_yield_only_to_a_model_on_every_cpu_core(model):
    from dualkd_edge.detector import Detector
    from dualkd_edge.stream.outputs.core_share import model_takes_every_core

    expected = {None: True, physical_cores(): True,  # None: ONNX Runtime's default, a thread per core
                physical_cores() - 1: False}  # a core left for the outputs
    for threads, takes_every_core in expected.items():
        det = Detector.load(model, threads=threads)
        try:
            assert model_takes_every_core(det) == takes_every_core, threads
        finally:
            det.close()
