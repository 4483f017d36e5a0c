"""Receivers on 127.0.0.1 for the line-side sinks, for tests and benchmarks: a Mosquitto broker
(Debian's `mosquitto`) with its own config file, a Modbus TCP server (pymodbus) that logs every
write, and an HTTP receiver for webhooks. Each can be stopped and started again on the same port,
the way a broker, a PLC or a receiver goes away on a real line.

`python -m support.line_servers modbus PORT LOG` runs the Modbus server in its own
process (what `ModbusServer` starts), so it can be killed like a PLC that loses power."""

from __future__ import annotations

import getpass
import json
import shutil
import signal
import socket
import subprocess
import sys
import time
from http.server import BaseHTTPRequestHandler
from pathlib import Path

from support import started
from support.stream_servers import LoopbackHttpServer, free_port


def wait_for_port(port: int, seconds: float = 10.0, proc: subprocess.Popen | None = None) -> None:
    t_end = time.monotonic() + seconds
    while time.monotonic() < t_end:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"the server exited with status {proc.returncode}")
        with socket.socket() as s:
            s.settimeout(0.2)
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.05)
    raise RuntimeError(f"nothing listens on 127.0.0.1:{port} after {seconds} s")


class ProcessServer:
    """A server in a child process, listening on a fixed port across restarts."""

    def __init__(self, port: int | None = None) -> None:
        self.port = port or free_port()
        self.proc: subprocess.Popen | None = None

    def command(self) -> list[str]:
        raise NotImplementedError

    def start(self):
        # cwd: the folder holding `support`, so `python -m support.<server>` finds it
        self.proc = subprocess.Popen(self.command(), stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                     stderr=subprocess.DEVNULL, cwd=Path(__file__).resolve().parents[1])
        started(self)
        wait_for_port(self.port, proc=self.proc)
        return self

    def stop(self, kill: bool = False) -> None:
        """SIGTERM (a clean shutdown) or SIGKILL (power lost)."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL if kill else signal.SIGTERM)
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop(kill=True)


class MosquittoBroker(ProcessServer):
    """Mosquitto bound to 127.0.0.1 on a free port, with persistence (sessions and queued QoS 1
    messages survive a clean restart) and optionally one user with a password."""

    def __init__(self, folder: Path, port: int | None = None, user: tuple[str, str] | None = None) -> None:
        if shutil.which("mosquitto") is None:
            raise RuntimeError("mosquitto not installed")
        super().__init__(port)
        self.folder = folder
        folder.mkdir(parents=True, exist_ok=True)
        # Started as root, mosquitto would switch to the `mosquitto` user, who cannot read a test's folder.
        lines = [f"listener {self.port} 127.0.0.1", f"user {getpass.getuser()}", "persistence true",
                 f"persistence_location {folder}/", "log_dest none"]
        if user:
            passwords = folder / "passwords"
            passwords.write_text("")
            subprocess.run(["mosquitto_passwd", "-b", str(passwords), *user], check=True, capture_output=True)
            lines += ["allow_anonymous false", f"password_file {passwords}"]
        else:
            lines.append("allow_anonymous true")
        self.config = folder / "mosquitto.conf"
        self.config.write_text("\n".join(lines) + "\n")

    def command(self) -> list[str]:
        return ["mosquitto", "-c", str(self.config)]


class ModbusServer(ProcessServer):
    """pymodbus' TCP server (coils and holding registers 0-99, unit 1) in a child process; every
    write is appended to `log` as a JSON line, so a test can count what arrived."""

    def __init__(self, log: Path, port: int | None = None) -> None:
        super().__init__(port)
        self.log = log

    def command(self) -> list[str]:
        return [sys.executable, "-m", "support.line_servers", "modbus", str(self.port), str(self.log)]

    def writes(self) -> list[dict]:
        if not self.log.is_file():
            return []
        return [json.loads(line) for line in self.log.read_text().splitlines() if line.endswith("}")]


def serve_modbus(port: int, log: Path) -> None:
    """Coils and holding registers 0-98 on unit 1 (a pymodbus block starting at 1 serves request
    address 0). Each write request is logged from pymodbus' request trace hook, which stays put
    while its data-store API changes between releases."""
    from pymodbus.datastore import ModbusDeviceContext, ModbusSequentialDataBlock, ModbusServerContext
    from pymodbus.server import StartTcpServer

    def trace(sending: bool, pdu):
        if not sending and pdu.function_code in (5, 15, 6, 16):
            values = pdu.bits if pdu.function_code in (5, 15) else pdu.registers
            with open(log, "a") as f:
                f.write(json.dumps({"table": "coil" if pdu.function_code in (5, 15) else "holding",
                                    "address": pdu.address, "values": [int(v) for v in values],
                                    "time": time.time()}) + "\n")
        return pdu

    blocks = {name: ModbusSequentialDataBlock(1, [0] * 100) for name in ("di", "co", "hr", "ir")}
    context = ModbusServerContext(devices={1: ModbusDeviceContext(**blocks)}, single=False)
    StartTcpServer(context=context, address=("127.0.0.1", port), trace_pdu=trace)


class WebhookReceiver(LoopbackHttpServer):
    """An HTTP server that stores the JSON bodies POSTed to it; `fail_with` makes it answer that
    status instead (a receiver in trouble)."""

    def __init__(self, port: int | None = None) -> None:
        self.port = port or free_port()
        self.events: list[dict] = []
        self.authorizations: list[str | None] = []
        self.fail_with: int | None = None
        self.httpd = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/events"

    def start(self) -> "WebhookReceiver":
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args) -> None:
                pass

            def do_POST(self) -> None:  # noqa: N802 - http.server's name
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                if receiver.fail_with:
                    self.send_response(receiver.fail_with)
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                receiver.events.append(json.loads(body))
                receiver.authorizations.append(self.headers.get("Authorization"))
                self.send_response(204)
                self.end_headers()

        self.serve(Handler)
        return self


if __name__ == "__main__":
    if len(sys.argv) == 4 and sys.argv[1] == "modbus":
        serve_modbus(int(sys.argv[2]), Path(sys.argv[3]))
    else:
        sys.exit("usage: python -m support.line_servers modbus PORT LOG")
