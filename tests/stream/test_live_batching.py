"""`infer SOURCES.txt --batch N`: the newest frame of up to N live sources in one inference call,
each result back to its own source; a stalled camera never holds the batch. Real streams on
127.0.0.1 (MJPEG over HTTP, as IP cameras serve it)."""

from __future__ import annotations

import json

import pytest

from helpers import run_cli

from support.stream_servers import MjpegServer, write_video


@pytest.mark.servers
def test_live_sources_are_batched_and_a_stalled_camera_does_not_hold_them(dynamic_onnx, tmp_path):
    healthy = [MjpegServer(fps=20, max_seconds=60).start() for _ in range(3)]
    stalled = MjpegServer(fps=20, max_seconds=60, stall_after=3).start()  # 3 frames, then silence
    servers = [healthy[0], stalled, healthy[1], healthy[2]]
    listing = tmp_path / "cameras.txt"
    listing.write_text("".join(f"{s.url}\n" for s in servers))
    try:
        proc = run_cli("infer", dynamic_onnx, listing, "--batch", "4", "--max-frames", "60", "--jsonl",
                       tmp_path / "f.jsonl", "--out", tmp_path / "out")
    finally:
        for s in servers:
            s.stop()
    assert proc.returncode == 0, proc.stderr
    records = [json.loads(line) for line in (tmp_path / "f.jsonl").read_text().splitlines()]
    assert len(records) == 60
    by_source: dict[int, list[dict]] = {}
    for r in records:
        by_source.setdefault(r["source_index"], []).append(r)
    for index, rows in by_source.items():  # each result went back to its own source, in order
        assert all(r["source"] == servers[index].url for r in rows)
        frames = [r["frame"] for r in rows]
        assert frames == sorted(set(frames)), (index, frames)
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    # the stalled camera sends 3 frames per connection (OpenCV reconnects after its 5 s read time-out)
    connections = 1 + summary["sources"][1]["reconnects"]
    assert len(by_source.get(1, [])) <= 3 * connections
    assert all(len(by_source[i]) >= 10 for i in (0, 2, 3))
    sizes = {int(k): v for k, v in summary["batches"]["sizes"].items()}
    assert sum(k * v for k, v in sizes.items()) >= 60
    # the three live cameras went through the model together (several sources in one call)
    assert sizes.get(3, 0) + sizes.get(4, 0) >= 5, sizes
    # the stream went on without the stalled camera once it fell silent (its first connection's last
    # frame; how long the run lasts after that depends on the machine's speed, so no wall-clock margin)
    silent_from = max((r["timestamp"] for r in by_source.get(1, [])[:3]), default=0.0)
    assert sum(r["timestamp"] > silent_from for r in records if r["source_index"] != 1) >= 20
    assert "inference calls:" in proc.stdout


def test_file_sources_fill_batches_in_order(dynamic_onnx, tmp_path):
    from dualkd_edge import Detector
    from dualkd_edge.stream.pipeline import StreamOptions, StreamRunner
    from dualkd_edge.stream.outputs.sinks import JsonlSink
    from dualkd_edge.stream.capture.sources import parse_source

    video = write_video(tmp_path / "v.mp4", n=16)
    with Detector.load(dynamic_onnx) as det:
        summary = StreamRunner(det, parse_source(str(video)), StreamOptions(batch=4),
                               sinks=[JsonlSink(tmp_path / "v.jsonl")]).run()
    frames = [json.loads(line)["frame"] for line in (tmp_path / "v.jsonl").read_text().splitlines()]
    assert frames == list(range(16))
    assert summary.frames == 16 and sum(k * v for k, v in summary.batch_sizes.items()) == 16
    assert summary.batch_sizes.get(4, 0) >= 2  # one video alone fills batches of 4 frames
