"""Results out: file sinks, the line-side outputs (MQTT, Modbus TCP, webhook), their delivery queue and secrets."""
