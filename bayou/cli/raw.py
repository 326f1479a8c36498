"""One Kafka request over one short-lived socket, with Bayou's own codec.

For the admin APIs the confluent-kafka client the CLI uses does not offer (ListTransactions,
DescribeTransactions, FindCoordinator for a transactional id, Describe/AlterClientQuotas).
With ``security`` the socket is TLS (trusting the given CA) and logs in first: SaslHandshake
v1 and SaslAuthenticate v1 with PLAIN or SCRAM (``bayou.core.security.scram.ScramClient``),
as ``--tls-ca`` and ``--sasl-user`` ask.  Errors are ``OSError`` (no answer, a closed
connection, a refused login) or ``ValueError`` (an answer the codec cannot read).
"""

from __future__ import annotations

import socket
import ssl
import struct
from dataclasses import dataclass
from typing import Any

from bayou.core.security.scram import MECHANISMS, ScramClient, ScramError
from bayou.errors import BayouError, ErrorCode
from bayou.protocol.kafka import RequestHeader, decode_response, encode_request
from bayou.protocol.kafka import messages as m

CLIENT_ID = "bayou-cli"
SASL_HANDSHAKE, SASL_AUTHENTICATE = 17, 36


@dataclass(frozen=True)
class RawSecurity:
    """How to reach a secured listener: a CA to trust (TLS) and a SASL login."""

    tls_ca: str | None = None
    user: str | None = None
    password: str = ""
    mechanism: str = "SCRAM-SHA-512"


def call(
    host: str,
    port: int,
    api_key: int,
    version: int,
    request: Any,
    timeout: float,
    security: RawSecurity | None = None,
) -> Any:
    """Send ``request`` at ``version`` to ``host:port``; the decoded response."""
    with socket.create_connection((host, port), timeout=timeout) as plain:
        sock: socket.socket = plain
        if security is not None and security.tls_ca is not None:
            context = ssl.create_default_context(cafile=security.tls_ca)
            sock = context.wrap_socket(plain, server_hostname=host)
        try:
            correlation = 1
            if security is not None and security.user is not None:
                correlation = _login(sock, security)
            return _exchange(sock, correlation, api_key, version, request)
        finally:
            if sock is not plain:
                sock.close()


def _exchange(
    sock: socket.socket, correlation: int, api_key: int, version: int, request: Any
) -> Any:
    sock.sendall(encode_request(RequestHeader(api_key, version, correlation, CLIENT_ID), request))
    (size,) = struct.unpack(">i", _read_exactly(sock, 4))
    try:
        _header, response = decode_response(api_key, version, _read_exactly(sock, size))
    except BayouError as exc:
        raise ValueError(str(exc)) from exc
    return response


def _login(sock: socket.socket, security: RawSecurity) -> int:
    """SASL on ``sock``; the next correlation id."""
    assert security.user is not None
    mechanism = security.mechanism
    answer = _exchange(sock, 1, SASL_HANDSHAKE, 1, m.SaslHandshakeRequest(mechanism=mechanism))
    if answer.error_code != ErrorCode.NONE:
        raise OSError(f"the broker does not take SASL {mechanism}")

    def authenticate(correlation: int, payload: bytes) -> bytes:
        request = m.SaslAuthenticateRequest(auth_bytes=payload)
        answer = _exchange(sock, correlation, SASL_AUTHENTICATE, 1, request)
        if answer.error_code != ErrorCode.NONE:
            raise OSError(f"login refused: {answer.error_message or 'authentication failed'}")
        return bytes(answer.auth_bytes)

    user, password = security.user.encode(), security.password.encode()
    if mechanism == "PLAIN":
        authenticate(2, b"\0" + user + b"\0" + password)
        return 3
    scram = ScramClient(MECHANISMS[mechanism], security.user, password)
    try:
        server_first = authenticate(2, scram.first())
        scram.verify(authenticate(3, scram.final(server_first)))
    except ScramError as exc:
        raise OSError(f"login failed: {exc}") from None
    return 4


def _read_exactly(sock: socket.socket, n: int) -> bytes:
    chunks = []
    while n > 0:
        chunk = sock.recv(min(n, 1 << 20))
        if not chunk:
            raise ConnectionError("the broker closed the connection")
        chunks.append(chunk)
        n -= len(chunk)
    return b"".join(chunks)
