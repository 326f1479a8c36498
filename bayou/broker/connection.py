"""One Kafka client connection: frames in, handlers run, responses out in request order.

Theory of operation
-------------------
``KafkaConnection`` is an ``asyncio.Protocol``.  ``data_received`` appends to a buffer and cuts
it into size-prefixed frames; each frame's header is decoded at once (so a bad frame closes
the connection before anything else of it is read) and its handler runs as a task.  Clients
may pipeline: responses must leave in request order, so tasks queue in ``_inflight`` and a
finished task's response is written only when every earlier one has been.

Bad input — a negative or oversized length, an undecodable header or body, an API or version
we do not serve — closes this connection with one log line; nothing else is affected.  A
client that sends half a frame and stalls only holds its own buffer.

Flow control: reading pauses while too many requests are in flight or while the transport's
write buffer is over its high-water mark, and resumes when both drain.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from typing import Any

from bayou.broker.context import BrokerState, RequestContext
from bayou.broker.handlers import HANDLERS
from bayou.broker.handlers.api_versions import unsupported_version_response
from bayou.errors import ProtocolViolation
from bayou.protocol.kafka import (
    RequestHeader,
    UnsupportedVersionError,
    decode_request_body,
    decode_request_header,
    encode_response_parts,
)

log = logging.getLogger(__name__)

# An encoded response frame as the pieces to write (large fetched batches are pieces of their
# own, never copied into the frame buffer), or None for "no response".
Payload = list[bytes | bytearray | memoryview] | None

MAX_INFLIGHT = 128
RESUME_INFLIGHT = 32
API_VERSIONS = 18


class KafkaConnection(asyncio.Protocol):
    def __init__(self, broker: BrokerState, connections: set[KafkaConnection]) -> None:
        self.broker = broker
        self._connections = connections
        self._max_frame = broker.config.socket_request_max_bytes
        self._buf = bytearray()
        self._inflight: deque[asyncio.Task[Payload]] = deque()
        self._transport: asyncio.Transport | None = None
        self._peer = "?"
        self._closing = False
        self._write_paused = False
        self._read_paused = False

    # -- asyncio.Protocol -------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = transport  # type: ignore[assignment]  # uvloop's is no subclass
        peer = transport.get_extra_info("peername")
        self._peer = f"{peer[0]}:{peer[1]}" if isinstance(peer, tuple) else str(peer)
        self._connections.add(self)

    def connection_lost(self, exc: Exception | None) -> None:
        self._closing = True
        self._connections.discard(self)
        for task in self._inflight:
            task.cancel()
        self._inflight.clear()

    def pause_writing(self) -> None:
        self._write_paused = True
        self._update_reading()

    def resume_writing(self) -> None:
        self._write_paused = False
        self._update_reading()

    def data_received(self, data: bytes) -> None:
        buf = self._buf
        buf += data
        pos = 0
        end = len(buf)
        while end - pos >= 4 and not self._closing:
            size = int.from_bytes(buf[pos : pos + 4], "big", signed=True)
            if size < 0 or size > self._max_frame:
                self._violation(f"frame length {size} outside 0..{self._max_frame}")
                return
            if end - pos - 4 < size:
                break
            with memoryview(buf) as view:  # one copy of the frame, and the view released
                frame = bytes(view[pos + 4 : pos + 4 + size])
            pos += 4 + size
            self._dispatch(frame)
        if pos:
            del buf[:pos]

    # -- requests ---------------------------------------------------------------------------

    def _dispatch(self, frame: bytes) -> None:
        view = memoryview(frame)
        try:
            header, offset = decode_request_header(view)
        except UnsupportedVersionError as exc:
            if exc.header.api_key == API_VERSIONS:
                self._answer_unsupported_api_versions(exc.header)
            else:
                self._violation(str(exc))
            return
        except ProtocolViolation as exc:
            self._violation(f"bad request header: {exc}")
            return
        registration = HANDLERS.get(header.api_key)
        if (
            header.api_key == API_VERSIONS
            and registration is not None
            and (header.api_version > registration.max_version)
        ):
            self._answer_unsupported_api_versions(header)
            return
        if registration is None or not (
            registration.advertised_min <= header.api_version <= registration.max_version
        ):
            self._violation(
                f"unsupported API {header.api_key} v{header.api_version}"
                f" from client {header.client_id!r}"
            )
            return
        try:
            request = decode_request_body(header, view, offset)
        except ProtocolViolation as exc:
            self._violation(f"malformed API {header.api_key} v{header.api_version} body: {exc}")
            return
        context = RequestContext(self.broker, header, self._peer)
        task = asyncio.ensure_future(self._serve(context, registration.handler, request))
        self._inflight.append(task)
        task.add_done_callback(self._on_done)
        self._update_reading()

    def _answer_unsupported_api_versions(self, header: RequestHeader) -> None:
        """A too-new ApiVersions gets UNSUPPORTED_VERSION and our ranges in a v0 body."""
        v0 = RequestHeader(API_VERSIONS, 0, header.correlation_id, header.client_id)
        self._queue_ready(encode_response_parts(v0, unsupported_version_response()))

    async def _serve(self, context: RequestContext, handler: Any, request: Any) -> Payload:
        response = await handler(context, request)
        if response is None:  # e.g. Produce with acks=0
            return None
        return encode_response_parts(context.header, response)

    def _queue_ready(self, payload: list[bytes | bytearray | memoryview]) -> None:
        future: asyncio.Future[Payload] = asyncio.get_running_loop().create_future()
        future.set_result(payload)
        self._inflight.append(future)  # type: ignore[arg-type]
        self._on_done(future)

    def _on_done(self, _task: asyncio.Future[Payload]) -> None:
        inflight = self._inflight
        transport = self._transport
        while inflight and inflight[0].done():
            task = inflight.popleft()
            if task.cancelled():
                continue
            exc = task.exception()
            if exc is not None:
                log.error(
                    "closing connection from %s: request failed: %r",
                    self._peer,
                    exc,
                    exc_info=exc,
                )
                self._close()
                return
            payload = task.result()
            if payload is not None and transport is not None and not self._closing:
                transport.writelines(payload)
        self._update_reading()

    # -- flow control and closing -----------------------------------------------------------

    def _update_reading(self) -> None:
        transport = self._transport
        if transport is None or self._closing:
            return
        busy = self._write_paused or len(self._inflight) >= MAX_INFLIGHT
        if busy and not self._read_paused:
            transport.pause_reading()
            self._read_paused = True
        elif (
            self._read_paused and not self._write_paused and len(self._inflight) <= RESUME_INFLIGHT
        ):
            transport.resume_reading()
            self._read_paused = False

    def _violation(self, why: str) -> None:
        log.warning("closing connection from %s: %s", self._peer, why)
        self._close()

    def _close(self) -> None:
        if self._closing:
            return
        self._closing = True
        if self._transport is not None:
            self._transport.close()

    async def finish(self, timeout_s: float) -> None:
        """Graceful shutdown: let in-flight requests answer, then close."""
        pending = [t for t in self._inflight if not t.done()]
        if pending:
            await asyncio.wait(pending, timeout=timeout_s)
        self._close()
