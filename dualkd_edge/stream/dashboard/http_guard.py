"""What keeps the dashboard's HTTP server safe to expose on a plant network (docs/security.md):

- bounded resources: a cap on open connections (an idle or half-sent one is closed to make room for
  a new client, so /healthz keeps answering), read/write time-outs on every socket, and a deadline
  for a request's head, so slow or idle clients cannot hold threads and file descriptors;
- who may ask: the `Host` header must name this server (DNS rebinding), and a token (Bearer header or
  the cookie the page sets) is checked on every route but /healthz when one is configured;
- what the browser may do with the answers: Content-Security-Policy (the page's own inline script and
  style by hash, nothing else), frame-ancestors / X-Frame-Options, nosniff, no referrer.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import ipaddress
import logging
import re
import secrets
import socket
import threading
import time
from dataclasses import dataclass, field
from http.server import ThreadingHTTPServer
from pathlib import Path

from dualkd_edge.errors import UserError

log = logging.getLogger("dualkd_edge")

MAX_CONNECTIONS = 64  # open connections at once; beyond it the oldest idle one is closed, or the new one refused
SOCKET_TIMEOUT_S = 10.0  # a recv or send that makes no progress for this long ends the connection
HEAD_DEADLINE_S = 20.0  # a request line and headers must arrive whole within this (slow-loris)
TOKEN_COOKIE = "dualkd_token"


# -- binding -----------------------------------------------------------------------------------------


def parse_bind(text: str) -> tuple[str, int]:
    """HOST:PORT, :PORT or PORT (then 127.0.0.1); [::1]:PORT for IPv6; port 0: any free one."""
    usage = f"--http: expected HOST:PORT, [IPv6]:PORT or PORT (e.g. 127.0.0.1:8080), got {text!r}"
    m = re.fullmatch(r"(?:(\[[0-9A-Fa-f:.%a-zA-Z]+\]|[A-Za-z0-9.\-]*):)?([0-9]{1,5})", text.strip())
    if not m or int(m.group(2)) > 65535:
        raise UserError(usage)
    host = (m.group(1) or "").strip("[]") or "127.0.0.1"
    return host, int(m.group(2))


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.split("%")[0]).is_loopback
    except ValueError:
        return False


# -- tokens ------------------------------------------------------------------------------------------


@dataclass
class Tokens:
    """Who may use the dashboard: token -> name (for the review answers' `who`)."""

    by_token: dict[str, str] = field(default_factory=dict)

    @property
    def required(self) -> bool:
        return bool(self.by_token)

    def who(self, presented: str | None) -> str | None:
        """The name of a valid token (compared in constant time), else None."""
        if not presented:
            return None
        found = None
        for token, name in self.by_token.items():
            if hmac.compare_digest(token.encode(), presented.encode()):
                found = name
        return found


def read_token_file(path: Path, option: str = "--http-token-file") -> Tokens:
    """Lines `TOKEN` or `NAME:TOKEN` (# comments); at least 16 characters each."""
    try:
        text = Path(path).read_text()
    except (OSError, UnicodeDecodeError) as exc:
        raise UserError(f"{option}: cannot read {path} ({getattr(exc, 'strerror', None) or exc})") from None
    tokens = Tokens()
    for n, line in enumerate(text.splitlines(), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        name, sep, token = line.rpartition(":")
        name = name.strip() if sep else "operator"
        token = token.strip()
        if len(token) < 16 or not re.fullmatch(r"[\x21-\x7e]+", token):
            raise UserError(f"{option}: {path}:{n}: a token needs at least 16 printable characters, no spaces")
        tokens.by_token[token] = name or "operator"
    if not tokens.required:
        raise UserError(f"{option}: {path} holds no token")
    return tokens


def generated_token() -> Tokens:
    return Tokens({secrets.token_urlsafe(24): "operator"})


# -- headers -----------------------------------------------------------------------------------------


def _hash_source(kind: str, page: str) -> str:
    blocks = re.findall(rf"<{kind}>(.*?)</{kind}>", page, flags=re.S)
    return " ".join(f"'sha256-{base64.b64encode(hashlib.sha256(b.encode()).digest()).decode()}'" for b in blocks)


def content_security_policy(page: str) -> str:
    """Only the page's own inline script and style (by hash), images and fetches from this server."""
    return ("default-src 'none'; "
            f"script-src {_hash_source('script', page) or chr(39) + 'none' + chr(39)}; "
            f"style-src {_hash_source('style', page) or chr(39) + 'none' + chr(39)}; "
            "img-src 'self'; connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'")


def security_headers(csp: str) -> list[tuple[str, str]]:
    return [("Content-Security-Policy", csp), ("X-Frame-Options", "DENY"), ("X-Content-Type-Options", "nosniff"),
            ("Referrer-Policy", "no-referrer"), ("Cross-Origin-Resource-Policy", "same-origin")]


def host_allowed(host_header: str | None, bound_host: str, port: int) -> bool:
    """The Host header names this server: an IP literal, localhost, this machine's names, or the name
    it was bound to; with the port it listens on (or none). A rebinding name (attacker.example) fails."""
    if not host_header:
        return False
    m = re.fullmatch(r"(\[[0-9A-Fa-f:.%]+\]|[^:\[\]]+)(?::([0-9]{1,5}))?", host_header.strip())
    if not m or (m.group(2) and int(m.group(2)) != port):
        return False
    name = m.group(1).strip("[]").lower().rstrip(".")
    try:
        ipaddress.ip_address(name.split("%")[0])
        return True
    except ValueError:
        pass
    names = {"localhost", bound_host.lower(), socket.gethostname().lower(), socket.getfqdn().lower()}
    return name in names


# -- the server ----------------------------------------------------------------------------------------


class _Connection:
    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.opened = time.monotonic()
        self.busy = False  # a request's head has arrived and it is being answered (or streamed)


class GuardedHTTPServer(ThreadingHTTPServer):
    """ThreadingHTTPServer with a connection cap, socket time-outs and a head deadline."""

    daemon_threads = True
    request_queue_size = 64

    def __init__(self, address: tuple[str, int], handler, max_connections: int = MAX_CONNECTIONS,
                 head_deadline: float = HEAD_DEADLINE_S) -> None:
        self.address_family = socket.AF_INET6 if ":" in address[0] else socket.AF_INET
        self.max_connections = max_connections
        self.head_deadline = head_deadline
        self.connections: dict[int, _Connection] = {}
        self.refused = 0  # connections refused or closed for lack of room
        self.timed_out = 0  # connections closed by the head deadline
        self._lock = threading.Lock()
        self._closing = threading.Event()
        super().__init__(address, handler)
        threading.Thread(target=self._reap, name="dashboard-reaper", daemon=True).start()

    # connection bookkeeping ------------------------------------------------------------------------
    def process_request(self, request, client_address) -> None:  # noqa: ANN001 - socketserver's signature
        with self._lock:
            if len(self.connections) >= self.max_connections and not self._evict_idle():
                self.refused += 1
                self._refuse(request)
                return
            self.connections[id(request)] = _Connection(request)
        request.settimeout(SOCKET_TIMEOUT_S)
        super().process_request(request, client_address)

    def _evict_idle(self) -> bool:
        """Close the oldest connection that is not being answered (lock held); True if one was."""
        idle = [c for c in self.connections.values() if not c.busy]
        if not idle:
            return False
        oldest = min(idle, key=lambda c: c.opened)
        self.refused += 1
        self._shut(oldest.sock)
        self.connections.pop(id(oldest.sock), None)
        return True

    @staticmethod
    def _refuse(request) -> None:  # noqa: ANN001
        try:
            request.sendall(b"HTTP/1.1 503 Service Unavailable\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
        except OSError:
            pass
        GuardedHTTPServer._shut(request)
        request.close()

    @staticmethod
    def _shut(sock) -> None:  # noqa: ANN001
        try:
            sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass

    def shutdown_request(self, request) -> None:  # noqa: ANN001 - called when a connection is done
        with self._lock:
            self.connections.pop(id(request), None)
        super().shutdown_request(request)

    def mark(self, request, busy: bool) -> None:  # noqa: ANN001
        """The handler's state: a request being answered (busy) or a connection waiting for one."""
        with self._lock:
            conn = self.connections.get(id(request))
            if conn is not None:
                conn.busy = busy
                if not busy:
                    conn.opened = time.monotonic()  # the next request's head has its own deadline

    def _reap(self) -> None:
        while not self._closing.wait(1.0):
            now = time.monotonic()
            with self._lock:
                late = [c for c in self.connections.values() if not c.busy and now - c.opened > self.head_deadline]
                for c in late:
                    self.timed_out += 1
                    self._shut(c.sock)

    def server_close(self) -> None:
        self._closing.set()
        super().server_close()
        with self._lock:
            for c in self.connections.values():
                self._shut(c.sock)

    @property
    def open_connections(self) -> int:
        with self._lock:
            return len(self.connections)
