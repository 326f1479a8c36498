"""One Kafka request over one short-lived socket, with Bayou's own codec.

For the admin APIs the confluent-kafka client the CLI uses does not offer (ListTransactions,
DescribeTransactions, FindCoordinator for a transactional id).  Errors are ``OSError`` (no
answer, a closed connection) or ``ValueError`` (an answer the codec cannot read).
"""

from __future__ import annotations

import socket
import struct
from typing import Any

from bayou.errors import BayouError
from bayou.protocol.kafka import RequestHeader, decode_response, encode_request

CLIENT_ID = "bayou-cli"


def call(host: str, port: int, api_key: int, version: int, request: Any, timeout: float) -> Any:
    """Send ``request`` at ``version`` to ``host:port``; the decoded response."""
    frame = encode_request(RequestHeader(api_key, version, 1, CLIENT_ID), request)
    with socket.create_connection((host, port), timeout=timeout) as sock:
        sock.sendall(frame)
        (size,) = struct.unpack(">i", _read_exactly(sock, 4))
        try:
            _header, response = decode_response(api_key, version, _read_exactly(sock, size))
        except BayouError as exc:
            raise ValueError(str(exc)) from exc
    return response


def _read_exactly(sock: socket.socket, n: int) -> bytes:
    chunks = []
    while n > 0:
        chunk = sock.recv(min(n, 1 << 20))
        if not chunk:
            raise ConnectionError("the broker closed the connection")
        chunks.append(chunk)
        n -= len(chunk)
    return b"".join(chunks)
