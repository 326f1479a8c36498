"""One Kafka client connection: frames in, handlers run, responses out in request order.

Theory of operation
-------------------
``KafkaConnection`` is an ``asyncio.BufferedProtocol``: the socket reads into a
``FrameReader`` (``frames.py``: small frames through a staging buffer, a large one straight
into its own ``bytearray``), which cuts the stream into size-prefixed frames; each frame's
header is decoded at once (so a bad frame closes the connection before anything else of it
is read) and its handler runs as a task.  Clients
may pipeline: responses must leave in request order, so tasks queue in ``_inflight`` and a
finished task's response is written only when every earlier one has been; the responses
due at one time go out in one write.

A Produce is served eagerly (``eager.py``) when no earlier request of the connection is
still being served and the broker is not in a cluster: its handler runs inside the read
until it first has to wait — with the local engine and no fsync due, to its answer, which
leaves with the read's other answers once the read's frames are dispatched (no task, and
two turns of the loop fewer before the acknowledgement: produce→ack p50 0.71 → 0.51 ms at
5,000 single-record requests a second).  One that does wait goes on as a task.  Only
Produce, and only outside a cluster: there its path reaches no ``asyncio.timeout`` before
its first wait, which outside a task would fail.

Responses go out through a ``ResponseStream``, which writes fetched records from the log
files in chunks as the socket drains, so a large Fetch response is never held whole.

Bad input — a negative or oversized length, an undecodable header or body, an API or version
we do not serve — closes this connection, nothing else.  The line logged for it is rate
limited per peer host (``RateLimitedLog``: an old client reconnecting in a loop gets one
line a minute, not ten a second).  The close is polite: pending responses are flushed, the
write side shut down (FIN), and what the client still sends is read and dropped for up to
``DRAIN_TIMEOUT_S`` (``DRAIN_MAX_BYTES`` at most) before the socket closes — closing with
unread bytes in the kernel would make it answer with a reset, and the client would lose what
it had not read yet.

Request bytes: every unfinished frame is accounted in the broker-wide ``RequestBudget``
(``queued.max.request.bytes``).  A frame of 1 MiB or more reserves its size before more of it
is read; when the budget cannot grant it, reading this connection pauses until it can.  An
unfinished frame that makes no progress for ``request_stall_timeout_ms`` closes the
connection.

Who the client is: a ``ClientSession`` per connection (``session.py``): before a login only
ApiVersions and the SASL requests are served, and with an authorizer every request is
checked against the ACLs first (``acl_checks.py``).

Quotas (``throttling.py``): while some client quota is set, a request of a client that has
one is served by ``_serve_throttled``: what it used is recorded, the response carries the
throttle time and the connection is muted — nothing more is read — for that long.  A new
connection from an address over its connection rate is held unread and closed
(``gateways/admission.py``).

Flow control: reading pauses while too many requests are in flight or queued for writing,
while the transport's write buffer is over its high-water mark, while the request budget
holds this connection back, or while a quota mutes it, and resumes when all of them allow.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Callable
from typing import Any

from bayou.buffer_pool import BufferPool
from bayou.errors import ProtocolViolation
from bayou.gateways.admission import admit
from bayou.gateways.kafka.acl_checks import checked
from bayou.gateways.kafka.context import Listener, RequestContext
from bayou.gateways.kafka.eager import start_eagerly
from bayou.gateways.kafka.frames import FrameReader
from bayou.gateways.kafka.handlers import HANDLERS
from bayou.gateways.kafka.handlers.api_versions import unsupported_version_response
from bayou.gateways.kafka.placement import placing
from bayou.gateways.kafka.response_stream import ResponseStream, close_records
from bayou.gateways.kafka.session import SASL_MAX_RECEIVE, ClientSession
from bayou.gateways.kafka.throttling import EXEMPT, PRODUCE, TimedAwait, set_throttle
from bayou.gateways.pacing import ConnectionQuota
from bayou.log_limits import RateLimitedLog
from bayou.protocol.kafka import (
    API_KEYS,
    RequestHeader,
    UnsupportedVersionError,
    decode_request_body,
    decode_request_header,
    encode_response_parts,
)
from bayou.protocol.kafka.primitives import Piece

log = logging.getLogger(__name__)
bad_input_log = RateLimitedLog(log)  # keyed by peer host: one line per source a minute

# An encoded response frame as the pieces to write (fetched batches are pieces of their own,
# often still in the log files), or None for "no response".
Payload = list[Piece] | None


def api_name(key: int) -> str:
    """The API's name (``Produce``), the ``request`` label of the request metrics."""
    info = API_KEYS.get(key)
    return info.name if info is not None else str(key)


MAX_INFLIGHT = 128
RESUME_INFLIGHT = 32
API_VERSIONS = 18
DRAIN_TIMEOUT_S = 5.0
DRAIN_MAX_BYTES = 16 * 1024 * 1024


class KafkaConnection(asyncio.BufferedProtocol):
    def __init__(
        self, door: Listener, connections: set[KafkaConnection], frame_pool: BufferPool
    ) -> None:
        self.door = door
        self._connections = connections
        self._max_frame = door.settings.socket_request_max_bytes
        self._frames = FrameReader(frame_pool)
        self._inflight: deque[asyncio.Future[Payload]] = deque()
        self._transport: asyncio.Transport | None = None
        self._out: ResponseStream | None = None
        self._peer = "?"
        self._peer_host = "?"
        self._closing = False
        self._draining = False  # closing politely: what arrives is read and dropped
        self._eof_sent = False
        self._client_done = False  # the client's end of stream came during a polite close
        self._drained = 0
        self._write_paused = False
        self._read_paused = False
        self._budget_paused = False
        self._budget = door.core.request_budget.account(self._budget_resumed, self._stalled)
        self.session: ClientSession | None = None
        self._fetch_positions: dict[tuple[str, int], int] = {}
        self._traffic = door.core.metrics.door("kafka")
        self._quotas = door.core.quotas
        self._quota = ConnectionQuota(self._quotas)
        self._muted_until = 0.0  # loop time; a quota mutes the connection until then
        self._unmute: asyncio.TimerHandle | None = None
        self._unmuted_event = asyncio.Event()
        self._unmuted_event.set()
        self._quota_tail: asyncio.Future[Payload] | None = None  # last request with a quota
        self._close_callbacks: list[Callable[[], None]] = []
        self._tasks = 0  # requests being served by a task
        self._answered = False  # a request of this read was answered at once: send it

    # -- asyncio.Protocol -------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        if not admit(self._quotas, transport, "kafka"):
            self._closing = True
            return
        self._transport = transport  # type: ignore[assignment]  # uvloop's is no subclass
        assert self._transport is not None
        self._out = ResponseStream(self._transport, self._send_failed, self._update_reading)
        peer = transport.get_extra_info("peername")
        self._peer = f"{peer[0]}:{peer[1]}" if isinstance(peer, tuple) else str(peer)
        self._peer_host = str(peer[0]) if isinstance(peer, tuple) else str(peer)
        security = self.door.core.security
        cert = security.certificate_principal(transport.get_extra_info("ssl_object"))
        self.session = ClientSession(security, self._peer_host, tls=self.door.tls, cert=cert)
        self._connections.add(self)

    def on_close(self, callback: Callable[[], None]) -> None:
        """Run ``callback`` when the connection closes (share sessions release records)."""
        if self._closing:
            callback()
        else:
            self._close_callbacks.append(callback)

    def connection_lost(self, exc: Exception | None) -> None:
        self._closing = True
        self._connections.discard(self)
        callbacks, self._close_callbacks = self._close_callbacks, []
        for callback in callbacks:
            try:
                callback()
            except Exception:
                log.exception("a close callback of the connection from %s failed", self._peer)
        self._budget.close()
        if self._unmute is not None:
            self._unmute.cancel()
            self._unmute = None
            self._unmuted_event.set()
        if self._out is not None:
            self._out.close()
        for task in self._inflight:
            if task.done() and not task.cancelled() and task.exception() is None:
                close_records(task.result())  # answered, never sent
            task.cancel()
        self._inflight.clear()

    def pause_writing(self) -> None:
        self._write_paused = True
        if self._out is not None:
            self._out.pause_writing()
        self._update_reading()

    def resume_writing(self) -> None:
        self._write_paused = False
        if self._out is not None:
            self._out.resume_writing()
        self._update_reading()

    def get_buffer(self, sizehint: int) -> memoryview:
        if self._draining or self._transport is None:
            return self._frames.discard()
        return self._frames.buffer()

    def buffer_updated(self, nbytes: int) -> None:
        if self._transport is None:  # refused (connection rate): held unread, then closed
            return
        if self._draining:
            self._drained += nbytes
            if self._drained > DRAIN_MAX_BYTES and self._transport is not None:
                self._transport.close()
            return
        frames = self._frames
        frames.received(nbytes)
        try:
            while not (self._closing or self._draining):
                size = frames.next_size()
                if size is None:
                    break
                limit = self._max_frame
                if self.session is not None and not self.session.authenticated:
                    limit = min(limit, SASL_MAX_RECEIVE)  # Kafka's sasl.server.max.receive.size
                if size < 0 or size > limit:
                    self._violation(f"frame length {size} outside 0..{limit}")
                    return
                frame = frames.take()
                if frame is None:
                    break
                self._dispatch(frame)
        finally:
            if self._answered:  # the answers of this read's eagerly served requests
                self._answered = False
                self._on_done(None)
        if self._draining:
            return  # bad input met: what was buffered is dropped
        account = self._budget
        held = frames.held
        if (
            (held or account.held)
            and not self._closing
            and not account.update(held, frames.expected)
        ):
            self._budget_paused = True
            self._update_reading()

    def eof_received(self) -> bool | None:
        """The client is done sending: close — but a polite close first writes the answers
        still due (``_finish_politely`` closes then)."""
        if self._draining and not self._eof_sent:
            self._client_done = True
            return True
        return None

    # -- requests ---------------------------------------------------------------------------

    def _dispatch(self, frame: memoryview) -> None:
        started = time.perf_counter() if self._quotas.active else 0.0
        view = frame
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
        session = self.session
        assert session is not None
        refused = session.refusal(header.api_key)
        if refused is not None:
            self._violation(refused)
            return
        try:
            request = decode_request_body(header, view, offset)
        except ProtocolViolation as exc:
            self._violation(f"malformed API {header.api_key} v{header.api_version} body: {exc}")
            return
        context = RequestContext(
            self.door, header, self._peer, session, self, self._fetch_positions
        )
        if started and session.principal is not None and header.api_key not in EXEMPT:
            context.quota = self._quota.get(session.principal, header.client_id)
        loop = asyncio.get_running_loop()
        if context.quota is None:
            serving = self._serve(context, registration.handler, request)
            if header.api_key == PRODUCE and not self._tasks and not self.door.core.cluster.shared:
                task = start_eagerly(serving, loop)
                if task.done():
                    self._queue_done(task)
                    return
            else:
                task = loop.create_task(serving)
        else:
            work = self._serve_throttled(
                context,
                registration.handler,
                request,
                len(frame),
                time.perf_counter() - started,
                self._quota_tail,
            )
            task = self._quota_tail = loop.create_task(work)
        self._inflight.append(task)
        self._tasks += 1
        task.add_done_callback(self._task_done)
        self._update_reading()

    def _task_done(self, task: asyncio.Future[Payload]) -> None:
        self._tasks -= 1
        self._on_done(task)

    def _answer_unsupported_api_versions(self, header: RequestHeader) -> None:
        """A too-new ApiVersions gets UNSUPPORTED_VERSION and our ranges in a v0 body."""
        v0 = RequestHeader(API_VERSIONS, 0, header.correlation_id, header.client_id)
        answer: asyncio.Future[Payload] = asyncio.get_running_loop().create_future()
        answer.set_result(encode_response_parts(v0, unsupported_version_response()))
        self._queue_done(answer)

    async def _serve(self, context: RequestContext, handler: Any, request: Any) -> Payload:
        response = await self._respond(context, handler, request)
        if response is None:  # e.g. Produce with acks=0
            return None
        return encode_response_parts(context.header, response)

    async def _respond(self, context: RequestContext, handler: Any, request: Any) -> Any:
        start = time.perf_counter()
        if self.door.core.cluster.shared:
            handler = placing(handler)
        if self.door.core.security.enabled:
            response = await checked(context, handler, request)
        else:
            response = await handler(context, request)
        self._traffic.observer(api_name(context.header.api_key))(time.perf_counter() - start)
        if context.session.failed:  # a failed login: answer, then close
            context.session.failed = False
            asyncio.get_running_loop().call_soon(self._close_politely)
        return response

    async def _serve_throttled(
        self,
        context: RequestContext,
        handler: Any,
        request: Any,
        size: int,
        decode_s: float,
        previous: asyncio.Future[Payload] | None,
    ) -> Payload:
        """``_serve`` for a client with quotas (see ``throttling.py``): after the previous
        such request and once the connection is no longer muted, as Kafka serves a
        connection's requests one at a time — so a throttle applies to the very next one,
        however many the client pipelined."""
        if previous is not None and not previous.done():
            await asyncio.wait((previous,))
        while self._unmute is not None:
            await self._unmuted_event.wait()
        quota = context.quota
        assert quota is not None
        timed = TimedAwait(self._respond(context, handler, request))
        response = await timed
        throttle = context.throttle_ms  # Fetch's, when its byte rate is over
        if context.header.api_key == PRODUCE and quota.produce is not None:
            throttle = max(throttle, quota.produce.record(size))
        throttle = max(throttle, quota.request_time(decode_s + timed.spent))
        if throttle > 0:
            set_throttle(response, throttle)
            self._mute(throttle)
        if response is None:
            return None
        started = time.perf_counter()
        payload = encode_response_parts(context.header, response)
        quota.request_time_unthrottled(time.perf_counter() - started)
        return payload

    def _queue_done(self, answered: asyncio.Future[Payload]) -> None:
        """A request answered during the read (its future done): the answer leaves with the
        read's others, in request order, once the read's frames are dispatched."""
        self._inflight.append(answered)
        self._answered = True

    def _on_done(self, _task: asyncio.Future[Payload] | None) -> None:
        """Send every answer that is due, in request order: those of the requests finished
        so far, up to the first one still being served, go out in one write."""
        inflight = self._inflight
        due: list[Piece] = []
        failed: BaseException | None = None
        while inflight and inflight[0].done():
            task = inflight.popleft()
            if task.cancelled():
                continue
            failed = task.exception()
            if failed is not None:
                break
            payload = task.result()
            if payload is not None:
                due += payload
        if due:
            if self._transport is None or self._closing or self._out is None:
                close_records(due)
            else:
                self._out.write(due)
        if failed is not None:
            log.error(
                "closing connection from %s: request failed: %r",
                self._peer,
                failed,
                exc_info=failed,
            )
            self._close()
            return
        self._update_reading()

    # -- flow control and closing -----------------------------------------------------------

    def _update_reading(self) -> None:
        transport = self._transport
        if transport is None or self._closing:
            return
        if self._draining:
            self._finish_politely()
            return
        queued = len(self._inflight) + (self._out.queued if self._out is not None else 0)
        held_back = self._write_paused or self._budget_paused or self._unmute is not None
        if (held_back or queued >= MAX_INFLIGHT) and not self._read_paused:
            transport.pause_reading()
            self._read_paused = True
        elif self._read_paused and not held_back and queued <= RESUME_INFLIGHT:
            transport.resume_reading()
            self._read_paused = False

    def _mute(self, throttle_ms: int) -> None:
        """Read nothing more for ``throttle_ms`` (a quota's throttle: KIP-219's muting)."""
        loop = asyncio.get_running_loop()
        until = loop.time() + throttle_ms / 1000
        if until <= self._muted_until or self._closing:
            return
        self._muted_until = until
        if self._unmute is not None:
            self._unmute.cancel()
        self._unmute = loop.call_at(until, self._unmuted)
        self._unmuted_event.clear()
        self._update_reading()

    def _unmuted(self) -> None:
        self._unmute = None
        self._unmuted_event.set()
        self._update_reading()

    def _budget_resumed(self) -> None:
        self._budget_paused = False
        self._update_reading()

    def _stalled(self) -> None:
        self._violation(
            "a request frame made no progress for "
            f"{self.door.core.request_budget.stall_timeout_s:g}"
            f" s ({self._budget.held} of {self._buf_expected()} bytes received)"
        )

    def _buf_expected(self) -> int:
        return self._frames.expected or 4

    def _send_failed(self, exc: BaseException) -> None:
        if isinstance(exc, TimeoutError):
            log.info("closing connection from %s: it stopped reading a response", self._peer)
        else:
            log.error(
                "closing connection from %s: sending a response failed: %r",
                self._peer,
                exc,
                exc_info=exc,
            )
        self._close()

    def _violation(self, why: str) -> None:
        bad_input_log.warning(self._peer_host, "closing connection from %s: %s", self._peer, why)
        self._close_politely()

    def _close_politely(self) -> None:
        """Close after bad input without a reset: nothing more is dispatched, requests in
        flight answer, the write side is shut down, what the client still sends is read
        and dropped, and the socket closes at the client's end of stream — or after
        ``DRAIN_TIMEOUT_S`` whatever happens."""
        transport = self._transport
        if self._closing or self._draining or transport is None:
            return
        self._draining = True
        self._frames.clear()
        self._budget.close()
        if self._read_paused:
            transport.resume_reading()
            self._read_paused = False
        asyncio.get_running_loop().call_later(DRAIN_TIMEOUT_S, self._close)
        self._finish_politely()

    def _finish_politely(self) -> None:
        """Once every answer is written, shut down writing (the client reads a clean end)."""
        transport = self._transport
        if self._inflight or (self._out is not None and self._out.queued) or self._closing:
            return
        if transport is not None and not self._eof_sent:
            self._eof_sent = True
            if transport.can_write_eof() and not self._client_done:
                transport.write_eof()  # after what is buffered
            else:
                self._close()  # after what is buffered, too

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
