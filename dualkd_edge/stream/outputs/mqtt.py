"""`--mqtt mqtt[s]://[user:pw@]HOST[:PORT]/TOPIC`: one JSON message per decision on TOPIC (QoS 1),
and a retained `TOPIC/status` that reads `online` while the run is connected and `offline` after it
(the broker publishes `offline` itself, as the last will, when the run dies). The drift watch's
state is the retained JSON `TOPIC/status/drift` (`{"alarm": ..., "source": ..., "message": ...}`),
published when it changes and on every (re)connection. paho-mqtt keeps QoS 1
messages while the broker is away and resends them when it is back (up to `max_queued`)."""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import unquote, urlsplit

from dualkd_edge.errors import MissingDependencyError, UserError
from dualkd_edge.stream.outputs.delivery import QueuedSink
from dualkd_edge.stream.results import FrameResult
from dualkd_edge.stream.capture.sources import redact

log = logging.getLogger("dualkd_edge")

LINE_EXTRA = "pip install 'dualkd-edge[line]'"
FAIL_LOG_S = 30.0  # connect failures are logged at most this often (with a count)


@dataclass(frozen=True)
class MqttTarget:
    tls: bool
    host: str
    port: int
    topic: str
    username: str | None = None
    password: str | None = None
    cafile: str | None = None  # CA certificate(s) to verify the broker with (default: the system's)
    certfile: str | None = None  # client certificate and key, for brokers that require them
    keyfile: str | None = None

    @property
    def display(self) -> str:
        """The URL with the credentials removed."""
        auth = "***@" if self.username else ""
        return f"{'mqtts' if self.tls else 'mqtt'}://{auth}{self.host}:{self.port}/{self.topic}"

    @property
    def status_topic(self) -> str:
        return f"{self.topic}/status"

    @property
    def drift_topic(self) -> str:
        return f"{self.topic}/status/drift"


def parse_mqtt_url(url: str, cafile=None, certfile=None, keyfile=None) -> MqttTarget:
    usage = f"--mqtt: expected mqtt[s]://[user:password@]HOST[:PORT]/TOPIC, got {redact(url)!r}"
    if "#" in url or "+" in urlsplit(url).path:  # checked first: a URL parser takes '#' for a fragment
        raise UserError(f"--mqtt: the topic in {redact(url)!r} has a wildcard (+ or #); messages need a plain topic")
    parts = urlsplit(url)
    if parts.scheme not in ("mqtt", "mqtts") or not parts.hostname:
        raise UserError(usage)
    topic = parts.path.lstrip("/")
    if not topic or topic.endswith("/"):
        raise UserError(usage + " (no topic)")
    try:
        port = parts.port or (8883 if parts.scheme == "mqtts" else 1883)
    except ValueError:
        raise UserError(usage + " (bad port)") from None
    tls_files = {"--mqtt-cafile": cafile, "--mqtt-cert": certfile, "--mqtt-key": keyfile}
    for option, path in tls_files.items():
        if path is None:
            continue
        if parts.scheme != "mqtts":
            raise UserError(f"{option}: TLS files need an mqtts:// URL, got {parts.scheme}://")
        if not Path(path).is_file():
            raise UserError(f"{option}: not found: {path}")
    return MqttTarget(parts.scheme == "mqtts", parts.hostname, port, topic,
                      unquote(parts.username) if parts.username else None,
                      unquote(parts.password) if parts.password else None,
                      *(str(p) if p is not None else None for p in (cafile, certfile, keyfile)))


class MqttSink(QueuedSink):
    def __init__(self, target: MqttTarget, only_ng: bool = False, max_queued: int = 1000,
                 queue_size: int = 256) -> None:
        try:
            import paho.mqtt.client as mqtt
        except ImportError:
            raise MissingDependencyError(f"--mqtt needs paho-mqtt: {LINE_EXTRA}") from None
        super().__init__("mqtt", target.display, queue_size=queue_size)
        self.target = target
        self.only_ng = only_ng
        self.mqtt = mqtt
        self.published = 0  # decisions paho took (sent, or kept until the broker is back)
        self.status_mids: set[int] = set()
        self.closing = False
        self.ever_connected = threading.Event()
        self.drift_state: dict = {"alarm": False, "source": None, "frame": None, "message": ""}
        self.connect_failures = self._failures_logged = 0
        self._last_fail_log = -FAIL_LOG_S
        client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2,
                             client_id=f"dualkd-edge-{socket.gethostname()}-{os.getpid()}", clean_session=True)
        client.will_set(target.status_topic, "offline", qos=1, retain=True)
        if target.username:
            client.username_pw_set(target.username, target.password)
        if target.tls:  # verified against --mqtt-cafile, else the system's CA certificates
            try:
                client.tls_set(ca_certs=target.cafile, certfile=target.certfile, keyfile=target.keyfile)
            except (OSError, ValueError) as exc:  # ssl.SSLError is an OSError: a bad CA, certificate or key file
                raise UserError(f"--mqtt: cannot use the TLS files ({exc})") from None
        client.max_queued_messages_set(max_queued)
        client.reconnect_delay_set(min_delay=1, max_delay=8)
        client.on_connect = self._on_connect
        client.on_connect_fail = self._on_connect_fail
        client.on_disconnect = self._on_disconnect
        client.on_publish = self._on_publish
        self.client = client
        client.connect_async(target.host, target.port, keepalive=30)
        client.loop_start()  # paho's network thread: connects, reconnects, resends
        self.start()

    def selects(self, result: FrameResult) -> bool:
        return result.prediction.is_anomaly or not self.only_ng

    def write(self, result: FrameResult) -> None:
        if result.drift_event is not None:  # the drift alarm fired or cleared on this frame
            self.drift_state = {"alarm": result.drift_active, "source": result.source_label,
                                "frame": result.frame.index, "message": result.drift_event}
            self._publish_drift()
        super().write(result)

    def _publish_drift(self) -> None:
        import json

        # paho's publish is thread-safe; it keeps the message while the broker is away
        self.status_mids.add(self.client.publish(self.target.drift_topic, json.dumps(self.drift_state),
                                                 qos=1, retain=True).mid)

    # -- paho callbacks (its network thread) -----------------------------------------------------
    def _on_connect(self, client, _userdata, _flags, reason, _props) -> None:
        if reason.is_failure:
            self.delivery.last_error = f"broker refused the connection: {reason}"
            log.warning("mqtt %s: %s", self.target.display, self.delivery.last_error)
            return
        self.delivery.connected = True
        self.status_mids.add(client.publish(self.target.status_topic, "online", qos=1, retain=True).mid)
        self._publish_drift()
        if self.ever_connected.is_set():
            self.count("reconnects")
            log.info("mqtt %s: reconnected", self.target.display)
        else:
            log.info("mqtt %s: connected", self.target.display)
        self.ever_connected.set()

    def _on_disconnect(self, _client, _userdata, _flags, reason, _props) -> None:
        was_connected, self.delivery.connected = self.delivery.connected, False
        if not self.closing:
            self.delivery.last_error = f"connection lost: {reason}" if was_connected else f"cannot connect: {reason}"
            if was_connected:
                log.warning("mqtt %s: connection lost (%s); reconnecting", self.target.display, reason)
            else:
                self._failed(self.delivery.last_error)

    def _on_connect_fail(self, _client, _userdata) -> None:
        """paho could not open the connection (refused, unreachable, a TLS handshake that failed):
        its own exception is not passed here, so ask the socket layer what the last error was."""
        self.delivery.connected = False
        self._failed(f"cannot connect to {self.target.host}:{self.target.port}"
                     + (" (TLS: certificate, CA or a plaintext port?)" if self.target.tls else ""))

    def _failed(self, message: str) -> None:
        """Log a connect failure at most every FAIL_LOG_S seconds, with how many there were."""
        self.delivery.last_error = message
        self.connect_failures += 1
        now = time.monotonic()
        if now - self._last_fail_log >= FAIL_LOG_S:
            repeats = self.connect_failures - self._failures_logged
            log.warning("mqtt %s: %s%s; retrying", self.target.display, message,
                        f" ({repeats} failed attempts)" if repeats > 1 else "")
            self._last_fail_log, self._failures_logged = now, self.connect_failures

    def _on_publish(self, _client, _userdata, mid, _reason, _props) -> None:
        if mid in self.status_mids or self.closing:
            return
        self.count("delivered")

    # -- the sink's worker thread ----------------------------------------------------------------
    def deliver(self, record: dict) -> bool | None:
        import json

        info = self.client.publish(self.target.topic, json.dumps(record), qos=1)
        if info.rc == self.mqtt.MQTT_ERR_QUEUE_SIZE:
            self.count("dropped")  # paho holds `max_queued` messages for an absent broker already
        else:
            self.published += 1  # only this thread writes it
        return None  # counted when the broker acknowledges it (on_publish)

    def finish(self) -> None:
        """Wait (bounded) for the broker's acknowledgements, say `offline`, disconnect."""
        t_end = time.monotonic() + 3.0  # also covers a broker that comes back a moment later
        while self.delivery.delivered < self.published and time.monotonic() < t_end:
            time.sleep(0.02)
        self.closing = True
        self.count("left", self.published - self.delivery.delivered)
        if self.delivery.connected:
            self.client.publish(self.target.status_topic, "offline", qos=1, retain=True).wait_for_publish(timeout=2)
        self.client.disconnect()
        self.client.loop_stop()
