"""A tiny HTTP receiver for the http-sink's tests: it records every POSTed JSON body, and
can answer the first N requests with 503 (to see retries)."""

from __future__ import annotations

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from tests.support.ports import free_port


class Webhook:
    def __init__(self, fail_first: int = 0) -> None:
        self.lock = threading.Lock()
        self.bodies: list[list[dict[str, Any]]] = []
        self.times: list[float] = []
        self.headers: list[dict[str, str]] = []
        self.fail_first = fail_first
        self.failed = 0
        owner = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(length)
                with owner.lock:
                    if owner.failed < owner.fail_first:
                        owner.failed += 1
                        status = 503
                    else:
                        owner.bodies.append(json.loads(raw))
                        owner.times.append(time.monotonic())
                        owner.headers.append(dict(self.headers.items()))
                        status = 200
                self.send_response(status)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.port = free_port()
        self.server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hook"

    def records(self) -> list[dict[str, Any]]:
        with self.lock:
            return [record for body in self.bodies for record in body]

    def __enter__(self) -> Webhook:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()
