"""Request/response headers, the API registry and the codec's public entry points.

Theory of operation
-------------------
A Kafka frame is ``size:int32`` + header + body. The broker strips the size and hands the rest
to ``decode_request_header``, which reads api_key/api_version/correlation_id (always the first
8 bytes), looks the API up in ``API_KEYS`` to learn whether that version is flexible (request
header v2: client_id + tagged fields) or not (v1: client_id only), and returns where the body
starts. ``decode_request_body`` then runs the generated decoder for exactly that version and
insists the body ends where the frame ends.

Every malformation surfaces as ``bayou.errors.ProtocolViolation``: the generated decoders check
lengths themselves, and the rest (reads past the end via ``struct``/indexing, bad UTF-8) is
translated here, once per frame, so the hot loop carries no extra checks. Unknown APIs and
versions raise ``UnsupportedApi``/``UnsupportedVersionError`` with the header attached so the
broker can still answer (ApiVersions answers a too-new version with UNSUPPORTED_VERSION in a v0
body; its header is then parsed as v1, which every ApiVersions version can be read as).

Responses use header v0 (correlation id) or v1 (+ tagged fields) when the response version is
flexible — except ApiVersions, whose response header is always v0 so a client can read it
before knowing what the broker speaks.
"""

from __future__ import annotations

import contextlib
import struct
from dataclasses import dataclass
from typing import Any

from bayou.errors import ProtocolViolation
from bayou.protocol.kafka.messages import DATA_MESSAGES, MESSAGES
from bayou.protocol.kafka.primitives import (
    I16,
    I32,
    ApiMessage,
    Piece,
    ScatterBuffer,
    nbytes,
    r_nstr,
    skip_tags,
    w_nstr,
)

API_VERSIONS_KEY = 18
_HEAD = struct.Struct(">hhi")
_DECODE_ERRORS = (struct.error, IndexError, ValueError, TypeError, OverflowError)


@dataclass(slots=True)
class RequestHeader:
    api_key: int
    api_version: int
    correlation_id: int
    client_id: str | None = None


@dataclass(frozen=True, slots=True)
class ApiInfo:
    """What the codec knows about one API key."""

    api_key: int
    name: str
    request: type[ApiMessage]
    response: type[ApiMessage]
    min_version: int
    max_version: int
    flexible_from: int | None

    def is_flexible(self, version: int) -> bool:
        return self.flexible_from is not None and version >= self.flexible_from


API_KEYS: dict[int, ApiInfo] = {
    key: ApiInfo(
        api_key=key,
        name=req.NAME.removesuffix("Request"),
        request=req,
        response=resp,
        min_version=req.MIN_VERSION,
        max_version=req.MAX_VERSION,
        flexible_from=req.FLEXIBLE_FROM,
    )
    for key, (req, resp) in MESSAGES.items()
}
DATA: dict[str, type[ApiMessage]] = {m.NAME: m for m in DATA_MESSAGES}


class UnsupportedApi(ProtocolViolation):
    """The request's API key is not one the codec knows."""

    def __init__(self, header: RequestHeader) -> None:
        super().__init__(f"unsupported API key {header.api_key}")
        self.header = header


class UnsupportedVersionError(ProtocolViolation):
    """The request's API version is outside what the codec knows for that API."""

    def __init__(self, header: RequestHeader) -> None:
        super().__init__(f"unsupported version {header.api_version} of API {header.api_key}")
        self.header = header


def _malformed(exc: Exception) -> ProtocolViolation:
    return ProtocolViolation(f"malformed frame: {type(exc).__name__}: {exc}")


# ---------------------------------------------------------------- requests (broker side)


def decode_request_header(frame: memoryview) -> tuple[RequestHeader, int]:
    """Parse the request header of ``frame`` (no size prefix); return it and the body offset."""
    if len(frame) < 8:
        raise ProtocolViolation(f"request frame of {len(frame)} bytes is shorter than a header")
    api_key, api_version, correlation_id = _HEAD.unpack_from(frame, 0)
    header = RequestHeader(api_key, api_version, correlation_id)
    info = API_KEYS.get(api_key)
    supported = info is not None and info.min_version <= api_version <= info.max_version
    if not supported and api_key != API_VERSIONS_KEY:
        with contextlib.suppress(*_DECODE_ERRORS):
            header.client_id, _ = r_nstr(frame, 8)
        raise UnsupportedApi(header) if info is None else UnsupportedVersionError(header)
    try:
        header.client_id, pos = r_nstr(frame, 8)
        if not supported:
            raise UnsupportedVersionError(header)
        if info is not None and info.is_flexible(api_version):
            pos = skip_tags(frame, pos)
    except _DECODE_ERRORS as exc:
        raise _malformed(exc) from exc
    return header, pos


def decode_request_body(header: RequestHeader, frame: memoryview, offset: int) -> Any:
    """Decode the request body that starts at ``offset`` of ``frame``."""
    info = API_KEYS.get(header.api_key)
    if info is None:
        raise UnsupportedApi(header)
    if not info.min_version <= header.api_version <= info.max_version:
        raise UnsupportedVersionError(header)
    try:
        message, end = info.request.DECODERS[header.api_version](frame, offset)
    except _DECODE_ERRORS as exc:
        raise _malformed(exc) from exc
    # Bytes after the body are ignored, as Kafka's broker ignores them: librdkafka writes
    # Metadata's IncludeClusterAuthorizedOperations at v11+ too, after it was removed.
    del end
    return message


def encode_response(header: RequestHeader, response: ApiMessage) -> bytes:
    """The whole response frame (size prefix, response header, body) at the request's version."""
    out = bytearray()
    for part in encode_response_parts(header, response):
        if not isinstance(part, bytes | bytearray | memoryview):
            raise TypeError("a response with deferred records needs encode_response_parts")
        out += part
    return bytes(out)


def encode_response_parts(header: RequestHeader, response: ApiMessage) -> list[Piece]:
    """The response frame as pieces to write in order.

    Large ``records`` values (fetched batches) and every ``DeferredRecords`` are pieces of
    their own rather than copied into the frame buffer; everything else is one buffer.
    Joined (a ``DeferredRecords`` standing for its bytes), the pieces are the frame.
    """
    version = header.api_version
    out = ScatterBuffer(8)
    I32.pack_into(out, 4, header.correlation_id)
    if response.is_flexible(version) and header.api_key != API_VERSIONS_KEY:
        out.append(0)
    if not response.MIN_VERSION <= version <= response.MAX_VERSION:
        raise ValueError(f"{response.NAME} has no version {version}")
    response.ENCODERS[version](response, out)
    deferred = out.deferred
    size = len(out) - 4 + sum(nbytes(b) for _, b in deferred)
    I32.pack_into(out, 0, size)
    if not deferred:
        return [out]
    view = memoryview(out)
    parts: list[Piece] = []
    start = 0
    for position, value in deferred:
        parts.append(view[start:position])
        parts.append(value)
        start = position
    parts.append(view[start:])
    return parts


# ---------------------------------------------------------------- client side (tests, tools)


def encode_request(header: RequestHeader, request: ApiMessage) -> bytes:
    """The whole request frame (size prefix, request header v1/v2, body)."""
    version = header.api_version
    out = bytearray(4)
    out += _HEAD.pack(header.api_key, version, header.correlation_id)
    w_nstr(out, header.client_id)
    if request.is_flexible(version):
        out.append(0)
    if not request.MIN_VERSION <= version <= request.MAX_VERSION:
        raise ValueError(f"{request.NAME} has no version {version}")
    request.ENCODERS[version](request, out)
    I32.pack_into(out, 0, len(out) - 4)
    return bytes(out)


def decode_response(api_key: int, api_version: int, frame: memoryview | bytes) -> tuple[int, Any]:
    """Decode a response frame (no size prefix): return (correlation_id, response)."""
    buf = memoryview(frame)
    info = API_KEYS.get(api_key)
    if info is None:
        raise UnsupportedApi(RequestHeader(api_key, api_version, -1))
    if not info.min_version <= api_version <= info.max_version:
        raise UnsupportedVersionError(RequestHeader(api_key, api_version, -1))
    try:
        correlation_id = I32.unpack_from(buf, 0)[0]
        pos = 4
        if info.is_flexible(api_version) and api_key != API_VERSIONS_KEY:
            pos = skip_tags(buf, pos)
        message, end = info.response.DECODERS[api_version](buf, pos)
    except _DECODE_ERRORS as exc:
        raise _malformed(exc) from exc
    if end != len(buf):
        raise ProtocolViolation(f"{len(buf) - end} bytes of trailing garbage in response")
    return correlation_id, message


def decode_data(cls: type[ApiMessage], data: bytes | memoryview) -> tuple[int, Any]:
    """Decode a versioned data struct (e.g. ConsumerProtocolSubscription): int16 version + body.

    A version newer than known is decoded as the newest known one (Kafka's rule for the
    consumer protocol: newer versions only append fields); trailing bytes are then ignored.
    """
    buf = memoryview(data)
    try:
        version = I16.unpack_from(buf, 0)[0]
        if version < cls.MIN_VERSION:
            raise ProtocolViolation(f"{cls.NAME} version {version} is not supported")
        known = min(version, cls.MAX_VERSION)
        message, end = cls.DECODERS[known](buf, 2)
    except _DECODE_ERRORS as exc:
        raise _malformed(exc) from exc
    if end != len(buf) and version == known:
        raise ProtocolViolation(f"trailing garbage after {cls.NAME}")
    return version, message


def encode_data(message: ApiMessage, version: int) -> bytes:
    """A versioned data struct: int16 version + body."""
    return I16.pack(version) + message.encode_body(version)
