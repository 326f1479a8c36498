"""One AMQP channel: methods in order, publishes batched into appends, deliveries and acks.

Theory of operation
-------------------
Everything a client sends on a channel is queued and handled in order by the channel's task,
except ``basic.ack``/``nack``/``reject``, which only touch in-memory state and are handled as
they arrive.  A run of queued ``basic.publish`` messages is handled as one burst: each is
routed (``Topology.route``), records are grouped into one Kafka batch per partition
(``build_batch``), the batches are appended with one ``Core.append_many`` (which returns once
every write is as durable as its topic's flush policy asks), and only then are the publisher
confirms sent — one ``basic.ack`` with ``multiple`` for a burst that all succeeded, else a
``basic.ack`` or ``basic.nack`` per message.  A mandatory message that no queue takes is sent
back with ``basic.return`` (312 NO_ROUTE) before its confirm, as RabbitMQ does.

Soft errors (``AmqpError`` with a soft reply code) close the channel; hard ones the connection.
Delivery tags count per channel; ``unacked`` maps each outstanding tag to the consumer (or
``basic.get`` cursor) and the partition/offset it came from.

A channel sees its connection only as a ``ChannelConnection`` and is itself the
``DeliveryChannel`` of its consumers (``interfaces.py``), so it runs without a socket.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
from collections import deque
from typing import Any

from bayou.core import Core, StartSpec, now_ms
from bayou.core.partitioner import Partitioner
from bayou.core.security.acl import AclOperation, ResourceType
from bayou.core.shares import ShareCoordinatorError
from bayou.errors import KafkaError
from bayou.gateways.amqp.consumers import Consumer, group_of
from bayou.gateways.amqp.interfaces import ChannelConnection, ConsumerHandle, Settler
from bayou.gateways.amqp.mapping import delivery_properties, parse_stream_offset, to_record
from bayou.gateways.amqp.names import topic_for
from bayou.gateways.amqp.queues import QueueConsumer, QueueGetter
from bayou.gateways.amqp.topology import Reader, Topology
from bayou.protocol.amqp import (
    AmqpError,
    MessageReceived,
    Method,
    MethodReceived,
    method,
)
from bayou.protocol.amqp import spec as s
from bayou.protocol.kafka.records import DecodedRecord, Record, build_batch

log = logging.getLogger(__name__)

_CLOSE = object()  # queued after a client's channel.close


class Channel:
    def __init__(
        self,
        connection: ChannelConnection,
        number: int,
        *,
        core: Core,
        topology: Topology,
        partitioner: Partitioner,
    ) -> None:
        self.connection = connection
        self.core = core
        self.topology = topology
        self.partitioner = partitioner
        self.number = number
        self.proto = connection.proto
        self.consumers: dict[str, Reader] = {}
        self.getters: dict[str, QueueGetter] = {}  # basic.get on classic queues
        self.cancelled: set[Reader] = set()  # cancelled, holding unacked deliveries
        self.unacked: dict[int, tuple[Settler, str, int, int]] = {}
        self.consumer_prefetch = 0
        self.global_prefetch = 0
        self.flow_active = True
        self.confirming = False
        self.publish_seq = 0
        self._next_tag = 1
        self._items: deque[Any] = deque()
        self._ready = asyncio.Event()
        self.closed = False
        self._task = asyncio.create_task(self._run())

    @property
    def unacked_count(self) -> int:
        return len(self.unacked)

    @property
    def backlog(self) -> int:
        return len(self._items)

    def paused(self) -> bool:
        return not self.flow_active or self.connection.write_paused or self.closed

    def flush_soon(self) -> None:
        self.connection.flush_soon()

    def submit(self, item: Any) -> None:
        self._items.append(item)
        self._ready.set()

    def submit_close(self) -> None:
        """The client closed the channel: finish what is queued, then answer close-ok."""
        self.submit(_CLOSE)

    def set_flow(self, active: bool) -> None:
        self.flow_active = active
        if active:
            for consumer in self.consumers.values():
                consumer.kick()

    # ------------------------------------------------------------------ the task

    async def _run(self) -> None:
        items = self._items
        try:
            while True:
                if not items:
                    self._ready.clear()
                    await self._ready.wait()
                    continue
                if isinstance(items[0], MessageReceived):
                    burst: list[MessageReceived] = []
                    while items and isinstance(items[0], MessageReceived):
                        burst.append(items.popleft())
                    await self._publish(burst)
                else:
                    item = items.popleft()
                    if item is _CLOSE:
                        await self.shutdown()
                        self.proto.channel_close_ok(self.number)
                        self.connection.flush_soon()
                        return
                    await self._method(item.method)
                self.connection.flush_soon()
                self.connection.maybe_resume_reading()
        except AmqpError as exc:
            self.connection.channel_error(self, exc)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            log.exception("AMQP channel %d failed", self.number)
            self.connection.channel_error(
                self, AmqpError(s.INTERNAL_ERROR, f"internal error: {type(exc).__name__}")
            )

    async def drain(self) -> None:
        """Handle what is queued (the client went away: store its publishes), then stop."""
        self.submit(_CLOSE)
        await asyncio.gather(self._task, return_exceptions=True)

    async def shutdown(self) -> None:
        """Stop every consumer (committing what was acked); outstanding tags are dropped."""
        self.closed = True
        consumers = list(self.consumers.values())
        self.consumers.clear()
        consumers.extend(self.cancelled)
        self.cancelled.clear()
        for consumer in consumers:
            self.topology.forget_consumer(consumer)
        getters = list(self.getters.values())
        self.getters.clear()
        await asyncio.gather(
            *(c.stop() for c in consumers), *(g.close() for g in getters), return_exceptions=True
        )
        self.unacked.clear()

    def abort(self) -> None:
        """The channel was closed on an error: drop queued work, stop in the background."""
        self.closed = True
        self._items.clear()
        if self._task is not asyncio.current_task():
            self._task.cancel()
        self.core.background(self.shutdown())

    # ------------------------------------------------------------------ publishing

    async def _publish(self, burst: list[MessageReceived]) -> None:
        partitioner = self.partitioner
        timestamp = now_ms()
        by_partition: dict[tuple[str, int], list[Record]] = {}
        seq_parts: list[tuple[int, list[tuple[str, int]]]] = []
        error: AmqpError | None = None
        for event in burst:
            m = event.method
            if m.immediate:
                error = AmqpError(s.NOT_IMPLEMENTED, "immediate=true", 60, 40)
                break
            try:
                dests = self.topology.route(m.exchange, m.routing_key, event.properties)
            except AmqpError as exc:
                error = exc
                break
            refused = [t for t, _, _ in dests if not self._may(AclOperation.WRITE, t)]
            if refused:
                error = AmqpError(
                    s.ACCESS_REFUSED, f"access to topic '{refused[0]}' refused", 60, 40
                )
                break
            seq = 0
            if self.confirming:
                self.publish_seq += 1
                seq = self.publish_seq
            parts: list[tuple[str, int]] = []
            if not dests and m.mandatory:
                self.proto.send_content(
                    self.number,
                    method(
                        "basic.return",
                        reply_code=s.NO_ROUTE,
                        reply_text="NO_ROUTE",
                        exchange=m.exchange,
                        routing_key=m.routing_key,
                    ),
                    event.properties,
                    event.body,
                )
            for topic, key, partitions in dests:
                partition = partitioner.partition(topic, key, partitions)
                record = to_record(event.properties, event.body, key, timestamp)
                by_partition.setdefault((topic, partition), []).append(record)
                parts.append((topic, partition))
            if seq:
                seq_parts.append((seq, parts))
        failed = await self._append(by_partition)
        if seq_parts:
            self._confirm(seq_parts, failed)
        if error is not None:
            raise error

    async def _append(
        self, by_partition: dict[tuple[str, int], list[Record]]
    ) -> set[tuple[str, int]]:
        keys = list(by_partition)
        if not keys:
            return set()
        writes = [(t, p, build_batch(by_partition[(t, p)])) for t, p in keys]
        try:
            results: list[Any] = list(await self.core.append_many(writes))
        except Exception as exc:
            log.error("AMQP publish failed", exc_info=exc)
            return set(keys)
        self.core.metrics.door("amqp").appended(writes, results)
        failed = set()
        for key, result in zip(keys, results, strict=True):
            if isinstance(result, KafkaError):
                log.debug("AMQP publish to %s-%d refused: %s", *key, result)
                failed.add(key)
        return failed

    def _confirm(
        self, seq_parts: list[tuple[int, list[tuple[str, int]]]], failed: set[tuple[str, int]]
    ) -> None:
        send = self.proto.send_method
        ch = self.number
        if not failed:
            last = seq_parts[-1][0]
            send(ch, method("basic.ack", delivery_tag=last, multiple=len(seq_parts) > 1))
            return
        for seq, parts in seq_parts:
            if any(p in failed for p in parts):
                send(ch, method("basic.nack", delivery_tag=seq, multiple=False, requeue=False))
            else:
                send(ch, method("basic.ack", delivery_tag=seq, multiple=False))

    # ------------------------------------------------------------------ delivering

    def deliver(
        self,
        settler: Settler,
        consumer_tag: str | None,
        queue: str,
        partition: int,
        record: DecodedRecord,
        *,
        redelivered: bool,
        message_count: int = 0,
    ) -> int:
        """Send one record of ``queue``'s topic; the AMQP side sees the queue's own name."""
        tag = self._next_tag
        self._next_tag += 1
        if not settler.no_ack:
            self.unacked[tag] = (settler, queue, partition, record.offset)
        if record.key is not None:
            exchange, routing_key = queue, record.key.decode(errors="replace")
        else:
            exchange, routing_key = "", queue
        props = delivery_properties(record, partition)
        if consumer_tag is None:
            m = method(
                "basic.get_ok",
                delivery_tag=tag,
                redelivered=redelivered,
                exchange=exchange,
                routing_key=routing_key,
                message_count=message_count,
            )
        else:
            m = method(
                "basic.deliver",
                consumer_tag=consumer_tag,
                delivery_tag=tag,
                redelivered=redelivered,
                exchange=exchange,
                routing_key=routing_key,
            )
        self.proto.send_content(self.number, m, props, record.value or b"")
        return tag

    def consumer_gone(self, consumer: ConsumerHandle, *, notify: bool) -> None:
        mine = self.consumers.get(consumer.tag)
        if mine is not consumer:
            self.core.background(consumer.stop())
            return
        del self.consumers[mine.tag]
        self.topology.forget_consumer(mine)
        if notify:
            self.proto.send_method(
                self.number, method("basic.cancel", consumer_tag=mine.tag, nowait=True)
            )
            self.connection.flush_soon()
        self.core.background(mine.stop())

    def settle(self, m: Method) -> None:
        """basic.ack / basic.nack / basic.reject."""
        tag: int = m.delivery_tag
        multiple = bool(m.args.get("multiple", False))
        requeue = m.name != "basic.ack" and bool(m.requeue)
        if multiple:
            if (
                tag
                and tag not in self.unacked
                and (not self.unacked or tag < next(iter(self.unacked)))
            ):
                raise AmqpError(s.PRECONDITION_FAILED, f"unknown delivery tag {tag}", *m.spec.key)
            entries = []
            while self.unacked:
                first = next(iter(self.unacked))
                if tag and first > tag:
                    break
                entries.append(self.unacked.pop(first))
        else:
            entry = self.unacked.pop(tag, None)
            if entry is None:
                raise AmqpError(s.PRECONDITION_FAILED, f"unknown delivery tag {tag}", *m.spec.key)
            entries = [entry]
        rejected = m.name != "basic.ack"
        for settler, _topic, partition, offset in entries:
            if requeue:
                settler.requeue(partition, offset)
            elif rejected:
                settler.rejected(partition, offset)
            else:
                settler.settled(partition, offset)
        if self.global_prefetch:
            for consumer in self.consumers.values():
                consumer.kick()

    # ------------------------------------------------------------------ methods

    async def _method(self, m: Method) -> None:
        handler = _HANDLERS.get(m.name)
        if handler is None:
            raise AmqpError(s.NOT_IMPLEMENTED, f"{m.name} is not implemented", *m.spec.key)
        self._check(m)
        reply = await handler(self, m)
        if reply is not None and not m.args.get("nowait", False):
            self.proto.send_method(self.number, reply)

    def _may(self, operation: AclOperation, topic: str) -> bool:
        return self.connection.allowed(operation, ResourceType.TOPIC, topic)

    def _check(self, m: Method) -> None:
        """ACLs on the queue's topic (``docs/design/security.md``): declaring needs CREATE
        (DESCRIBE when passive or existing), deleting and purging DELETE, consuming and
        getting READ (and READ on the consumer group), binding DESCRIBE; refused:
        403 ACCESS_REFUSED, closing the channel."""
        name = m.name
        if name not in _QUEUE_OPERATIONS:
            return
        queue: str = m.queue
        topic = topic_for(queue) if queue else ""
        operation = _QUEUE_OPERATIONS[name]
        if name == "queue.declare":
            if not queue:
                return  # a server-named queue: checked when it is consumed
            if m.passive or self.topology.queue_exists(queue):
                operation = AclOperation.DESCRIBE
        if not self._may(operation, topic):
            raise AmqpError(
                s.ACCESS_REFUSED,
                f"access to queue '{queue}' refused ({operation.name})",
                *m.spec.key,
            )
        arguments: dict[str, Any] = m.args.get("arguments") or {}
        group = arguments.get("x-consumer-group") if name == "basic.consume" else None
        if isinstance(group, bytes):
            group = group.decode(errors="replace")
        if (
            isinstance(group, str)
            and group
            and not self.connection.allowed(AclOperation.READ, ResourceType.GROUP, group)
        ):
            raise AmqpError(
                s.ACCESS_REFUSED, f"access to consumer group '{group}' refused", *m.spec.key
            )

    async def _access_request(self, m: Method) -> Method:
        return method("access.request_ok", ticket=1)

    async def _basic_qos(self, m: Method) -> Method:
        if m.global_:
            self.global_prefetch = m.prefetch_count
        else:
            self.consumer_prefetch = m.prefetch_count
        for consumer in self.consumers.values():
            consumer.kick()
        return method("basic.qos_ok")

    async def _confirm_select(self, m: Method) -> Method:
        self.confirming = True
        return method("confirm.select_ok")

    async def _exchange_declare(self, m: Method) -> Method:
        await self.topology.declare_exchange(m)
        return method("exchange.declare_ok")

    async def _exchange_delete(self, m: Method) -> Method:
        await self.topology.delete_exchange(m)
        return method("exchange.delete_ok")

    async def _queue_declare(self, m: Method) -> Method:
        topology = self.topology
        name, created = await topology.declare_queue(m)
        if created and m.exclusive and not m.durable:
            self.connection.exclusive_queues.add(name)  # goes with this connection
        return method(
            "queue.declare_ok",
            queue=name,
            message_count=topology.message_count(name),
            consumer_count=topology.consumer_count(name),
        )

    async def _queue_bind(self, m: Method) -> Method:
        await self.topology.bind(m, unbind=False)
        return method("queue.bind_ok")

    async def _queue_unbind(self, m: Method) -> Method:
        await self.topology.bind(m, unbind=True)
        return method("queue.unbind_ok")

    async def _queue_delete(self, m: Method) -> Method:
        count = await self.topology.delete_queue(m)
        return method("queue.delete_ok", message_count=count)

    async def _queue_purge(self, m: Method) -> Method:
        count = await self.topology.purge_queue(m)
        return method("queue.purge_ok", message_count=count)

    async def _basic_consume(self, m: Method) -> Method | None:
        topology = self.topology
        queue: str = m.queue
        if not topology.queue_exists(queue):
            raise AmqpError(s.NOT_FOUND, f"no queue '{queue}' in vhost '/'", *m.spec.key)
        tag: str = m.consumer_tag or f"amq.ctag-{secrets.token_urlsafe(16)}"
        if tag in self.consumers:
            raise AmqpError(s.NOT_ALLOWED, f"attempt to reuse consumer tag '{tag}'", *m.spec.key)
        args: dict[str, Any] = m.arguments
        group = args.get("x-consumer-group")
        if isinstance(group, bytes):
            group = group.decode(errors="replace")
        if group is not None and (not isinstance(group, str) or not group):
            raise AmqpError(
                s.PRECONDITION_FAILED, "x-consumer-group must be a non-empty string", *m.spec.key
            )
        start = StartSpec("next")
        resume_queue = False
        if "x-stream-offset" in args:
            try:
                start = parse_stream_offset(args["x-stream-offset"], now_ms())
            except ValueError as exc:
                raise AmqpError(s.PRECONDITION_FAILED, str(exc), *m.spec.key) from None
        elif group is None and topology.is_durable_queue(queue):
            group = group_of(queue)
        elif group is None and topology.is_temporary_queue(queue):
            resume_queue = True
        if group is not None and "x-stream-offset" not in args:
            start = StartSpec("earliest")
        if (
            topology.is_share_queue(queue)
            and "x-stream-offset" not in args
            and ("x-consumer-group" not in args)
        ):
            await self._consume_share(m, tag, queue)
            return None
        consumer = Consumer(
            self.core,
            self,
            topology,
            tag,
            queue,
            no_ack=m.no_ack,
            start=start,
            resume_queue=resume_queue,
            group=group,
            prefetch=self.consumer_prefetch,
            client_host=self.connection.peer_host,
        )
        self.consumers[tag] = consumer
        topology.remember_consumer(consumer)
        if not m.nowait:
            self.proto.send_method(self.number, method("basic.consume_ok", consumer_tag=tag))
            self.connection.flush_soon()
        try:
            await consumer.start()  # positions taken before this channel's next method
        except KafkaError as exc:
            self.consumer_gone(consumer, notify=True)
            log.info("AMQP consumer %s could not start: %s", tag, exc)
        return None

    async def _consume_share(self, m: Method, tag: str, queue: str) -> None:
        """``basic.consume`` on a classic queue: a member of its share group."""
        topology = self.topology
        await topology.ensure_share_group(queue)
        consumer = QueueConsumer(
            self.core,
            self,
            topology,
            tag,
            queue,
            no_ack=m.no_ack,
            prefetch=self.consumer_prefetch,
            policy=topology.policy(queue),
            client_host=self.connection.peer_host,
        )
        self.consumers[tag] = consumer
        topology.remember_consumer(consumer)
        if not m.nowait:
            self.proto.send_method(self.number, method("basic.consume_ok", consumer_tag=tag))
            self.connection.flush_soon()
        try:
            await consumer.start()
        except ShareCoordinatorError as exc:
            self.consumer_gone(consumer, notify=True)
            log.info("AMQP consumer %s could not start: %s", tag, exc)

    async def _basic_cancel(self, m: Method) -> Method:
        consumer = self.consumers.pop(m.consumer_tag, None)
        if consumer is not None:
            self.topology.forget_consumer(consumer)
            await consumer.cancel()
            self.cancelled = {c for c in self.cancelled if c.draining}
            if consumer.draining:
                self.cancelled.add(consumer)
        return method("basic.cancel_ok", consumer_tag=m.consumer_tag)

    async def _basic_get(self, m: Method) -> Method | None:
        queue: str = m.queue
        if not self.topology.queue_exists(queue):
            raise AmqpError(s.NOT_FOUND, f"no queue '{queue}' in vhost '/'", *m.spec.key)
        if self.topology.is_share_queue(queue):
            return await self._get_share(m, queue)
        cursor = self.topology.get_cursor(queue)
        found = await cursor.next_message()
        if found is None:
            return method("basic.get_empty")
        partition, record, redelivered = found
        settler = cursor.settler(no_ack=m.no_ack)
        if not m.no_ack:
            cursor.track(partition, record.offset)
        else:
            cursor.done(partition, record.offset)
        self.deliver(
            settler,
            None,
            queue,
            partition,
            record,
            redelivered=redelivered,
            message_count=cursor.remaining(),
        )
        return None

    async def _get_share(self, m: Method, queue: str) -> Method | None:
        """``basic.get`` on a classic queue: this channel's member of its share group
        takes one message."""
        getter = self.getters.get(queue)
        if getter is None:
            topology = self.topology
            await topology.ensure_share_group(queue)
            getter = QueueGetter(
                self.core, topology, queue, topology.policy(queue), self.connection.peer_host
            )
            try:
                await getter.join()
            except ShareCoordinatorError as exc:
                raise AmqpError(
                    s.INTERNAL_ERROR, f"queue '{queue}' unavailable: {exc}", *m.spec.key
                ) from None
            self.getters[queue] = getter
        found = await getter.get()
        if found is None:
            return method("basic.get_empty")
        if m.no_ack:
            getter.accept_now(found)
        else:
            getter.hold(found)
        self.deliver(
            getter.settler(no_ack=m.no_ack),
            None,
            queue,
            found.partition,
            found.record,
            redelivered=found.delivery_count > 1,
            message_count=self.topology.message_count(queue),
        )
        return None

    async def _basic_recover(self, m: Method) -> Method | None:
        entries = list(self.unacked.values())
        self.unacked.clear()
        for settler, _topic, partition, offset in entries:
            settler.requeue(partition, offset)
        return method("basic.recover_ok") if m.name == "basic.recover" else None

    async def _tx(self, m: Method) -> Method:
        raise AmqpError(
            s.NOT_IMPLEMENTED,
            "transactions (tx.*) are not supported; use publisher confirms",
            *m.spec.key,
        )

    async def _exchange_bind(self, m: Method) -> Method:
        raise AmqpError(
            s.NOT_IMPLEMENTED, "exchange-to-exchange bindings are not supported", *m.spec.key
        )


_HANDLERS: dict[str, Any] = {
    "access.request": Channel._access_request,
    "basic.qos": Channel._basic_qos,
    "confirm.select": Channel._confirm_select,
    "exchange.declare": Channel._exchange_declare,
    "exchange.delete": Channel._exchange_delete,
    "exchange.bind": Channel._exchange_bind,
    "exchange.unbind": Channel._exchange_bind,
    "queue.declare": Channel._queue_declare,
    "queue.bind": Channel._queue_bind,
    "queue.unbind": Channel._queue_unbind,
    "queue.delete": Channel._queue_delete,
    "queue.purge": Channel._queue_purge,
    "basic.consume": Channel._basic_consume,
    "basic.cancel": Channel._basic_cancel,
    "basic.get": Channel._basic_get,
    "basic.recover": Channel._basic_recover,
    "basic.recover_async": Channel._basic_recover,
    "tx.select": Channel._tx,
    "tx.commit": Channel._tx,
    "tx.rollback": Channel._tx,
}

__all__ = ["Channel", "MethodReceived"]

# The operation each queue method needs on the queue's topic (queue.declare: see _check).
_QUEUE_OPERATIONS: dict[str, AclOperation] = {
    "queue.declare": AclOperation.CREATE,
    "queue.delete": AclOperation.DELETE,
    "queue.purge": AclOperation.DELETE,
    "queue.bind": AclOperation.DESCRIBE,
    "queue.unbind": AclOperation.DESCRIBE,
    "basic.consume": AclOperation.READ,
    "basic.get": AclOperation.READ,
}
