"""Decisions out to the line against real receivers on 127.0.0.1: a Mosquitto broker, a pymodbus
PLC server, an HTTP webhook receiver. Each is stopped and started again during a stream; the tests
count what arrived and check that the summary says what was delivered and what was not."""

from __future__ import annotations

import base64
import json
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from helpers import assert_one_line_error, needs_broker, needs_paho, run_cli, run_cli_without

from support.line_servers import ModbusServer, MosquittoBroker, WebhookReceiver
from support.stream_servers import MjpegServer, free_port, write_video

needs_mosquitto = needs_broker
RECORD_KEYS = {"source", "source_index", "frame", "timestamp", "score", "score_logit", "local_score",
               "semantic_score", "is_anomaly", "threshold", "latency_ms"}


@pytest.fixture
def model(dynamic_onnx):
    return dynamic_onnx


class Subscriber:
    """A paho client subscribed with QoS 1. With a `client_id` its session is persistent: the broker
    keeps its messages while it reconnects, also across a clean broker restart."""

    def __init__(self, port: int, topic: str = "line/#", user: tuple[str, str] | None = None,
                 client_id: str | None = None) -> None:
        import paho.mqtt.client as mqtt

        self.messages: list[tuple[str, bytes, bool]] = []
        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=client_id or "",
                                  clean_session=client_id is None)
        if user:
            self.client.username_pw_set(*user)
        self.client.reconnect_delay_set(0.2, 1)
        self.subscribed = threading.Event()
        self.client.on_connect = lambda c, *a: c.subscribe(topic, qos=1)
        self.client.on_subscribe = lambda *a: self.subscribed.set()
        self.client.on_message = lambda c, u, m: self.messages.append((m.topic, m.payload, m.retain))
        self.client.connect("127.0.0.1", port)
        self.client.loop_start()
        assert self.subscribed.wait(10)

    def decisions(self, topic: str) -> list[dict]:
        return [json.loads(p) for t, p, _ in list(self.messages) if t == topic]

    def statuses(self, topic: str) -> list[str]:
        return [p.decode() for t, p, _ in list(self.messages) if t == topic]

    def wait_for(self, predicate, seconds: float = 10.0) -> bool:
        t_end = time.monotonic() + seconds
        while time.monotonic() < t_end:
            if predicate():
                return True
            time.sleep(0.05)
        return predicate()

    def close(self) -> None:
        self.client.loop_stop()
        self.client.disconnect()


def _run(model, source: str, sinks, threshold: float | None = None, **opts):
    from dualkd_edge import Detector
    from dualkd_edge.stream.pipeline import StreamOptions, StreamRunner
    from dualkd_edge.stream.outputs.sinks import JsonlSink
    from dualkd_edge.stream.capture.sources import parse_source

    jsonl = opts.pop("jsonl")
    with Detector.load(model, threshold) as det:
        return StreamRunner(det, parse_source(source), StreamOptions(**opts), sinks=[*sinks, JsonlSink(jsonl)]).run()


def _after(delay: float, *steps) -> threading.Thread:
    """Run `steps` (callables, or pauses in seconds) in a thread, `delay` seconds from now."""
    def go() -> None:
        time.sleep(delay)
        for step in steps:
            step() if callable(step) else time.sleep(step)

    thread = threading.Thread(target=go, daemon=True)
    thread.start()
    return thread


def _lines(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


@pytest.mark.servers
@needs_mosquitto
def test_mqtt_every_decision_arrives_across_a_broker_restart(model, tmp_path):
    from dualkd_edge.stream.outputs.mqtt import MqttSink, parse_mqtt_url

    broker = MosquittoBroker(tmp_path / "broker").start()
    sub = Subscriber(broker.port, client_id="line-monitor")
    video = write_video(tmp_path / "parts.mp4", n=50)
    try:
        sink = MqttSink(parse_mqtt_url(f"mqtt://127.0.0.1:{broker.port}/line/cam1"))
        restart = _after(1.5, broker.stop, 1.5, broker.start)  # a clean broker restart mid-stream
        summary = _run(model, str(video), [sink], fps_limit=10, jsonl=tmp_path / "f.jsonl")
        restart.join()
        assert sub.wait_for(lambda: len({d["frame"] for d in sub.decisions("line/cam1")}) >= 50, 20)
        assert sub.wait_for(lambda: sub.statuses("line/cam1/status")[-1:] == ["offline"])
    finally:
        sub.close()
        broker.stop()
    delivery = summary.deliveries[0].to_dict()
    assert delivery["accepted"] == delivery["delivered"] == 50, delivery
    assert delivery["dropped"] == delivery["failed"] == delivery["left"] == 0 and delivery["reconnects"] >= 1
    received = sub.decisions("line/cam1")
    assert {d["frame"] for d in received} == set(range(50))  # QoS 1: at least once, duplicates allowed
    assert RECORD_KEYS <= set(received[0]) and received[0]["source"] == str(video)
    by_frame = {r["frame"]: r for r in _lines(tmp_path / "f.jsonl")}
    assert all(d["score"] == by_frame[d["frame"]]["score"] and d["is_anomaly"] == by_frame[d["frame"]]["is_anomaly"]
               for d in received)
    assert "online" in sub.statuses("line/cam1/status")
    assert "mqtt mqtt://127.0.0.1" in summary.format() and "delivered 50 of 50" in summary.format()


@pytest.mark.servers
@needs_mosquitto
def test_mqtt_credentials_only_ng_and_the_last_will(model, tmp_path):
    user = ("line", "s3cret!")
    broker = MosquittoBroker(tmp_path / "broker", user=user).start()
    sub = Subscriber(broker.port, topic="plant/#", user=user)
    url = f"mqtt://line:s3cret%21@127.0.0.1:{broker.port}/plant/cam2"
    video = write_video(tmp_path / "parts.mp4", n=12)
    camera = MjpegServer(fps=10, max_seconds=60).start()
    try:
        proc = run_cli("infer", model, video, "--mqtt", url, "--mqtt-only-ng", "--threshold", "0.3",
                       "--jsonl", tmp_path / "f.jsonl", "--out", tmp_path / "o")
        assert proc.returncode == 0, proc.stderr
        ng = [r["frame"] for r in _lines(tmp_path / "f.jsonl") if r["is_anomaly"]]
        assert 0 < len(ng) < 12, "the threshold should split the parts"
        assert sub.wait_for(lambda: sorted(d["frame"] for d in sub.decisions("plant/cam2")) == ng)
        assert "s3cret" not in proc.stdout + proc.stderr and "mqtt://***@127.0.0.1" in proc.stdout
        summary = json.loads((tmp_path / "o" / "summary.json").read_text())
        assert summary["deliveries"][0]["delivered"] == len(ng)
        # A run that dies (no clean disconnect): the broker publishes its last will, retained.
        sub.messages.clear()
        live = subprocess.Popen([sys.executable, "-m", "dualkd_edge.cli", "infer", str(model), camera.url, "--mqtt",
                                 url.replace("cam2", "cam3")], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            assert sub.wait_for(lambda: sub.statuses("plant/cam3/status")[-1:] == ["online"], 60)
            live.send_signal(signal.SIGKILL)
            live.wait(10)
        finally:
            if live.poll() is None:
                live.kill()
        assert sub.wait_for(lambda: sub.statuses("plant/cam3/status")[-1:] == ["offline"])
        late = Subscriber(broker.port, topic="plant/cam3/status", user=user)  # a screen that connects later
        assert late.wait_for(lambda: late.messages[-1:] == [("plant/cam3/status", b"offline", True)])
        late.close()
    finally:
        sub.close()
        broker.stop()
        camera.stop()


@needs_paho
def test_unreachable_receivers_never_stall_the_run(model, tmp_path):
    """A broker that is not there, a PLC port nobody listens on, a webhook that accepts connections and
    never answers: the stream runs to its end, and the summary says nothing was delivered."""
    pytest.importorskip("pymodbus", reason="needs pymodbus (pip install '.[line]')")
    from dualkd_edge.stream.outputs.webhook import WebhookSink

    hang = socket.socket()
    hang.bind(("127.0.0.1", 0))
    hang.listen(64)  # connections complete in the backlog, requests are never read
    video = write_video(tmp_path / "parts.mp4", n=30)
    try:
        webhook = WebhookSink(f"http://127.0.0.1:{hang.getsockname()[1]}/hook", attempts=2, timeout=0.5, queue_size=4)
        line = _line_sinks(f"mqtt://127.0.0.1:{free_port()}/line/x", f"127.0.0.1:{free_port()}")
        summary = _run(model, str(video), [*line, webhook], threshold=0.0, jsonl=tmp_path / "f.jsonl")
    finally:
        hang.close()
    assert summary.frames == 30 and len(_lines(tmp_path / "f.jsonl")) == 30
    for d in summary.deliveries:
        assert d.delivered == 0 and d.accepted == 30, d
        assert d.dropped + d.failed + d.left == 30, d
    assert summary.deliveries[-1].dropped > 0  # the webhook's queue of 4 overflowed, counted


def _line_sinks(mqtt_url: str, modbus_address: str) -> list:
    from dualkd_edge.stream.outputs.modbus import ModbusSink, parse_modbus_address
    from dualkd_edge.stream.outputs.mqtt import MqttSink, parse_mqtt_url

    return [MqttSink(parse_mqtt_url(mqtt_url)), ModbusSink(parse_modbus_address(modbus_address))]


@pytest.mark.servers
def test_modbus_registers_follow_the_decisions_across_a_plc_power_cycle(model, tmp_path):
    pytest.importorskip("pymodbus")
    from pymodbus.client import ModbusTcpClient

    from dualkd_edge.stream.outputs.modbus import ModbusSink, parse_modbus_address

    plc = ModbusServer(tmp_path / "writes.jsonl").start()
    video = write_video(tmp_path / "parts.mp4", n=40)
    try:
        sink = ModbusSink(parse_modbus_address(f"127.0.0.1:{plc.port}/1"))
        power_cycle = _after(1.5, lambda: plc.stop(kill=True), 1.0, plc.start)
        summary = _run(model, str(video), [sink], fps_limit=10, jsonl=tmp_path / "f.jsonl")
        power_cycle.join()
        client = ModbusTcpClient("127.0.0.1", port=plc.port)
        assert client.connect()
        coil = client.read_coils(0, count=1, device_id=1).bits[0]
        registers = client.read_holding_registers(0, count=3, device_id=1).registers
        client.close()
    finally:
        plc.stop(kill=True)
    last = _lines(tmp_path / "f.jsonl")[-1]
    assert coil == last["is_anomaly"] and registers == [round(last["score"] * 1000), 40, 0]
    d = summary.deliveries[0]
    assert d.accepted == 40 and d.delivered + d.dropped + d.failed + d.left == 40 and d.reconnects >= 1
    writes = plc.writes()
    counters = [w["values"][1] for w in writes if w["table"] == "holding"]
    assert counters == sorted(counters) and len(set(counters)) >= d.delivered >= 20
    # Each decision writes the coil, then the registers (the counter last, as the PLC's "new decision" signal):
    # every register write follows a coil write, and a power cut between the two leaves a coil-only write
    # that the retry repeats, never more of them than there were failed writes.
    tables = [w["table"] for w in writes]
    assert all(i > 0 and tables[i - 1] == "coil" for i, t in enumerate(tables) if t == "holding")
    assert 0 <= tables.count("coil") - len(counters) <= d.reconnects + d.failed


@pytest.mark.servers
def test_webhook_posts_ng_events_and_retries_through_an_outage(model, tmp_path):
    from dualkd_edge.stream.outputs.webhook import WebhookSink

    receiver = WebhookReceiver().start()
    receiver.fail_with = 503  # in trouble at first
    video = write_video(tmp_path / "parts.mp4", n=30)
    url = receiver.url.replace("http://", "http://hook:pa%3Ass@")
    try:
        sink = WebhookSink(url)
        outage = _after(1.0, lambda: setattr(receiver, "fail_with", None), 0.5, receiver.stop, 1.0, receiver.start)
        summary = _run(model, str(video), [sink], threshold=0.0, fps_limit=10, jsonl=tmp_path / "f.jsonl")
        outage.join()
    finally:
        receiver.stop()
    d = summary.deliveries[0]
    assert d.accepted == d.delivered == 30 and d.failed == d.dropped == d.left == 0 and d.reconnects >= 1, d
    assert sorted({e["frame"] for e in receiver.events}) == list(range(30))  # every NG (threshold 0: all)
    assert all(e["event"] == "NG" and RECORD_KEYS <= set(e) for e in receiver.events)
    assert {base64.b64decode(a.split()[1]).decode() for a in receiver.authorizations} == {"hook:pa:ss"}
    # credentials hidden; the path and query too (they may hold keys): scheme, host and port are shown
    assert d.target == f"http://***@127.0.0.1:{receiver.port}/***" and "pa:ss" not in summary.format()


def test_line_options_are_checked_before_anything_runs(model, tmp_path):
    import cv2

    from dualkd_edge.data.synth import render_part

    folder = tmp_path / "parts"
    folder.mkdir()
    cv2.imwrite(str(folder / "0.png"), render_part("washer", 1)[0])
    for args, needles in ((("--mqtt", "http://broker/x"), ("--mqtt", "mqtt[s]://")),
                          (("--mqtt", "mqtt://broker:1883/line/#"), ("--mqtt", "wildcard")),
                          (("--mqtt", "mqtt://u:pw@broker:1883"), ("--mqtt", "no topic")),
                          (("--mqtt-only-ng",), ("--mqtt-only-ng",)),
                          (("--modbus", "plc"), ("--modbus", "HOST:PORT")),
                          (("--webhook", "ftp://x/y"), ("--webhook",)),
                          (("--http", "localhost:http"), ("--http",))):
        proc = run_cli("infer", model, folder, *args)
        assert_one_line_error(proc, *needles)
        assert "pw@" not in proc.stderr
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        assert_one_line_error(run_cli("infer", model, folder, "--http", f"127.0.0.1:{taken.getsockname()[1]}"),
                              "--http", "cannot listen")
    assert_one_line_error(run_cli_without(("paho",), "infer", model, folder, "--mqtt", "mqtt://b:1883/t"),
                          "--mqtt", "paho-mqtt", "dualkd-edge[line]")
    assert_one_line_error(run_cli_without(("pymodbus",), "infer", model, folder, "--modbus", "plc:502"),
                          "--modbus", "pymodbus", "dualkd-edge[line]")
