"""Faults around `infer` (issue 15): camera passwords never printed, inputs that yield less than
they should (a truncated video, unreadable images, a bad line in a source list), a frozen camera,
and outputs that fill up mid-stream (JSONL lines stay whole, the summary is still written)."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import pytest
from helpers import assert_one_line_error, fill_disk, parts, run_cli, run_main

from support.stream_servers import MjpegServer, free_port, write_video

SECRETS = ["s3cr@t", "pa/ss", "a:b:c", "p%40ss", "hunter2"]


@pytest.fixture
def model(dynamic_onnx):
    return dynamic_onnx


def _lines(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def _folder_of_parts(folder: Path, n: int) -> Path:
    folder.mkdir()
    for i, img in enumerate(parts(n)):
        cv2.imwrite(str(folder / f"{i:03d}.png"), img)
    return folder


def test_redact_hides_every_credential():
    from dualkd_edge.stream.capture.sources import redact, redact_url

    cases = {
        "rtsp://admin:s3cr@t@10.0.0.5:554/live": "rtsp://***@10.0.0.5:554/live",
        "rtsp://admin:pa/ss@10.0.0.5/live": "rtsp://***@10.0.0.5/live",
        "rtsp://us:er:a:b:c@cam:554/s": "rtsp://***@cam:554/s",
        "http://admin:p%40ss@cam/video.mjpg": "http://***@cam/video.mjpg",
        "rtspsrc location=rtsp://admin:s3cr@t@cam/live latency=0 ! decodebin ! appsink":
            "rtspsrc location=rtsp://***@cam/live latency=0 ! decodebin ! appsink",
        'rtspsrc location="rtsp://admin:pa/ss@cam/live" ! appsink': 'rtspsrc location="rtsp://***@cam/live" ! appsink',
        "rtspsrc location=rtsp://cam/live user-id=admin user-pw=hunter2 ! appsink":
            "rtspsrc location=rtsp://cam/live user-id=*** user-pw=*** ! appsink",
        "http://cam/video.cgi?usr=admin&pwd=hunter2&res=1": "http://cam/video.cgi?usr=***&pwd=***&res=1",
        "cam 1 rtsp://a:pa/ss@h1/x, cam 2 rtsp://b:hunter2@h2/y": "cam 1 rtsp://***@h1/x, cam 2 rtsp://***@h2/y",
        "http://cam.local/mjpg": "http://cam.local/mjpg",
    }
    for text, expected in cases.items():
        assert redact(text) == expected
    assert redact_url("rtsp://admin:hun ter2@cam/x") == "rtsp://***@cam/x"  # a space in a password


@pytest.mark.servers
def test_passwords_never_printed(model, tmp_path):
    """In errors, logs, JSONL and summary: a live stream whose URL carries credentials (served on
    127.0.0.1), a camera that cannot be reached, a GStreamer pipeline and a source list."""
    port = free_port()
    listing = tmp_path / "cameras.txt"
    listing.write_text(f"rtsp://admin:s3cr@t@127.0.0.1:{port}/a\n"
                       f"rtsp://admin:p%40ss@127.0.0.1:{port}/c user-pw=hunter2\n")
    proc = run_cli("infer", model, listing, "--retries", "0")
    assert_one_line_error(proc, "SOURCE", "could not be opened", "***@127.0.0.1")
    # A pipeline fails differently with and without PyGObject (no GStreamer / connection refused):
    # either way it fails without a traceback and without the password.
    pipeline = (f"rtspsrc location=rtsp://admin:a:b:c@127.0.0.1:{port}/b latency=0 user-pw=hunter2 ! decodebin ! "
                "videoconvert ! appsink")
    pipe = run_cli("infer", model, pipeline, "--retries", "0", timeout=120)
    assert pipe.returncode != 0 and "Traceback" not in pipe.stderr, pipe.stderr
    server = MjpegServer(fps=20, max_seconds=20).start()
    try:
        url = server.url.replace("http://", "http://admin:s3cr@t@")  # FFmpeg splits at the last '@'; a '/' must be %2F
        out = tmp_path / "o"
        live = run_cli("infer", model, url, "--max-frames", "3", "--out", out, "--jsonl", out / "f.jsonl")
    finally:
        server.stop()
    assert live.returncode == 0, live.stderr
    assert {r["source"] for r in _lines(out / "f.jsonl")} == {server.url.replace("http://", "http://***@")}
    printed = (proc.stdout + proc.stderr + pipe.stdout + pipe.stderr + live.stdout + live.stderr
               + (out / "summary.json").read_text())
    for secret in SECRETS:
        assert secret not in printed + (out / "f.jsonl").read_text()


# -- exit 0 only when the input gave what it should -------------------------------------------------------


def test_truncated_video_says_what_was_lost(model, tmp_path):
    video = write_video(tmp_path / "line.avi", n=60)
    data = video.read_bytes()
    video.write_bytes(data[:len(data) // 2])  # a copy that did not finish
    out = tmp_path / "o"
    proc = run_cli("infer", model, video, "--out", out)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    summary = json.loads((out / "summary.json").read_text())
    source = summary["sources"][0]
    assert source["expected_frames"] == 60 and 0 < source["frames"] < 45
    assert f"read {source['frames'] + source['corrupted']} of the 60 frames" in summary["errors"][0]
    assert "truncated" in proc.stdout and "Traceback" not in proc.stderr


def test_nothing_readable_is_not_a_success(capsys, model, tmp_path):
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "a.png").write_bytes(b"")
    (broken / "b.jpg").write_bytes(b"\xff\xd8 not a jpeg")
    proc = run_main(capsys, "infer", model, broken, "--out", tmp_path / "o1")
    assert proc.returncode == 1 and "holds no readable image (2 file(s) skipped)" in proc.stdout
    assert json.loads((tmp_path / "o1" / "summary.json").read_text())["frames"] == 0
    proc = run_main(capsys, "infer", model, broken / "a.png")
    assert proc.returncode == 1 and "a.png: is not a readable image" in proc.stdout


def test_one_bad_line_of_a_source_list_does_not_stop_the_others(capsys, model, tmp_path):
    good = _folder_of_parts(tmp_path / "good", 3)
    listing = tmp_path / "sources.txt"
    listing.write_text(f"# line cameras\n{good}\n{tmp_path / 'gone.mp4'}\n")
    proc = run_main(capsys, "infer", model, listing, "--jsonl", tmp_path / "f.jsonl")
    assert proc.returncode == 1  # a source failed ...
    assert len(_lines(tmp_path / "f.jsonl")) == 3  # ... and the others ran
    assert f"{listing}:3: {tmp_path / 'gone.mp4'} does not exist" in proc.stdout
    listing.write_text(f"{tmp_path / 'gone.mp4'}\n{tmp_path / 'lost.png'}\n")
    assert_one_line_error(run_main(capsys, "infer", model, listing), f"{listing}:1", f"{listing}:2")


def test_ground_truth_mask_that_cannot_be_read_is_left_out_not_taken_as_normal(capsys, model, small_dataset,
                                                                               tmp_path):
    import shutil

    data = tmp_path / "data"
    shutil.copytree(small_dataset, data)
    masks = sorted((data / "bracket" / "ground_truth").rglob("*_mask.png"))
    masks[0].write_bytes(b"")  # zero bytes: not "no defect"
    proc = run_main(capsys, "eval", model, data, "--json", tmp_path / "r.json")
    assert proc.returncode == 0, proc.stderr
    assert "pixel metrics leave out 1 image(s) without a readable ground-truth mask" in proc.stdout
    left_out = json.loads((tmp_path / "r.json").read_text())["models"][0]["pixel_skipped"]
    assert len(left_out) == 1 and masks[0].name in left_out[0]


# -- a frozen camera, runs appended to one JSONL, outputs that fill up mid-stream ---------------------------


@pytest.mark.servers
def test_frozen_stream_is_reopened_after_the_read_timeout(model, tmp_path):
    server = MjpegServer(fps=20, max_seconds=60, stall_after=4).start()  # connected, then silent
    try:
        proc = run_cli("infer", model, server.url, "--read-timeout", "1", "--retries", "3", "--max-frames", "9",
                       "--out", tmp_path / "o", timeout=120)
    finally:
        server.stop()
    assert proc.returncode == 0, proc.stderr
    assert "no frame within the 1.0 s read timeout" in proc.stderr
    summary = json.loads((tmp_path / "o" / "summary.json").read_text())
    assert summary["frames"] == 9 and summary["reconnects"] >= 2


def test_jsonl_on_a_full_disk_keeps_whole_lines_and_the_summary(model, tmpfs, tmp_path):
    disk = tmpfs(256)
    frames = disk / "frames.jsonl"
    frames.write_text('{"run_id": "earlier", "frame": 0}\n')  # a previous run's line
    fill_disk(disk, leave_kib=8)  # room for a dozen lines
    video = write_video(tmp_path / "v.mp4", n=60)
    out = tmp_path / "o"
    proc = run_cli("infer", model, video, "--jsonl", frames, "--out", out)
    assert_one_line_error(proc, "--jsonl", str(frames), "No space left on device", "stopped after")
    lines = _lines(frames)  # every line parses: no half-written last line
    summary = json.loads((out / "summary.json").read_text())
    assert lines[0] == {"run_id": "earlier", "frame": 0}
    new = lines[1:]
    assert 0 < len(new) < 60 and {r["run_id"] for r in new} == {summary["run_id"]} != {"earlier"}
    assert [r["frame"] for r in new] == list(range(len(new)))
    assert summary["output_errors"] and summary["frames"] < 60


def test_pictures_filling_the_disk_stop_the_run_cleanly(model, tmpfs, tmp_path):
    disk = tmpfs(320)
    video = write_video(tmp_path / "v.mp4", n=60)
    kept = tmp_path / "tmpdir"
    kept.mkdir()
    proc = run_cli("infer", model, video, "--out", disk / "run", "--save-images", "all", "--jsonl",
                   tmp_path / "f.jsonl", env={"TMPDIR": str(kept)})
    assert_one_line_error(proc, "--save-images", "No space left on device")
    # The summary fits in what the last image left free, or else is kept in the fallback folder.
    written = [disk / "run" / "summary.json", *kept.glob("dualkd-edge-kept-*/summary.json")]
    assert written[0].is_file() or str(written[-1]) in proc.stderr
    summary = json.loads([p for p in written if p.is_file()][0].read_text())
    assert 0 < summary["frames"] < 60 and summary["output_errors"]
    assert len(_lines(tmp_path / "f.jsonl")) == summary["frames"]  # every scored frame was recorded
    images = list((disk / "run" / "images").iterdir())
    assert images and all(cv2.imread(str(p)) is not None for p in images)  # no half image, no staging file


def test_a_video_the_disk_cannot_hold_is_not_left_broken(model, tmpfs, tmp_path):
    """OpenCV's video writer is silent on a full disk: the run still stops with an error, and no
    video that does not play (an mp4 without its index) is left under the final name."""
    disk = tmpfs(300)
    proc = run_cli("infer", model, write_video(tmp_path / "v.mp4", n=150), "--out", disk / "run", "--save-video")
    assert_one_line_error(proc, "--save-video", str(disk / "run" / "video" / "00_v.mp4"), "No space left on device")
    assert list((disk / "run" / "video").iterdir()) == []
    assert 0 < json.loads((disk / "run" / "summary.json").read_text())["frames"] < 150


def test_an_off_thread_sink_that_breaks_stops_the_run_instead_of_hanging_it(model, tmp_path):
    """A sink of the user's own, written by the file-output thread, raising something other than an
    OSError: the run stops after the frames in flight and says which output failed (before, the thread
    died and the pipeline waited for ever once its queue of 16 frames was full)."""
    import threading

    from dualkd_edge.detector import Detector
    from dualkd_edge.stream.capture.sources import parse_source
    from dualkd_edge.stream.outputs.sinks import Sink
    from dualkd_edge.stream.pipeline import StreamOptions, StreamRunner

    class BreaksOnFrame5(Sink):
        off_thread = True
        option = "my-sink"

        def write(self, result) -> None:
            if result.frame.index == 5:
                raise RuntimeError("the label printer jammed")

    video = write_video(tmp_path / "parts.mp4", n=60)
    det = Detector.load(model)
    runner = StreamRunner(det, parse_source(str(video)), StreamOptions(), sinks=[BreaksOnFrame5()])
    done: list = []
    worker = threading.Thread(target=lambda: done.append(runner.run()), daemon=True)
    worker.start()
    worker.join(timeout=120)
    assert not worker.is_alive(), "the run hung"
    summary = done[0]
    assert len(summary.output_errors) == 1 and "my-sink" in summary.output_errors[0]
    assert "RuntimeError: the label printer jammed" in summary.output_errors[0]
    assert summary.frames < 60  # it stopped after the frames in flight
