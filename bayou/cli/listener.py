"""Is the bootstrap address a Kafka listener?  One ApiVersions round trip tells.

Pointed at Bayou's HTTP, MQTT or AMQP port by mistake, librdkafka only reports a transport
failure after its retries.  Before building a client the CLI sends an ApiVersions v0 request
(which every Kafka broker answers, whatever its version) and looks at the first bytes back:

- a Kafka frame (a plausible size, then our correlation id): a Kafka listener;
- ``HTTP/…`` or ``AMQP…`` (the AMQP protocol header a server sends back to a wrong one): that
  protocol;
- the connection closed without a byte: MQTT servers do that to a first packet that is not
  CONNECT, so an MQTT CONNECT is tried on a second connection, and a CONNACK says MQTT;
  otherwise "closed without answering" (a TLS listener does that too);
- nothing within the wait: no verdict (a slow broker is left to the usual timeouts).

``answer_protocol`` is the pure part: bytes in, a description out.
"""

from __future__ import annotations

import contextlib
import socket
import struct

from bayou.protocol.kafka import RequestHeader, encode_request
from bayou.protocol.kafka import messages as m

API_VERSIONS = 18
CORRELATION_ID = 0x5EED
MAX_FRAME = 100 * 1024 * 1024
PEEK_BYTES = 8
# MQTT 3.1.1 CONNECT: clean session, keep-alive 0, client id "bayou-cli"; then DISCONNECT.
MQTT_CONNECT = b"\x10\x15\x00\x04MQTT\x04\x02\x00\x00\x00\x09bayou-cli"
MQTT_CONNACK = b"\x20\x02\x00\x00"  # type, length, flags, return code (any code will do)
MQTT_DISCONNECT = b"\xe0\x00"


def api_versions_request() -> bytes:
    return encode_request(
        RequestHeader(API_VERSIONS, 0, CORRELATION_ID, "bayou-cli"), m.ApiVersionsRequest()
    )


def answer_protocol(first: bytes) -> str | None:
    """None for the start of a Kafka answer to ``api_versions_request``; else what it is."""
    if len(first) >= PEEK_BYTES:
        size, correlation_id = struct.unpack_from(">ii", first)
        if 4 <= size <= MAX_FRAME and correlation_id == CORRELATION_ID:
            return None
    if first.startswith(b"HTTP/"):
        return "answers in HTTP"
    if first.startswith(b"AMQP"):
        return "answers in AMQP"
    if not first:
        return "closed the connection without answering a Kafka request"
    return "gave an answer that is not Kafka's"


def not_kafka(host: str, port: int, timeout: float) -> str | None:
    """What the listener at ``host:port`` did when it is not Kafka ("answers in HTTP"); None
    when it is Kafka, or when it cannot be told (refused, or silent within ``timeout``)."""
    try:
        first = _exchange(host, port, api_versions_request(), timeout)
    except OSError:
        return None
    if first is None:
        return None
    verdict = answer_protocol(first)
    if verdict is not None and not first:
        try:
            connack = _exchange(
                host, port, MQTT_CONNECT, timeout, want=len(MQTT_CONNACK), then=MQTT_DISCONNECT
            )
        except OSError:
            connack = None
        if connack is not None and connack[:2] == MQTT_CONNACK[:2]:
            return "answers in MQTT"
    return verdict


def _exchange(
    host: str,
    port: int,
    request: bytes,
    timeout: float,
    *,
    want: int = PEEK_BYTES,
    then: bytes = b"",
) -> bytes | None:
    """Send ``request``; the first ``want`` bytes back (fewer when the peer closes first,
    b"" when it closed without a byte), None on silence; then send ``then``."""
    with socket.create_connection((host, port), timeout=timeout) as sock:
        sock.sendall(request)
        got = b""
        try:
            while len(got) < want:
                chunk = sock.recv(want - len(got))
                if not chunk:
                    break
                got += chunk
        except TimeoutError:
            if not got:
                return None
        except ConnectionResetError:
            pass
        if then and got:
            with contextlib.suppress(OSError):
                sock.sendall(then)
        return got
