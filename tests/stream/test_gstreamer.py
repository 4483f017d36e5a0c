"""GStreamer capture through PyGObject: real pipelines (videotestsrc, files, RTSP from a server on
127.0.0.1) read through an appsink, with the live-source semantics of the OpenCV path."""

from __future__ import annotations

import json
import shutil
import threading
import time
from pathlib import Path

import cv2
import numpy as np
import pytest
from helpers import assert_one_line_error, run_cli, run_cli_without

from support.stream_servers import RtspServer, free_port, write_video


def _gstreamer_missing() -> str | None:
    try:
        import gi

        gi.require_version("Gst", "1.0")
        from gi.repository import Gst

        Gst.init(None)
    except (ImportError, ValueError) as exc:
        return f"GStreamer / PyGObject not installed ({exc}); .ci/run installs them"
    missing = [e for e in ("videotestsrc", "appsink", "rtspsrc", "avdec_h264", "h264parse")
               if Gst.ElementFactory.find(e) is None]
    return f"GStreamer elements missing: {missing}" if missing else None


pytestmark = pytest.mark.skipif(_gstreamer_missing() is not None, reason=str(_gstreamer_missing()))
needs_ffmpeg = pytest.mark.skipif(shutil.which("ffmpeg") is None, reason="ffmpeg not installed (.ci/run installs it)")


@pytest.fixture
def model(dynamic_onnx):
    return dynamic_onnx


def _lines(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


@pytest.mark.servers
def test_videotestsrc_pipeline_hands_over_every_frame_in_order(model, tmp_path):
    pipeline = "videotestsrc num-buffers=12 pattern=ball ! video/x-raw,width=160,height=120 ! videoconvert ! appsink"
    proc = run_cli("infer", model, pipeline, "--jsonl", tmp_path / "f.jsonl", "--out", tmp_path / "o")
    assert proc.returncode == 0, proc.stderr
    lines = _lines(tmp_path / "f.jsonl")
    assert [r["frame"] for r in lines] == list(range(12))  # not live: nothing dropped, EOS ends the run
    assert lines[0]["source"] == "gstreamer:videotestsrc num-buffers=12 pattern=ball"
    summary = json.loads((tmp_path / "o" / "summary.json").read_text())
    assert summary["frames"] == 12 and summary["dropped"] == 0 and summary["reconnects"] == 0


@pytest.mark.servers
def test_frames_are_the_pictures_gstreamer_decoded(tmp_path):
    """A video file through filesrc ! decodebin (videoconvert ! appsink appended): BGR frames of the
    file's size that match OpenCV's decoding of the same file."""
    from dualkd_edge.stream.capture.threads import RetryPolicy, open_capture, prepare_source
    from dualkd_edge.stream.capture.sources import parse_source

    video = write_video(tmp_path / "parts.mp4", n=5)
    spec = prepare_source(parse_source(f"filesrc location={video} ! decodebin")[0])
    assert spec.live is False and spec.reconnects is False
    cap = open_capture(spec, RetryPolicy())
    assert cap.get(cv2.CAP_PROP_FPS) == pytest.approx(30.0)
    ok = cap.grab()
    ok, frame = cap.retrieve()
    cap.release()
    reference = cv2.VideoCapture(str(video)).read()[1]
    assert ok and frame.dtype == np.uint8 and frame.shape == reference.shape
    assert np.abs(frame.astype(int) - reference.astype(int)).mean() < 3  # two H.264 decoders, one picture


@pytest.mark.servers
def test_live_pipeline_keeps_the_newest_frame_and_reopens_after_eos(model):
    """A live source (is-live=true) faster than the model: frames are dropped and counted; its EOS is
    a lost stream, reopened with backoff (a file's EOS ends the run, see above)."""
    from dualkd_edge import Detector
    from dualkd_edge.stream.capture.threads import RetryPolicy
    from dualkd_edge.stream.pipeline import StreamOptions, StreamRunner
    from dualkd_edge.stream.capture.sources import parse_source

    pipeline = ("videotestsrc is-live=true num-buffers=40 ! video/x-raw,width=128,height=96,framerate=60/1 "
                "! videoconvert ! appsink")
    with Detector.load(model) as det:
        runner = StreamRunner(det, parse_source(pipeline), StreamOptions(
            max_frames=30, fps_limit=15, retry=RetryPolicy(max_retries=3, first_delay=0.1)))
        assert runner.specs[0].live is True
        summary = runner.run()
    assert summary.frames == 30 and summary.errors == []
    assert summary.sources[0].dropped > 20  # 60 FPS offered, 15 scored
    assert summary.sources[0].reconnects >= 1


@pytest.mark.servers
@needs_ffmpeg
def test_rtsp_pipeline_and_decoder_option_read_a_real_stream(model, tmp_path):
    server = RtspServer(write_video(tmp_path / "src.mp4", n=60), max_seconds=60, tmp=tmp_path).start()
    pipeline = f"rtspsrc location={server.url} latency=0 ! rtph264depay ! avdec_h264 ! videoconvert ! appsink"
    try:
        proc = run_cli("infer", model, pipeline, "--jsonl", tmp_path / "p.jsonl", "--max-frames", "20")
        proc2 = run_cli("infer", model, server.url, "--decoder", "gstreamer", "--jsonl", tmp_path / "d.jsonl",
                        "--max-frames", "10")
    finally:
        server.stop()
    assert proc.returncode == 0, proc.stderr
    lines = _lines(tmp_path / "p.jsonl")
    assert len(lines) == 20 and lines[0]["source"] == f"gstreamer:rtspsrc location={server.url} latency=0"
    assert proc2.returncode == 0, proc2.stderr
    assert "decoding with GStreamer" in proc2.stderr and "avdec_h264" in proc2.stderr  # no nvv4l2decoder here
    assert len(_lines(tmp_path / "d.jsonl")) == 10 and _lines(tmp_path / "d.jsonl")[0]["source"] == server.url


@pytest.mark.servers
@needs_ffmpeg
def test_rtsp_pipeline_reconnects_after_the_server_restarts(model, tmp_path):
    from dualkd_edge import Detector
    from dualkd_edge.stream.capture.threads import RetryPolicy
    from dualkd_edge.stream.pipeline import StreamOptions, StreamRunner
    from dualkd_edge.stream.capture.sources import parse_source

    server = RtspServer(write_video(tmp_path / "src.mp4", n=60), max_seconds=60, tmp=tmp_path).start()
    pipeline = f"rtspsrc location={server.url} latency=0 ! rtph264depay ! avdec_h264 ! videoconvert ! appsink"

    def restart() -> None:
        time.sleep(2.0)
        server.stop()
        time.sleep(1.0)
        server.start()

    threading.Thread(target=restart, daemon=True).start()
    try:
        with Detector.load(model) as det:
            summary = StreamRunner(det, parse_source(pipeline), StreamOptions(max_frames=90, retry=RetryPolicy(
                max_retries=8, first_delay=0.3, open_timeout_ms=3000, read_timeout_ms=1500))).run()
    finally:
        server.stop()
    assert summary.frames == 90 and summary.errors == []
    assert summary.sources[0].reconnects >= 1


@pytest.mark.servers
def test_pipeline_mistakes_are_one_line_errors(model, tmp_path):
    assert_one_line_error(run_cli("infer", model, "videotestsrc ! nvv4l2decoder ! appsink"),
                          "no element nvv4l2decoder: this is not a Jetson; use avdec_h264")
    assert_one_line_error(run_cli("infer", model, "videotestsrc ! autovideosink"), "must end in one appsink",
                          "autovideosink")
    assert_one_line_error(run_cli("infer", model, "videotestsrc ! ! appsink"), "SOURCE", "syntax error")
    assert_one_line_error(run_cli("infer", model, "videotestsrc num-buffers=3 ! video/x-raw,format=I420 ! appsink"),
                          "put videoconvert before appsink")
    assert_one_line_error(run_cli("infer", model, f"filesrc location={tmp_path / 'missing.mp4'} ! decodebin"),
                          "missing.mp4", "not found")
    url = f"rtsp://admin:secret@127.0.0.1:{free_port()}/cam"
    proc = run_cli("infer", model, f"rtspsrc location={url} ! rtph264depay ! avdec_h264 ! videoconvert ! appsink",
                   "--retries", "1")
    assert_one_line_error(proc, "could not be opened", "***@127.0.0.1")
    assert "secret" not in proc.stdout + proc.stderr
    assert_one_line_error(run_cli("infer", model, url, "--decoder", "ffmpeg"), "--decoder")


@pytest.mark.servers
def test_without_pygobject_a_pipeline_says_what_to_install(model):
    proc = run_cli_without(("gi",), "infer", model, "videotestsrc num-buffers=3 ! videoconvert ! appsink")
    assert_one_line_error(proc, "PyGObject", "dualkd-edge[gstreamer]")
