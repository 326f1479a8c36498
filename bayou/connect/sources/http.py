"""``http-source``: webhooks into a topic.

Keys: ``listen`` (``host:port`` the connector's own HTTP server binds), ``path`` (the one
path it accepts, default ``/``), ``topic``, ``key.path`` (a dotted path into each JSON
record; its value, as a string, becomes the key), ``auth.token`` (requests must carry
``Authorization: Bearer TOKEN``), ``hmac.secret`` with ``hmac.header`` (default GitHub's
``X-Hub-Signature-256``: ``sha256=`` and the hex HMAC-SHA256 of the body), ``batch.size``
(records a poll takes, 500), ``max.body.bytes`` (1 MiB), ``queue.max.records`` (10,000),
``response.timeout.ms`` (30,000).

Theory of operation
-------------------
A POST's body is one JSON object (one record) or an array of objects (one record each).  The
request is answered only once its records are durable in Bayou: the handler thread queues
them under a ticket number and waits; ``poll`` hands out whole tickets (each record's
position is its ticket), the runtime writes them in a transaction, and ``commit(position)``
releases every request up to that ticket with ``200 {"accepted": n}``.  So a 200 means
stored; anything else means the sender should send again (at least once: a request whose
records were written just before a crash, or whose answer timed out, may come twice).
A full queue answers ``503`` with ``Retry-After`` (back-pressure, memory bounded), a
missing or wrong token or signature ``401``, a body that is not JSON objects ``400``, a
body over the limit ``413``, no answer within ``response.timeout.ms`` ``504``.  Nothing is
kept across restarts: the position is not used by ``start``.

Bayou's HTTP door already takes records in the REST Proxy's envelope
(``POST /topics/{topic}``); this source is for senders that post their own JSON (GitHub,
Stripe, IoT gateways) and sign it.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import threading
from collections import deque
from collections.abc import Sequence
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from bayou.connect.api import ConfigError, ConnectorConfig, JsonValue, SourceRecord, SourceTask

log = logging.getLogger(__name__)


class _Ticket:
    __slots__ = ("count", "done", "stored")

    def __init__(self, count: int) -> None:
        self.count = count
        self.done = threading.Event()
        self.stored = False


def _dig(value: Any, path: list[str]) -> Any:
    for part in path:
        if not isinstance(value, dict):
            return None
        value = value.get(part)
    return value


class HttpSourceTask(SourceTask):
    def __init__(self, config: ConnectorConfig) -> None:
        super().__init__(config)
        listen = config.require("listen")
        host, _, port = listen.rpartition(":")
        if not host or not port.isdigit():
            raise ConfigError(f"connector {config.name!r}: listen must be HOST:PORT")
        self.address = (host.strip("[]"), int(port))
        self.path = config.get("path", "/") or "/"
        self.topic = config.require("topic")
        self.key_path = [p for p in (config.get("key.path") or "").split(".") if p]
        self.token = config.get("auth.token") or None
        self.secret = (config.get("hmac.secret") or "").encode() or None
        self.signature_header = config.get("hmac.header", "X-Hub-Signature-256") or ""
        self.batch_size = max(1, config.get_int("batch.size", 500))
        self.max_body = max(1, config.get_int("max.body.bytes", 1 << 20))
        self.max_queued = max(1, config.get_int("queue.max.records", 10_000))
        self.answer_timeout_s = config.get_int("response.timeout.ms", 30_000) / 1000
        self.cond = threading.Condition()
        self.queue: deque[tuple[int, SourceRecord]] = deque()
        self.waiting: dict[int, _Ticket] = {}
        self.next_ticket = 1
        self.server: ThreadingHTTPServer | None = None
        self.stopping = False

    # ------------------------------------------------------------------ the task

    def start(self, position: JsonValue | None) -> None:
        task = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                status, body = task.receive(self)
                self.send_response(status)
                if status == 503:
                    self.send_header("Retry-After", "1")
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: Any) -> None:
                return None

        self.server = ThreadingHTTPServer(self.address, Handler)
        self.server.daemon_threads = True
        threading.Thread(
            target=self.server.serve_forever, name=f"http-source-{self.config.name}", daemon=True
        ).start()

    def poll(self, timeout_s: float) -> Sequence[SourceRecord]:
        out: list[SourceRecord] = []
        with self.cond:
            if not self.queue:
                self.cond.wait(timeout_s)
            while self.queue and (len(out) < self.batch_size or not out):
                ticket = self.queue[0][0]
                while self.queue and self.queue[0][0] == ticket:  # whole requests only
                    out.append(self.queue.popleft()[1])
        return out

    def commit(self, position: JsonValue) -> None:
        if not isinstance(position, int):
            return
        with self.cond:
            for number in [n for n in self.waiting if n <= position]:
                ticket = self.waiting.pop(number)
                ticket.stored = True
                ticket.done.set()

    def stop(self) -> None:
        with self.cond:
            self.stopping = True
            for ticket in self.waiting.values():
                ticket.done.set()  # not stored: the sender sends again
            self.waiting.clear()
            self.queue.clear()
            self.cond.notify_all()
        if self.server is not None:
            self.server.shutdown()
            self.server.server_close()

    # ------------------------------------------------------------------ one request

    def receive(self, request: BaseHTTPRequestHandler) -> tuple[int, bytes]:
        if request.path.split("?", 1)[0] != self.path:
            return 404, b'{"error": "not found"}'
        if self.token is not None:
            given = request.headers.get("Authorization", "")
            if not hmac.compare_digest(given.encode(), f"Bearer {self.token}".encode()):
                return 401, b'{"error": "a bearer token is required"}'
        length = request.headers.get("Content-Length")
        if length is None or not length.isdigit():
            return 411, b'{"error": "Content-Length is required"}'
        if int(length) > self.max_body:
            return 413, b'{"error": "the body is too large"}'
        body = request.rfile.read(int(length))
        if self.secret is not None:
            mac = "sha256=" + hmac.new(self.secret, body, hashlib.sha256).hexdigest()
            given = request.headers.get(self.signature_header, "")
            if not hmac.compare_digest(given.encode(), mac.encode()):
                return 401, b'{"error": "the signature does not match"}'
        try:
            doc = json.loads(body)
        except ValueError:
            return 400, b'{"error": "the body is not JSON"}'
        docs = doc if isinstance(doc, list) else [doc]
        if not docs or not all(isinstance(d, dict) for d in docs):
            return 400, b'{"error": "send a JSON object or an array of objects"}'
        with self.cond:
            if self.stopping:
                return 503, b'{"error": "stopping"}'
            if len(self.queue) + len(docs) > self.max_queued:
                return 503, b'{"error": "too many records waiting"}'
            number = self.next_ticket
            self.next_ticket += 1
            ticket = self.waiting[number] = _Ticket(len(docs))
            for d in docs:
                key = _dig(d, self.key_path) if self.key_path else None
                record = SourceRecord(
                    topic=self.topic,
                    key=None if key is None else str(key),
                    value=d,
                    position=number,
                )
                self.queue.append((number, record))
            self.cond.notify_all()
        if not ticket.done.wait(self.answer_timeout_s):
            with self.cond:
                self.waiting.pop(number, None)
            return 504, b'{"error": "not stored in time; send again"}'
        if not ticket.stored:
            return 503, b'{"error": "stopping"}'
        return 200, json.dumps({"accepted": ticket.count}).encode()
