"""`--modbus HOST:PORT[/UNIT]`: every decision written to a PLC over Modbus TCP (pymodbus client).

Register map (addresses 0-based, as on the wire; in 1-based PLC notation coil 00001, registers 40001-40003):

| table | address | value |
|---|---|---|
| coil | 0 | 1 = the last part is NG, 0 = OK |
| holding register | 0 | score x 1000 (0-1000) |
| holding register | 1 | decision counter, modulo 65536 |
| holding register | 2 | source index (the camera's position in SOURCE, from 0) |

The coil is written first, then the three registers in one request: when the PLC sees the counter
change, coil and score already belong to that decision. The counter counts every decision of the run
(it starts at 1), so a jump by more than one tells the PLC that decisions were dropped while it was
slow or unreachable."""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass

from dualkd_edge.errors import MissingDependencyError, UserError
from dualkd_edge.stream.outputs.delivery import QueuedSink, RetryDelays
from dualkd_edge.stream.results import FrameResult

log = logging.getLogger("dualkd_edge")

NG_COIL = 0
SCORE_REGISTER, COUNTER_REGISTER, SOURCE_REGISTER = 0, 1, 2


@dataclass(frozen=True)
class ModbusTarget:
    host: str
    port: int
    unit: int = 1

    @property
    def display(self) -> str:
        return f"{self.host}:{self.port}/{self.unit}"


def parse_modbus_address(text: str) -> ModbusTarget:
    usage = f"--modbus: expected HOST:PORT[/UNIT] (e.g. 192.168.0.10:502/1), got {text!r}"
    # ASCII digits only: str.isdigit() also takes superscripts ("50²"), which int() then refuses.
    m = re.fullmatch(r"(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9.\-]+):([0-9]{1,5})(?:/([0-9]{1,3}))?", text.strip())
    if not m or not 0 < int(m.group(2)) < 65536:
        raise UserError(usage)
    unit = int(m.group(3)) if m.group(3) else 1
    if not 1 <= unit <= 247:
        # 0 is the broadcast address: a TCP-to-serial gateway would write every PLC on its bus
        raise UserError(usage + " (UNIT: 1-247; 0 is broadcast to every device on a serial bus)")
    return ModbusTarget(m.group(1).strip("[]"), int(m.group(2)), unit)


def registers_for(record: dict) -> list[int]:
    """Holding registers 0-2 for one decision (see the map above)."""
    return [max(0, min(1000, round(record["score"] * 1000))), record["counter"] % 65536, record["source_index"] % 65536]


class ModbusSink(QueuedSink):
    def __init__(self, target: ModbusTarget, attempts: int = 3, queue_size: int = 64) -> None:
        try:
            from pymodbus.client import ModbusTcpClient
        except ImportError:
            raise MissingDependencyError("--modbus needs pymodbus: pip install 'dualkd-edge[line]'") from None
        super().__init__("modbus", target.display, queue_size=queue_size)
        # pymodbus logs every failed connection at ERROR; we log reconnects ourselves, once each.
        logging.getLogger("pymodbus").setLevel(logging.CRITICAL)
        self.target = target
        self.attempts = attempts
        self.delays = RetryDelays()
        self.counter = 0
        self.lost = False  # a write failed since the last success: the next success after a connection is a reconnect
        self.ever_connected = False
        self.client = ModbusTcpClient(target.host, port=target.port, timeout=1.0, retries=0)
        self.start()

    def make_record(self, result: FrameResult) -> dict:
        self.counter += 1  # counts every decision, including those a full queue drops
        p = result.prediction
        return {"is_anomaly": p.is_anomaly, "score": p.score, "source_index": result.frame.source,
                "counter": self.counter}

    def deliver(self, record: dict) -> bool:
        for attempt in range(1, self.attempts + 1):
            try:
                self._write_once(record)
                return True
            except Exception as exc:  # noqa: BLE001 - pymodbus raises several kinds; all mean "not written"
                self._lost(exc)
                if attempt < self.attempts and not self.abandon.is_set():
                    self.wait(self.delays(attempt))
        return False

    def _write_once(self, record: dict) -> None:
        """Connected means the PLC answered: a peer that accepts TCP but never replies is not one."""
        if not self.client.connected and not self.client.connect():
            raise ConnectionError("cannot connect")
        # The coil first, the registers (with the counter) last: the PLC takes a changed counter as "a new
        # decision is complete", so it never reads a new counter beside the previous decision's coil.
        self._check(self.client.write_coil(NG_COIL, bool(record["is_anomaly"]), device_id=self.target.unit))
        self._check(self.client.write_registers(SCORE_REGISTER, registers_for(record), device_id=self.target.unit))
        if self.lost and self.ever_connected:
            self.count("reconnects")
            log.info("modbus %s: reconnected", self.target.display)
        self.lost, self.ever_connected = False, True
        self.delivery.connected = True

    @staticmethod
    def _check(reply) -> None:
        if reply.isError():
            raise RuntimeError(f"the PLC answered {reply}")

    def _lost(self, exc: Exception) -> None:
        self.delivery.last_error = f"{type(exc).__name__}: {exc}"
        if not self.lost:
            log.warning("modbus %s: write failed (%s); reconnecting", self.target.display, self.delivery.last_error)
        self.lost = True
        self.delivery.connected = False
        self.client.close()

    def finish(self) -> None:
        self.client.close()
