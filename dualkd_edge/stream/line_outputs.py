"""The line-side outputs of `infer`: decisions to an MQTT broker, a PLC (Modbus TCP) and a webhook,
and the dashboard. Each is optional; their client libraries come with `pip install '.[line]'`."""

from __future__ import annotations

from dataclasses import dataclass

from dualkd_edge.errors import UserError
from dualkd_edge.stream.sinks import Sink


@dataclass
class LineOptions:
    mqtt: str | None = None  # mqtt[s]://[user:pw@]HOST[:PORT]/TOPIC
    mqtt_only_ng: bool = False
    modbus: str | None = None  # HOST:PORT[/UNIT]
    webhook: str | None = None  # http(s)://... (NG events)
    http: str | None = None  # HOST:PORT of the dashboard

    def validate(self) -> None:
        """Every address parsed before anything connects (UserErrors name the option)."""
        from dualkd_edge.stream.dashboard import parse_bind
        from dualkd_edge.stream.modbus_sink import parse_modbus_address
        from dualkd_edge.stream.mqtt_sink import parse_mqtt_url
        from dualkd_edge.stream.webhook_sink import split_credentials

        if self.mqtt_only_ng and not self.mqtt:
            raise UserError("--mqtt-only-ng: needs --mqtt URL")
        for value, parse in ((self.mqtt, parse_mqtt_url), (self.modbus, parse_modbus_address),
                             (self.webhook, split_credentials), (self.http, parse_bind)):
            if value is not None:
                parse(value)

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
                from dualkd_edge.stream.dashboard import Dashboard

                started.append(Dashboard(self.http, model=model, threshold=threshold))
            if self.mqtt is not None:
                from dualkd_edge.stream.mqtt_sink import MqttSink, parse_mqtt_url

                started.append(MqttSink(parse_mqtt_url(self.mqtt), only_ng=self.mqtt_only_ng))
            if self.modbus is not None:
                from dualkd_edge.stream.modbus_sink import ModbusSink, parse_modbus_address

                started.append(ModbusSink(parse_modbus_address(self.modbus)))
            if self.webhook is not None:
                from dualkd_edge.stream.webhook_sink import WebhookSink

                started.append(WebhookSink(self.webhook))
        except BaseException:
            for sink in started:
                sink.close()
            raise
        return started
