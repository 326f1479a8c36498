"""The AMQP 0-9-1 listener: a thin asyncio driver around ``protocol.amqp.ServerConnection``.

Theory of operation
-------------------
``AmqpGateway`` is the door: it sees the broker only through the ``Core`` and owns the
listener, the partitioner, and the ``Topology`` every channel shares (``topology.py``: the
exchange/binding registry kept in the engine's state store, declare, bind, purge, delete,
``route``).  ``AmqpClient`` is one connection (an ``asyncio.Protocol``): bytes
go into the sans-I/O ``ServerConnection``, events come out and are dispatched to ``Channel``
objects (``channel.py``), and whatever the connection wants written is flushed once per
loop iteration (``flush_soon``).

Heartbeats: with a negotiated interval ``h``, a heartbeat frame goes out when nothing was
written for ``h/2``, and the connection is dropped when nothing arrived for ``2h``.
Backpressure: deliveries stop while the socket's write buffer is over its high-water mark;
reading stops while a channel has too many publishes queued, and resumes as they drain.

Closing: a client's ``connection.close`` drains every channel (publishes still queued are
stored; consumers commit what was acked) before ``close-ok``.  When the broker closes (a
protocol error, or shutdown) it closes politely: ``connection.close`` with its reply code
goes out, then our side of the socket is half-closed (FIN), and what the client still sends
is read and discarded until it closes its side (after its close-ok) or ``CLOSE_DRAIN_S``
passes; only then is the socket closed.  Closing with unread bytes would make the kernel
answer with a reset, and a reset makes the client's kernel drop the unread
``connection.close`` — the client would see "connection reset" instead of the reason.  A
lost socket drains the same way, without answers.  Nothing here touches another
connection.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any

from bayou.broker_config import AmqpOptions
from bayou.core import Core
from bayou.core.partitioner import Partitioner
from bayou.core.security.acl import AclOperation, ResourceType
from bayou.gateways.admission import admit
from bayou.gateways.amqp.channel import Channel
from bayou.gateways.amqp.interfaces import ChannelHandle
from bayou.gateways.amqp.topology import Topology
from bayou.gateways.pacing import ConnectionQuota, Mute
from bayou.protocol.amqp import (
    AmqpError,
    ChannelCloseRequested,
    ChannelFailed,
    ChannelFlow,
    ChannelOpened,
    ConnectionClosed,
    ConnectionCloseRequested,
    ConnectionFailed,
    Event,
    MessageReceived,
    MethodReceived,
    Opened,
    ServerConnection,
)
from bayou.protocol.amqp import spec as s

log = logging.getLogger(__name__)

Authenticator = Callable[[str, str, str], bool]
MAX_BACKLOG = 4096  # queued methods/publishes per channel before reading pauses
CLOSE_DRAIN_S = 5.0  # after a broker-initiated close: wait this long for the client to go
SHUTDOWN_DRAIN_S = 1.0  # the same when the broker stops
SERVER_HEARTBEAT_S = 60
ACL_CHECK_S = 0.5  # how often open consumers are checked again after the ACLs change


class AmqpGateway:
    name = "amqp"

    @property
    def address(self) -> str:
        plain = f"{self.host}:{self.port}"
        return f"{plain} tls {self.host}:{self.tls_port}" if self._tls_server else plain

    def health(self) -> dict[str, object]:
        return {"listening": self._server is not None, "connections": len(self.clients)}

    def __init__(
        self,
        core: Core,
        host: str,
        options: AmqpOptions,
        *,
        authenticate: Authenticator | None = None,
        heartbeat_s: int = SERVER_HEARTBEAT_S,
        reuse_port: bool = False,
    ) -> None:
        self.core = core
        self.host = host
        self.reuse_port = reuse_port  # SO_REUSEPORT: the port shared with other workers
        self.options = options
        self.authenticate = authenticate
        self.security = core.security
        self.heartbeat_s = heartbeat_s
        self.topology = Topology(core)
        self.partitioner = Partitioner()
        self.clients: set[AmqpClient] = set()
        core.metrics.door("amqp").connections = self.clients.__len__
        self._server: asyncio.Server | None = None
        self._tls_server: asyncio.Server | None = None
        self._acl_watch: asyncio.Task[None] | None = None
        self.tls_port = 0
        self.max_message_size = options.max_message_bytes

    async def start(self) -> None:
        """Load the topology and listen on ``host``:``options.port``."""
        await self.topology.load()
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(
            lambda: AmqpClient(self),
            self.host,
            self.options.port,
            reuse_address=True,
            reuse_port=self.reuse_port or None,
            backlog=1024,
        )
        tls = self.security.tls
        if tls is not None and self.options.tls_port:
            self._tls_server = await loop.create_server(
                lambda: AmqpClient(self),
                self.host,
                self.options.tls_port,
                reuse_address=True,
                reuse_port=self.reuse_port or None,
                backlog=1024,
                ssl=tls.context,
            )
            self.tls_port = int(self._tls_server.sockets[0].getsockname()[1])
        if self.security.enabled:
            self._acl_watch = asyncio.create_task(self._watch_acls())

    @property
    def port(self) -> int:
        assert self._server is not None
        return int(self._server.sockets[0].getsockname()[1])

    async def stop(self) -> None:
        if self._acl_watch is not None:
            self._acl_watch.cancel()
        for server in (self._server, self._tls_server):
            if server is not None:
                server.close()
        await asyncio.gather(*(c.shutdown() for c in list(self.clients)), return_exceptions=True)

    async def _watch_acls(self) -> None:
        """When the ACLs change, a consumer that may no longer read its queue's topic has
        its channel closed (403 ACCESS_REFUSED), within ``ACL_CHECK_S``."""
        authorizer = self.security.authorizer
        version = self.security.acls.version
        while True:
            await asyncio.sleep(ACL_CHECK_S)
            if version == self.security.acls.version:
                continue
            version = self.security.acls.version
            for client in list(self.clients):
                principal = client.principal
                if principal is None:
                    continue
                for channel in list(client.channels.values()):
                    refused = [
                        c.queue
                        for c in channel.consumers.values()
                        if not authorizer.authorize(
                            principal, client.peer_host, AclOperation.READ, ResourceType.TOPIC,
                            c.topic,
                        )
                    ]  # fmt: skip
                    if refused:
                        error = AmqpError(
                            s.ACCESS_REFUSED, f"access to queue '{refused[0]}' refused", 60, 20
                        )
                        client.channel_error(channel, error)
                        client.flush_soon()

    def server_properties(self) -> dict[str, Any]:
        return {
            "product": "Bayou",
            "version": "0.1.0",
            "platform": "Python",
            "information": "Bayou event streaming: AMQP 0-9-1 over Kafka topics",
            "cluster_name": self.core.cluster_id,
        }


class AmqpClient(asyncio.Protocol):
    def __init__(self, gateway: AmqpGateway) -> None:
        self.gateway = gateway
        self.principal: str | None = None  # who logged in, with an authorizer
        self._cert: str | None = None  # a TLS client certificate's principal
        self._login_delay = 0.0
        self._holding = False  # a failed login's close waits (the growing delay)
        self.proto = ServerConnection(
            server_properties=gateway.server_properties(),
            authenticate=self._login if gateway.security.enabled else gateway.authenticate,
            heartbeat=gateway.heartbeat_s,
            max_message_size=gateway.max_message_size,
        )
        self.channels: dict[int, Channel] = {}
        self.exclusive_queues: set[str] = set()
        self.transport: asyncio.Transport | None = None
        self.peer = "?"
        self.peer_host = "?"
        self._write_paused = False  # the transport's buffer is full
        self.read_paused = False
        self.closing = False
        self.eof_sent = False  # we half-closed: nothing more can be written
        self._flush_handle: asyncio.Handle | None = None
        self._heartbeat_handle: asyncio.TimerHandle | None = None
        self._heartbeat_s = 0
        self._last_recv = 0.0
        self._last_sent = 0.0
        self._closed = asyncio.get_event_loop().create_future()
        # unfinished frames and messages count in the broker-wide request-bytes budget
        self.budget = gateway.core.request_budget.account(
            self._budget_resumed, self._budget_stalled
        )
        self.budget_paused = False
        self._quota = ConnectionQuota(gateway.core.quotas)
        self._mute = Mute(self._mute_changed)  # reading paused: over producer_byte_rate
        self._delivery_mute = Mute(self._delivery_mute_changed)  # over consumer_byte_rate
        self._published = 0  # message bytes read in this data_received, while quotas are on

    # ------------------------------------------------------------------ asyncio.Protocol

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        if not admit(self.gateway.core.quotas, transport, "amqp"):  # over its connection rate
            self.closing = True
            return
        self.transport = transport  # type: ignore[assignment]
        peer = transport.get_extra_info("peername")
        if peer:
            self.peer_host = str(peer[0])
            self.peer = f"{peer[0]}:{peer[1]}"
        ssl_object = transport.get_extra_info("ssl_object")
        self._cert = self.gateway.security.certificate_principal(ssl_object)
        self.gateway.clients.add(self)
        self._last_recv = self._last_sent = asyncio.get_running_loop().time()

    def connection_lost(self, exc: Exception | None) -> None:
        self.gateway.clients.discard(self)
        self.budget.close()
        self._mute.cancel()
        self._delivery_mute.cancel()
        self.transport = None
        if self._heartbeat_handle is not None:
            self._heartbeat_handle.cancel()
        if not self.closing:
            self.closing = True
            self.gateway.core.background(self._drain_channels())
        if not self._closed.done():
            self._closed.set_result(None)

    @property
    def write_paused(self) -> bool:
        """Deliver nothing now: the transport's buffer is full, or the client is over its
        consumer_byte_rate (``gateways/pacing.py``)."""
        return self._write_paused or self._delivery_mute.active

    def pause_writing(self) -> None:
        self._write_paused = True

    def resume_writing(self) -> None:
        self._write_paused = False
        self._kick_consumers()

    def _kick_consumers(self) -> None:
        if self.write_paused:
            return
        for channel in self.channels.values():
            for consumer in channel.consumers.values():
                consumer.kick()

    def _delivery_mute_changed(self) -> None:
        if self.transport is not None:
            self._kick_consumers()

    def data_received(self, data: bytes) -> None:
        if self.transport is None:  # refused (connection rate) or gone
            return
        self._last_recv = asyncio.get_running_loop().time()
        proto = self.proto
        proto.receive_data(data)
        while True:
            event = proto.next_event()
            if event is None:
                break
            try:
                self._dispatch(event)
            except AmqpError as exc:
                self.protocol_error(exc)
        self.flush()
        if self._published:
            self._record_published()
        if not self.read_paused and any(c.backlog > MAX_BACKLOG for c in self.channels.values()):
            self.read_paused = True
            if self.transport is not None:
                self.transport.pause_reading()
        if not self.budget.update(*proto.unfinished()) and not self.budget_paused:
            self.budget_paused = True  # until the budget grants this message
            if self.transport is not None:
                self.transport.pause_reading()

    def _budget_resumed(self) -> None:
        self.budget_paused = False
        if not self.read_paused and not self._mute.active and self.transport is not None:
            self.transport.resume_reading()

    def _record_published(self) -> None:
        """Count what this read published against the client's producer_byte_rate; over
        it, read nothing more for the throttle time (``gateways/pacing.py``)."""
        published, self._published = self._published, 0
        name = self.proto.client_properties.get("connection_name")
        quota = self._quota.get(self.principal, name if isinstance(name, str) else None)
        if quota is not None and quota.produce is not None:
            self._mute.start(quota.produce.record(published))

    def _mute_changed(self) -> None:
        if self.transport is None:
            return
        if self._mute.active:
            self.transport.pause_reading()
            return
        self._last_recv = asyncio.get_running_loop().time()  # muted is not idle
        if not self.read_paused and not self.budget_paused:
            self.transport.resume_reading()

    def _budget_stalled(self) -> None:
        log.info(
            "AMQP client %s: closing: a message made no progress for %g s",
            self.peer,
            self.gateway.core.request_budget.stall_timeout_s,
        )
        if self.transport is not None:
            self.transport.close()

    def eof_received(self) -> bool | None:
        return None  # the client closed its side: close ours too (after a polite close, done)

    # ------------------------------------------------------------------ events

    def _dispatch(self, event: Event) -> None:
        if isinstance(event, MessageReceived):
            if self.gateway.core.quotas.active:
                self._published += len(event.body)
            channel = self.channels.get(event.channel)
            if channel is not None:
                channel.submit(event)
        elif isinstance(event, MethodReceived):
            channel = self.channels.get(event.channel)
            if channel is None:
                return
            if event.method.name in ("basic.ack", "basic.nack", "basic.reject"):
                try:
                    channel.settle(event.method)
                except AmqpError as exc:
                    self.channel_error(channel, exc)
            else:
                channel.submit(event)
        elif isinstance(event, ChannelOpened):
            gw = self.gateway
            self.channels[event.channel] = Channel(
                self, event.channel, core=gw.core, topology=gw.topology, partitioner=gw.partitioner
            )
        elif isinstance(event, ChannelFlow):
            channel = self.channels.get(event.channel)
            if channel is not None:
                channel.set_flow(event.active)
        elif isinstance(event, ChannelCloseRequested):
            channel = self.channels.pop(event.channel, None)
            if channel is not None:
                channel.submit_close()
            else:
                self.proto.channel_close_ok(event.channel)
        elif isinstance(event, ChannelFailed):
            channel = self.channels.pop(event.channel, None)
            if channel is not None:
                channel.abort()
        elif isinstance(event, Opened):
            self._start_heartbeats(event.heartbeat)
        elif isinstance(event, ConnectionCloseRequested):
            if not self.closing:
                self.closing = True
                self.gateway.core.background(self._close_requested())
        elif isinstance(event, ConnectionFailed):
            if self._login_delay and event.reply_code == s.ACCESS_REFUSED:
                self._hold_refusal()  # the answer to a failed login waits
                return
            log.info("AMQP connection %s closed: %s", self.peer, event.reply_text)
            self._failed()
        elif isinstance(event, ConnectionClosed):
            self._failed()  # the client closes its side next; we read until it does

    def channel_error(self, channel: ChannelHandle, exc: AmqpError) -> None:
        if exc.code in s.HARD_ERRORS:
            self.protocol_error(exc)
            return
        if self.channels.get(channel.number) is channel:
            del self.channels[channel.number]
        channel.abort()
        self.proto.close_channel(channel.number, exc.code, exc.text, exc.class_id, exc.method_id)
        self.flush_soon()

    def protocol_error(self, exc: AmqpError) -> None:
        log.info("AMQP connection %s: %s", self.peer, exc.reply_text)
        self.proto.close_connection(exc.code, exc.text, exc.class_id, exc.method_id)
        self._failed()
        self.flush_soon()

    def _failed(self) -> None:
        """We closed the connection on an error: drop channel work, close politely."""
        self._half_close()
        if self.closing:
            return
        self.closing = True
        channels = list(self.channels.values())
        self.channels.clear()
        for channel in channels:
            channel.abort()
        self.gateway.core.background(self._close_after(CLOSE_DRAIN_S))

    def _half_close(self) -> None:
        """Send what is queued (our connection.close), then FIN; keep reading."""
        transport = self.transport
        if transport is None or self.eof_sent or transport.is_closing():
            return
        self.flush()
        if not transport.can_write_eof():
            return
        transport.write_eof()
        self.eof_sent = True
        if self.read_paused:  # drain what the client still sends
            self.read_paused = False
            transport.resume_reading()

    async def _close_after(self, drain_s: float) -> None:
        """Close once the client closed its side, or after ``drain_s`` (bounded)."""
        try:
            await asyncio.wait_for(asyncio.shield(self._closed), drain_s)
        except TimeoutError:
            if self.transport is not None:
                self.transport.close()
        await self._drop_exclusive_queues()

    async def _close_requested(self) -> None:
        await self._drain_channels()
        self.proto.connection_close_ok()
        self.flush()
        if self.transport is not None:
            self.transport.close()

    async def _drain_channels(self) -> None:
        channels = list(self.channels.values())
        self.channels.clear()
        await asyncio.gather(*(c.drain() for c in channels), return_exceptions=True)
        await self._drop_exclusive_queues()

    async def _drop_exclusive_queues(self) -> None:
        queues, self.exclusive_queues = self.exclusive_queues, set()
        for name in queues:
            try:
                await self.gateway.topology.drop_queue(name)
            except Exception:
                log.exception("dropping exclusive queue %s failed", name)

    async def shutdown(self) -> None:
        """The broker is stopping: close with CONNECTION_FORCED, commit acked offsets."""
        self.proto.close_connection(s.CONNECTION_FORCED, "broker shutdown")
        self._half_close()
        if not self.closing:
            self.closing = True
            await self._drain_channels()
        await self._close_after(SHUTDOWN_DRAIN_S)

    # ------------------------------------------------------------------ output

    def flush_soon(self) -> None:
        if self._flush_handle is None:
            self._flush_handle = asyncio.get_running_loop().call_soon(self._flush_now)

    def _flush_now(self) -> None:
        self._flush_handle = None
        self.flush()

    # ------------------------------------------------------------------ security

    def _login(self, mechanism: str, username: str, password: str) -> bool:
        """The codec's login hook, with an authorizer: PLAIN/AMQPLAIN credentials against
        the user store — or, with an empty user name, the TLS client certificate."""
        security = self.gateway.security
        if not username and self._cert is not None:
            self.principal = self._cert
            return True
        login = security.password_login(
            "amqp", self.peer_host, username, password.encode(), mechanism
        )
        self.principal = login.principal
        self._login_delay = login.delay_s if login.principal is None else 0.0
        return login.principal is not None

    def _hold_refusal(self) -> None:
        self._holding = True
        if self.transport is not None:
            self.transport.pause_reading()

        def answer() -> None:
            self._holding = False
            self.flush()
            self._failed()

        asyncio.get_running_loop().call_later(self._login_delay, answer)

    def allowed(self, operation: AclOperation, resource_type: ResourceType, name: str) -> bool:
        return self.gateway.security.allowed(
            "amqp", self.principal, self.peer_host, operation, resource_type, name
        )

    def flush(self) -> None:
        if self._holding:
            return
        data = self.proto.data_to_send()
        if (
            data
            and self.transport is not None
            and not self.transport.is_closing()
            and (not self.eof_sent)
        ):
            self.transport.write(data)
            self._last_sent = asyncio.get_running_loop().time()
            if self.gateway.core.quotas.active:
                self._record_sent(len(data))

    def _record_sent(self, size: int) -> None:
        name = self.proto.client_properties.get("connection_name")
        quota = self._quota.get(self.principal, name if isinstance(name, str) else None)
        if quota is not None and quota.fetch is not None:
            self._delivery_mute.start(quota.fetch.record(size))

    def maybe_resume_reading(self) -> None:
        if self.read_paused and all(c.backlog <= MAX_BACKLOG // 2 for c in self.channels.values()):
            self.read_paused = False
            if self.transport is not None and not self.budget_paused and not self._mute.active:
                self.transport.resume_reading()

    # ------------------------------------------------------------------ heartbeats

    def _start_heartbeats(self, heartbeat_s: int) -> None:
        self._heartbeat_s = heartbeat_s
        if heartbeat_s > 0:
            loop = asyncio.get_running_loop()
            self._heartbeat_handle = loop.call_later(heartbeat_s / 2, self._heartbeat_tick)

    def _heartbeat_tick(self) -> None:
        loop = asyncio.get_running_loop()
        now = loop.time()
        h = self._heartbeat_s
        if now - self._last_recv > 2 * h and not self._mute.active:
            log.info("AMQP connection %s: no heartbeat for %ds, closing", self.peer, 2 * h)
            if self.transport is not None:
                self.transport.abort()
            return
        if now - self._last_sent >= h / 2:
            self.proto.send_heartbeat()
            self.flush()
        self._heartbeat_handle = loop.call_later(h / 2, self._heartbeat_tick)
