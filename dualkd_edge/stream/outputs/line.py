"""The line-side outputs of `infer`: decisions to an MQTT broker, a PLC (Modbus TCP) and a webhook,
and the dashboard. Each is optional; their client libraries come with `pip install '.[line]'`."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from dualkd_edge.errors import UserError
from dualkd_edge.stream.outputs.sinks import Sink


@dataclass
class LineOptions:
    mqtt: str | None = None  # mqtt[s]://[user:pw@]HOST[:PORT]/TOPIC
    mqtt_only_ng: bool = False
    modbus: str | None = None  # HOST:PORT[/UNIT]
    webhook: str | None = None  # http(s)://... (NG events)
    http: str | None = None  # HOST:PORT of the dashboard
    # Secrets and TLS, kept off the command line (stream/credentials.py, docs/security.md)
    http_token_file: Path | None = None
    mqtt_password_file: Path | None = None
    mqtt_cafile: Path | None = None
    mqtt_cert: Path | None = None
    mqtt_key: Path | None = None
    webhook_file: Path | None = None

    def resolve_secrets(self) -> None:
        """Secrets from their files and environment variables; a warning for each one on argv."""
        from dualkd_edge.stream.outputs.credentials import resolve_webhook

        self.webhook = resolve_webhook(self.webhook, self.webhook_file)
        self.webhook_file = None

    def validate(self) -> None:
        """Every address parsed before anything connects (UserErrors name the option)."""
        from dualkd_edge.stream.dashboard.http_guard import parse_bind
        from dualkd_edge.stream.outputs.modbus import parse_modbus_address
        from dualkd_edge.stream.outputs.webhook import split_credentials

        if self.mqtt_only_ng and not self.mqtt:
            raise UserError("--mqtt-only-ng: needs --mqtt URL")
        if self.http_token_file is not None and self.http is None:
            raise UserError("--http-token-file: needs --http [HOST:]PORT")
        if (self.mqtt_cafile or self.mqtt_cert or self.mqtt_key) and not self.mqtt:
            raise UserError("--mqtt-cafile / --mqtt-cert / --mqtt-key: need --mqtt mqtts://...")
        if bool(self.mqtt_cert) != bool(self.mqtt_key):
            raise UserError("--mqtt-cert and --mqtt-key: give both (the client certificate and its key)")
        for value, parse in ((self.modbus, parse_modbus_address), (self.webhook, split_credentials),
                             (self.http, parse_bind)):
            if value is not None:
                parse(value)
        if self.mqtt is not None:
            self.mqtt_target()

    def mqtt_target(self):
        from dualkd_edge.stream.outputs.credentials import resolve_mqtt_password
        from dualkd_edge.stream.outputs.mqtt import parse_mqtt_url

        target = parse_mqtt_url(self.mqtt, self.mqtt_cafile, self.mqtt_cert, self.mqtt_key)
        password = resolve_mqtt_password(self.mqtt, self.mqtt_password_file)
        if password is not None:
            from dataclasses import replace

            if not target.username:
                raise UserError("--mqtt-password-file / DUALKD_MQTT_PASSWORD: the --mqtt URL names no user "
                                "(mqtt://USER@HOST/TOPIC)")
            target = replace(target, password=password)
        return target

    @property
    def any(self) -> bool:
        return any(v is not None for v in (self.mqtt, self.modbus, self.webhook, self.http))

    def open_sinks(self, model: str, threshold: float) -> list[Sink]:
        """Start the asked-for sinks (their threads and connections); the dashboard first. If one
        cannot start, the ones already started are closed."""
        self.validate()
        started: list[Sink] = []
        try:
            if self.http is not None:
                from dualkd_edge.stream.dashboard.server import Dashboard

                tokens = None
                if self.http_token_file is not None:
                    from dualkd_edge.stream.dashboard.http_guard import read_token_file

                    tokens = read_token_file(self.http_token_file)
                started.append(Dashboard(self.http, model=model, threshold=threshold, tokens=tokens))
            if self.mqtt is not None:
                from dualkd_edge.stream.outputs.mqtt import MqttSink

                started.append(MqttSink(self.mqtt_target(), only_ng=self.mqtt_only_ng))
            if self.modbus is not None:
                from dualkd_edge.stream.outputs.modbus import ModbusSink, parse_modbus_address

                started.append(ModbusSink(parse_modbus_address(self.modbus)))
            if self.webhook is not None:
                from dualkd_edge.stream.outputs.webhook import WebhookSink

                started.append(WebhookSink(self.webhook))
        except BaseException:
            for sink in started:
                sink.close()
            raise
        return started
