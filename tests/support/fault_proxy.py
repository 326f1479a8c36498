"""An HTTP proxy in front of a real S3 that injects faults: 500 answers and slow responses.

Each connection carries one request (the proxy asks the store to close after answering, and
says so to the client), so every request is seen and counted.  Rules apply to the next N
requests matching a method; everything else is forwarded untouched — the Host header
included, which the request's signature covers.
"""

from __future__ import annotations

import socket
import socketserver
import threading
from dataclasses import dataclass

MAX_HEAD = 64 * 1024


@dataclass
class _Rule:
    kind: str  # "fail" | "delay"
    count: int
    methods: frozenset[str] | None
    status: int = 500
    seconds: float = 0.0
    suffix: str | None = None  # only requests whose path (without query) ends so
    forward: bool = True  # a held request is forwarded afterwards, or dropped


class FaultProxy:
    def __init__(self, upstream_host: str, upstream_port: int, port: int) -> None:
        self.upstream = (upstream_host, upstream_port)
        self.host = "127.0.0.1"
        self.port = port
        self.seen: list[tuple[str, str, str]] = []  # (method, path, what the proxy did)
        self._rules: list[_Rule] = []
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        proxy = self

        class Handler(socketserver.BaseRequestHandler):
            def handle(self) -> None:
                proxy._handle(self.request)

        class Server(socketserver.ThreadingTCPServer):
            daemon_threads = True
            allow_reuse_address = True

        self._server = Server((self.host, port), Handler)
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def endpoint(self) -> str:
        return f"http://{self.host}:{self.port}"

    def start(self) -> FaultProxy:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stopping.set()
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(10)

    def fail(self, count: int, *, status: int = 500, methods: tuple[str, ...] = ()) -> None:
        """Answer the next ``count`` requests (of ``methods``, default any) with ``status``."""
        with self._lock:
            self._rules.append(_Rule("fail", count, frozenset(methods) or None, status=status))

    def delay(
        self,
        count: int,
        seconds: float,
        *,
        methods: tuple[str, ...] = (),
        suffix: str | None = None,
        forward: bool = True,
    ) -> None:
        """Hold the next ``count`` requests (of ``methods``, for keys ending in ``suffix``)
        for ``seconds``, then forward them — or, with ``forward=False``, drop them."""
        with self._lock:
            self._rules.append(
                _Rule(
                    "delay",
                    count,
                    frozenset(methods) or None,
                    seconds=seconds,
                    suffix=suffix,
                    forward=forward,
                )
            )

    def clear(self) -> None:
        """Forget every rule not used up yet."""
        with self._lock:
            self._rules.clear()

    def outcomes(self, method: str) -> list[str]:
        with self._lock:
            return [what for m, _path, what in self.seen if m == method]

    # ------------------------------------------------------------------ one connection

    def _rule_for(self, method: str, path: str) -> _Rule | None:
        key = path.split("?", 1)[0]
        with self._lock:
            for rule in self._rules:
                if (
                    rule.count > 0
                    and (rule.methods is None or method in rule.methods)
                    and (rule.suffix is None or key.endswith(rule.suffix))
                ):
                    rule.count -= 1
                    return rule
        return None

    def _handle(self, client: socket.socket) -> None:
        client.settimeout(30)
        try:
            head, body = _read_request(client)
        except (OSError, ValueError):
            return
        request_line = head.split(b"\r\n", 1)[0].decode("latin-1")
        method, path = request_line.split(" ")[:2]
        rule = self._rule_for(method, path)
        if rule is not None and rule.kind == "fail":
            self._note(method, path, f"answered {rule.status}")
            payload = b"<Error><Code>InternalError</Code><Message>injected</Message></Error>"
            client.sendall(
                f"HTTP/1.1 {rule.status} Injected\r\nContent-Type: application/xml\r\n"
                f"Content-Length: {len(payload)}\r\nConnection: close\r\n\r\n".encode()
                + payload
            )
            return
        if rule is not None and rule.kind == "delay":
            self._note(method, path, f"held {rule.seconds}s")
            if self._stopping.wait(rule.seconds) or not rule.forward:
                return
        else:
            self._note(method, path, "forwarded")
        try:
            with socket.create_connection(self.upstream, timeout=30) as upstream:
                upstream.sendall(_close_after(head) + body)
                while chunk := upstream.recv(256 * 1024):
                    client.sendall(chunk)
        except OSError:
            return  # the client gave up (a timeout it retries): nothing to relay to

    def _note(self, method: str, path: str, what: str) -> None:
        with self._lock:
            self.seen.append((method, path, what))


def _read_request(sock: socket.socket) -> tuple[bytes, bytes]:
    """One request's head (without the blank line) and body (Content-Length or chunked)."""
    buf = b""
    while b"\r\n\r\n" not in buf:
        chunk = sock.recv(65536)
        if not chunk or len(buf) > MAX_HEAD:
            raise ValueError("no request")
        buf += chunk
    head, rest = buf.split(b"\r\n\r\n", 1)
    headers = {}
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        headers[name.strip().lower()] = value.strip()
    if headers.get(b"transfer-encoding", b"").lower() == b"chunked":
        while not rest.endswith(b"0\r\n\r\n"):
            chunk = sock.recv(65536)
            if not chunk:
                raise ValueError("truncated body")
            rest += chunk
        return head, rest
    length = int(headers.get(b"content-length", b"0"))
    while len(rest) < length:
        chunk = sock.recv(min(1 << 20, length - len(rest)))
        if not chunk:
            raise ValueError("truncated body")
        rest += chunk
    return head, rest


def _close_after(head: bytes) -> bytes:
    """The request head with ``Connection: close`` (one request per upstream connection)."""
    lines = [line for line in head.split(b"\r\n") if not line.lower().startswith(b"connection:")]
    return b"\r\n".join([*lines, b"Connection: close"]) + b"\r\n\r\n"
