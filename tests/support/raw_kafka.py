"""A raw Kafka client over a plain socket, for requests no client library sends as a test
needs them (hand-built batches, huge ``max_bytes``): Bayou's codec encodes the request and
decodes the response."""

from __future__ import annotations

import socket
import struct
from typing import Any

from bayou.protocol.kafka import ApiMessage, RequestHeader, decode_response, encode_request

TIMEOUT_S = 30.0


class RawKafka:
    """One connection; ``call`` sends a request and returns the decoded response."""

    def __init__(self, bootstrap: str, timeout: float = TIMEOUT_S) -> None:
        host, port = bootstrap.rsplit(":", 1)
        self.sock = socket.create_connection((host, int(port)), timeout=timeout)
        self._correlation = 0

    def __enter__(self) -> RawKafka:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()

    def close(self) -> None:
        self.sock.close()

    def send(self, api_key: int, version: int, request: ApiMessage) -> int:
        self._correlation += 1
        header = RequestHeader(api_key, version, self._correlation, "raw-test")
        self.sock.sendall(encode_request(header, request))
        return self._correlation

    def send_at_once(self, requests: list[tuple[int, int, ApiMessage]]) -> None:
        """Send (api key, version, request)s in one write (a broker reads them together)."""
        frames = []
        for api_key, version, request in requests:
            self._correlation += 1
            header = RequestHeader(api_key, version, self._correlation, "raw-test")
            frames.append(encode_request(header, request))
        self.sock.sendall(b"".join(frames))

    def receive_frame(self) -> bytes:
        size = struct.unpack(">i", self._read_exactly(4))[0]
        return self._read_exactly(size)

    def receive(self, api_key: int, version: int) -> Any:
        _correlation, response = decode_response(api_key, version, self.receive_frame())
        return response

    def call(self, api_key: int, version: int, request: ApiMessage) -> Any:
        self.send(api_key, version, request)
        return self.receive(api_key, version)

    def _read_exactly(self, n: int) -> bytes:
        buf = bytearray()
        while len(buf) < n:
            chunk = self.sock.recv(min(n - len(buf), 1 << 20))
            if not chunk:
                raise ConnectionError(f"connection closed after {len(buf)} of {n} bytes")
            buf += chunk
        return bytes(buf)
