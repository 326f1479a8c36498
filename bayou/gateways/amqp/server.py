"""The AMQP 0-9-1 listener: a thin asyncio driver around ``protocol.amqp.ServerConnection``.

Theory of operation
-------------------
``AmqpGateway`` owns the listener, the exchange/binding ``Registry`` (persisted in the data
directory), the partitioner, and the topology operations every channel shares (declare,
bind, delete, ``route``).  ``AmqpClient`` is one connection (an ``asyncio.Protocol``): bytes
go into the sans-I/O ``ServerConnection``, events come out and are dispatched to ``Channel``
objects (``channel.py``), and whatever the connection wants written is flushed once per
loop iteration (``flush_soon``).

Heartbeats: with a negotiated interval ``h``, a heartbeat frame goes out when nothing was
written for ``h/2``, and the connection is dropped when nothing arrived for ``2h``.
Backpressure: deliveries stop while the socket's write buffer is over its high-water mark;
reading stops while a channel has too many publishes queued, and resumes as they drain.

Closing: a client's ``connection.close`` drains every channel (publishes still queued are
stored; consumers commit what was acked) before ``close-ok``.  A protocol error sends
``connection.close`` with its reply code and drops the socket after the client's close-ok
(or a second).  A lost socket drains the same way, without answers.  Nothing here touches
another connection.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
from collections.abc import Callable
from typing import Any

from bayou.broker.context import BrokerState
from bayou.broker.partitioner import Partitioner
from bayou.errors import KafkaError
from bayou.gateways.amqp.channel import Channel
from bayou.gateways.amqp.consumers import Consumer, GetCursor
from bayou.gateways.amqp.registry import BUILTIN, EXCHANGE_TYPES, Exchange, QueueInfo, Registry
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
    Method,
    MethodReceived,
    Opened,
    ServerConnection,
)
from bayou.protocol.amqp import spec as s

log = logging.getLogger(__name__)

Authenticator = Callable[[str, str, str], bool]
MAX_BACKLOG = 4096  # queued methods/publishes per channel before reading pauses
CLOSE_WAIT_S = 1.0
SERVER_HEARTBEAT_S = 60


class AmqpGateway:
    def __init__(self, state: BrokerState, *, authenticate: Authenticator | None = None,
                 heartbeat_s: int = SERVER_HEARTBEAT_S) -> None:
        self.state = state
        self.authenticate = authenticate
        self.heartbeat_s = heartbeat_s
        self.registry = Registry(state.config.data_dir)
        self.partitioner = Partitioner()
        self.clients: set[AmqpClient] = set()
        self.consumers_by_queue: dict[str, set[Consumer]] = {}
        self._cursors: dict[str, GetCursor] = {}
        self._server: asyncio.Server | None = None
        self.max_message_size = state.config.socket_request_max_bytes

    async def start(self) -> None:
        """Load the registry and listen on ``config.host``:``config.amqp_port``."""
        config = self.state.config
        await asyncio.to_thread(self.registry.load)
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(lambda: AmqpClient(self), config.host,
                                                config.amqp_port, reuse_address=True,
                                                backlog=1024)

    @property
    def port(self) -> int:
        assert self._server is not None
        return int(self._server.sockets[0].getsockname()[1])

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
        await asyncio.gather(*(c.shutdown() for c in list(self.clients)),
                             return_exceptions=True)

    def server_properties(self) -> dict[str, Any]:
        return {
            "product": "Bayou",
            "version": "0.1.0",
            "platform": "Python",
            "information": "Bayou event streaming: AMQP 0-9-1 over Kafka topics",
            "cluster_name": self.state.cluster_id,
        }

    # ------------------------------------------------------------------ consumers

    def remember_consumer(self, consumer: Consumer) -> None:
        self.consumers_by_queue.setdefault(consumer.queue, set()).add(consumer)

    def forget_consumer(self, consumer: Consumer) -> None:
        consumers = self.consumers_by_queue.get(consumer.queue)
        if consumers is not None:
            consumers.discard(consumer)

    def get_cursor(self, queue: str) -> GetCursor:
        cursor = self._cursors.get(queue)
        if cursor is None:
            cursor = self._cursors[queue] = GetCursor(self.state, queue)
        return cursor

    def is_durable_queue(self, queue: str) -> bool:
        info = self.registry.queues.get(queue)
        return info is not None and info.durable and not queue.startswith("amq.gen-")

    # ------------------------------------------------------------------ routing

    def route(self, exchange: str, routing_key: str,
              properties: dict[str, Any]) -> list[tuple[str, bytes | None, int]]:
        """(topic, record key, partition count) of every queue this message goes to."""
        topics = self.state.logs.topics()
        if exchange == "":
            meta = topics.get(routing_key)
            return [(routing_key, None, meta.partitions)] if meta is not None else []
        ex = self.registry.exchanges.get(exchange)
        own = topics.get(exchange)
        if ex is None and own is None:
            raise AmqpError(s.NOT_FOUND, f"no exchange '{exchange}' in vhost '/'", 60, 40)
        if ex is not None and ex.internal:
            raise AmqpError(s.ACCESS_REFUSED, f"cannot publish to internal exchange "
                            f"'{exchange}'", 60, 40)
        key = routing_key.encode() or None
        out: dict[str, int] = {}
        if own is not None:
            out[exchange] = own.partitions
        if self.registry.bindings:
            kind = ex.type if ex is not None else "direct"
            for queue in self.registry.route(exchange, routing_key,
                                             properties.get("headers"), kind):
                meta = topics.get(queue)
                if meta is not None:
                    out[queue] = meta.partitions
        return [(topic, key, n) for topic, n in out.items()]

    # ------------------------------------------------------------------ topology

    async def _save(self) -> None:
        await asyncio.to_thread(self.registry.save, self.registry.snapshot())

    def _exchange_exists(self, name: str) -> bool:
        return name in self.registry.exchanges or name in self.state.logs.topics()

    async def declare_exchange(self, m: Method) -> None:
        name: str = m.exchange
        key = m.spec.key
        if m.passive:
            if name and not self._exchange_exists(name):
                raise AmqpError(s.NOT_FOUND, f"no exchange '{name}' in vhost '/'", *key)
            return
        kind: str = m.type or "direct"
        if kind not in EXCHANGE_TYPES:
            raise AmqpError(s.COMMAND_INVALID, f"invalid exchange type '{kind}'", *key)
        if not name or name.startswith("amq."):
            if BUILTIN.get(name) == kind or (not name and kind == "direct"):
                return
            raise AmqpError(s.ACCESS_REFUSED, f"exchange name '{name}' contains reserved "
                            "prefix 'amq.*'", *key)
        existing = self.registry.exchanges.get(name)
        if existing is not None:
            if existing.type != kind:
                raise AmqpError(s.PRECONDITION_FAILED, f"inequivalent arg 'type' for exchange "
                                f"'{name}' in vhost '/': received '{kind}' but current is "
                                f"'{existing.type}'", *key)
            return
        self.registry.exchanges[name] = Exchange(name, kind, m.durable, m.auto_delete,
                                                 m.internal, dict(m.arguments))
        if m.durable:
            await self._save()

    async def delete_exchange(self, m: Method) -> None:
        name: str = m.exchange
        if not name or name.startswith("amq."):
            raise AmqpError(s.ACCESS_REFUSED, f"exchange '{name}' cannot be deleted",
                            *m.spec.key)
        if m.if_unused and self.registry.has_bindings(name):
            raise AmqpError(s.PRECONDITION_FAILED, f"exchange '{name}' in use", *m.spec.key)
        if name in self.registry.exchanges or self.registry.has_bindings(name):
            self.registry.drop_exchange(name)
            await self._save()

    async def declare_queue(self, client: AmqpClient, m: Method) -> tuple[str, int, int]:
        name: str = m.queue
        key = m.spec.key
        logs = self.state.logs
        if m.passive:
            if name not in logs.topics():
                raise AmqpError(s.NOT_FOUND, f"no queue '{name}' in vhost '/'", *key)
            return name, self.message_count(name), len(self.consumers_by_queue.get(name, ()))
        if not name:
            name = "amq.gen-" + secrets.token_hex(11)
        elif name.startswith("amq."):
            raise AmqpError(s.ACCESS_REFUSED, f"queue name '{name}' contains reserved prefix "
                            "'amq.*'", *key)
        args: dict[str, Any] = dict(m.arguments)
        created = False
        if name not in logs.topics():
            partitions = args.get("x-partitions", self.state.config.num_partitions)
            if isinstance(partitions, bool) or not isinstance(partitions, int) or not (
                1 <= partitions <= 10_000
            ):
                raise AmqpError(s.PRECONDITION_FAILED, "x-partitions must be an integer "
                                "between 1 and 10000", *key)
            try:
                await asyncio.to_thread(logs.create_topic, name, partitions, {})
                created = True
            except KafkaError as exc:
                if name not in logs.topics():  # lost a race with another creator: fine
                    raise AmqpError(s.PRECONDITION_FAILED, f"cannot create queue '{name}': "
                                    f"{exc}", *key) from None
        info = self.registry.queues.get(name)
        if info is None or info.durable != m.durable:
            self.registry.queues[name] = QueueInfo(name, m.durable, m.exclusive, m.auto_delete,
                                                   args)
            if m.exclusive and not m.durable:
                if created:  # only a topic this declaration made goes away with it
                    client.exclusive_queues.add(name)
            else:
                await self._save()
        return name, self.message_count(name), len(self.consumers_by_queue.get(name, ()))

    def message_count(self, queue: str) -> int:
        meta = self.state.logs.topics().get(queue)
        if meta is None:
            return 0
        total = 0
        for p in range(meta.partitions):
            log_ = self.state.logs.partition(queue, p)
            total += log_.log_end_offset - log_.log_start_offset
        return min(total, 0xFFFFFFFF)

    async def bind(self, m: Method, *, unbind: bool) -> None:
        key = m.spec.key
        queue: str = m.queue
        exchange: str = m.exchange
        if queue not in self.state.logs.topics():
            raise AmqpError(s.NOT_FOUND, f"no queue '{queue}' in vhost '/'", *key)
        if not exchange:
            raise AmqpError(s.ACCESS_REFUSED, "operation not permitted on the default exchange",
                            *key)
        if not self._exchange_exists(exchange):
            raise AmqpError(s.NOT_FOUND, f"no exchange '{exchange}' in vhost '/'", *key)
        args = dict(m.arguments)
        changed = (self.registry.unbind(exchange, queue, m.routing_key, args) if unbind
                   else self.registry.bind(exchange, queue, m.routing_key, args))
        if changed:
            await self._save()

    async def delete_queue(self, m: Method) -> int:
        name: str = m.queue
        key = m.spec.key
        logs = self.state.logs
        if name not in logs.topics():
            return 0
        consumers = self.consumers_by_queue.get(name, set())
        if m.if_unused and consumers:
            raise AmqpError(s.PRECONDITION_FAILED, f"queue '{name}' in use", *key)
        count = self.message_count(name)
        if m.if_empty and count:
            raise AmqpError(s.PRECONDITION_FAILED, f"queue '{name}' not empty", *key)
        await self.drop_queue(name)
        return count

    async def drop_queue(self, name: str) -> None:
        for consumer in list(self.consumers_by_queue.pop(name, set())):
            consumer.channel.consumer_gone(consumer, notify=True)
        self._cursors.pop(name, None)
        with contextlib.suppress(KafkaError):
            await asyncio.to_thread(self.state.logs.delete_topic, name)
        self.state.waiters.wake_all()
        self.registry.drop_queue(name)
        await self._save()


class AmqpClient(asyncio.Protocol):
    def __init__(self, gateway: AmqpGateway) -> None:
        self.gateway = gateway
        self.proto = ServerConnection(
            server_properties=gateway.server_properties(),
            authenticate=gateway.authenticate,
            heartbeat=gateway.heartbeat_s,
            max_message_size=gateway.max_message_size,
        )
        self.channels: dict[int, Channel] = {}
        self.exclusive_queues: set[str] = set()
        self.transport: asyncio.Transport | None = None
        self.peer = "?"
        self.peer_host = "?"
        self.write_paused = False
        self.read_paused = False
        self.closing = False
        self._flush_handle: asyncio.Handle | None = None
        self._heartbeat_handle: asyncio.TimerHandle | None = None
        self._heartbeat_s = 0
        self._last_recv = 0.0
        self._last_sent = 0.0
        self._closed = asyncio.get_event_loop().create_future()
        # unfinished frames and messages count in the broker-wide request-bytes budget
        self.budget = gateway.state.request_budget.account(self._budget_resumed,
                                                           self._budget_stalled)
        self.budget_paused = False

    # ------------------------------------------------------------------ asyncio.Protocol

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        peer = transport.get_extra_info("peername")
        if peer:
            self.peer_host = str(peer[0])
            self.peer = f"{peer[0]}:{peer[1]}"
        self.gateway.clients.add(self)
        self._last_recv = self._last_sent = asyncio.get_running_loop().time()

    def connection_lost(self, exc: Exception | None) -> None:
        self.gateway.clients.discard(self)
        self.budget.close()
        self.transport = None
        if self._heartbeat_handle is not None:
            self._heartbeat_handle.cancel()
        if not self.closing:
            self.closing = True
            self.gateway.state.background(self._drain_channels())
        if not self._closed.done():
            self._closed.set_result(None)

    def pause_writing(self) -> None:
        self.write_paused = True

    def resume_writing(self) -> None:
        self.write_paused = False
        for channel in self.channels.values():
            for consumer in channel.consumers.values():
                consumer.kick()

    def data_received(self, data: bytes) -> None:
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
        if not self.read_paused and self.transport is not None:
            self.transport.resume_reading()

    def _budget_stalled(self) -> None:
        log.info("AMQP client %s: closing: a message made no progress for %g s", self.peer,
                 self.gateway.state.request_budget.stall_timeout_s)
        if self.transport is not None:
            self.transport.close()

    def eof_received(self) -> bool | None:
        return None

    # ------------------------------------------------------------------ events

    def _dispatch(self, event: Event) -> None:
        if isinstance(event, MessageReceived):
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
            self.channels[event.channel] = Channel(self, event.channel)
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
                self.gateway.state.background(self._close_requested())
        elif isinstance(event, ConnectionFailed):
            log.info("AMQP connection %s closed: %s", self.peer, event.reply_text)
            self._failed()
        elif isinstance(event, ConnectionClosed):
            self._failed()
            if self.transport is not None:
                self.flush()
                self.transport.close()

    def channel_error(self, channel: Channel, exc: AmqpError) -> None:
        if exc.code in s.HARD_ERRORS:
            self.protocol_error(exc)
            return
        if self.channels.get(channel.number) is channel:
            del self.channels[channel.number]
        channel.abort()
        self.proto.close_channel(channel.number, exc.code, exc.text, exc.class_id,
                                 exc.method_id)
        self.flush_soon()

    def protocol_error(self, exc: AmqpError) -> None:
        log.info("AMQP connection %s: %s", self.peer, exc.reply_text)
        self.proto.close_connection(exc.code, exc.text, exc.class_id, exc.method_id)
        self._failed()
        self.flush_soon()

    def _failed(self) -> None:
        """We closed the connection on an error: drop channel work, close the socket soon."""
        if self.closing:
            return
        self.closing = True
        channels = list(self.channels.values())
        self.channels.clear()
        for channel in channels:
            channel.abort()
        self.gateway.state.background(self._close_after(CLOSE_WAIT_S))

    async def _close_after(self, delay_s: float) -> None:
        try:
            await asyncio.wait_for(asyncio.shield(self._closed), delay_s)
        except TimeoutError:
            if self.transport is not None:
                self.flush()
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
                await self.gateway.drop_queue(name)
            except Exception:
                log.exception("dropping exclusive queue %s failed", name)

    async def shutdown(self) -> None:
        """The broker is stopping: close with CONNECTION_FORCED, commit acked offsets."""
        self.proto.close_connection(s.CONNECTION_FORCED, "broker shutdown")
        self.flush()
        if not self.closing:
            self.closing = True
            await self._drain_channels()
        if self.transport is not None:
            self.transport.close()

    # ------------------------------------------------------------------ output

    def flush_soon(self) -> None:
        if self._flush_handle is None:
            self._flush_handle = asyncio.get_running_loop().call_soon(self._flush_now)

    def _flush_now(self) -> None:
        self._flush_handle = None
        self.flush()

    def flush(self) -> None:
        data = self.proto.data_to_send()
        if data and self.transport is not None and not self.transport.is_closing():
            self.transport.write(data)
            self._last_sent = asyncio.get_running_loop().time()

    def maybe_resume_reading(self) -> None:
        if self.read_paused and all(c.backlog <= MAX_BACKLOG // 2
                                    for c in self.channels.values()):
            self.read_paused = False
            if self.transport is not None and not self.budget_paused:
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
        if now - self._last_recv > 2 * h:
            log.info("AMQP connection %s: no heartbeat for %ds, closing", self.peer, 2 * h)
            if self.transport is not None:
                self.transport.abort()
            return
        if now - self._last_sent >= h / 2:
            self.proto.send_heartbeat()
            self.flush()
        self._heartbeat_handle = loop.call_later(h / 2, self._heartbeat_tick)
