"""AMQP topology over Kafka topics: declare, bind, route, purge and delete queues.

Theory of operation
-------------------
``Topology`` is what every channel of the AMQP door shares: the ``Registry`` (exchanges,
bindings, queue flags; kept in the engine's state store by ``RegistryLog``), the consumers
of each queue in this broker, the ``basic.get`` cursors, and where a temporary queue's next
consumer starts.  Queue ``Q`` is the topic ``names.topic_for(Q)``; every method here speaks
AMQP names and maps them.  Topics are created and deleted through the core, offsets read
and committed through ``core.offsets`` and group members, and groups deleted through the
coordinator's driver; nothing here touches storage.

**Where a queue is read from.**  A durable named queue is consumed as the consumer group
``amqp:Q``, whose committed offsets are the queue's position.  A queue whose topic its
declaration created and that is not a group — a temporary queue (server-named, exclusive,
auto-delete or just not durable) — behaves as a queue too: its first consumer starts at the
topic's start, since everything in it was sent to the queue (Celery's ``inspect`` sends its
question before consuming the reply queue, and the replies must wait for it), and each
later consumer where the previous one stopped (its lowest unacknowledged offset), kept in
memory as long as the queue lives (``starts``), like the queue itself.  Any other queue (a
topic that existed before) is read as a stream, from ``x-stream-offset`` (``next``).

**purge** moves the queue's readers past everything now in the topic, deleting nothing:
each consumer of the queue in this broker skips to the end (what it delivered and was not
yet acked stays unacked, but is not redelivered), the ``basic.get`` cursor and a temporary
queue's start do too, and the ``amqp:Q`` group commits the end offsets (through one of its
members here, or as a group without members).  Kafka readers (their own groups) see
nothing.  The count returned is what the queue had ready: per partition, end minus the
queue's position (``ready``), plus messages waiting for redelivery — the same number
``queue.declare-ok`` reports.

**auto_delete**: when the last consumer of an auto-delete queue goes (cancel, channel or
connection closed), the queue goes: its bindings and registry entry, its ``amqp:Q`` group,
and — only when its own declaration created it — its topic.  A queue that never had a
consumer stays, as in RabbitMQ.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import secrets
from collections.abc import Mapping
from typing import Any

from bayou.core import Core, now_ms
from bayou.core.groups import GroupCoordinatorError
from bayou.core.partitioner import Partitioner
from bayou.core.shares import ShareCoordinatorError, ShareDriver
from bayou.core.shares.remote import set_up_remotely
from bayou.errors import ErrorCode, KafkaError
from bayou.gateways.amqp.consumers import Consumer, GetCursor, committed_offset, group_of
from bayou.gateways.amqp.interfaces import GroupReader
from bayou.gateways.amqp.mapping import delivery_properties, to_record
from bayou.gateways.amqp.names import topic_for
from bayou.gateways.amqp.queues import (
    QueueConsumer,
    QueuePolicy,
    is_stream_queue,
    share_group_of,
)
from bayou.gateways.amqp.registry import BUILTIN, EXCHANGE_TYPES, Exchange, QueueInfo, Registry
from bayou.gateways.amqp.registry_log import RegistryLog
from bayou.protocol.amqp import AmqpError, Method, Timestamp
from bayou.protocol.amqp import spec as s
from bayou.protocol.kafka.records import DecodedRecord, build_batch

log = logging.getLogger(__name__)

MAX_COUNT = 0xFFFFFFFF  # message counts are AMQP longs
# a classic queue's share group set up while it is between coordinators: asked again
SETUP_RETRIABLE = (ErrorCode.NOT_COORDINATOR, ErrorCode.COORDINATOR_LOAD_IN_PROGRESS)
SETUP_WAIT_S, SETUP_RETRY_S = 15.0, 0.2
MAX_PARTITIONS = 10_000

Reader = Consumer | QueueConsumer  # a stream consumer, or a classic queue's


class Topology:
    def __init__(self, core: Core) -> None:
        self.core = core
        self.registry = Registry()
        self.registry_log = RegistryLog(self.registry, core)
        self.partitioner = Partitioner()  # for dead-lettered messages
        self.consumers_by_queue: dict[str, set[Reader]] = {}
        self.starts: dict[str, dict[int, int]] = {}  # temporary queues: next consumer's start
        self._cursors: dict[str, GetCursor] = {}

    async def load(self) -> None:
        """Replay the registry from the engine's state store (importing an old JSON file)."""
        await self.registry_log.load()

    async def _save(self) -> None:
        await self.registry_log.persist()

    # ------------------------------------------------------------------ queues and readers

    def queue_exists(self, name: str) -> bool:
        """Whether queue ``name`` exists: its topic does (``names.topic_for``)."""
        return topic_for(name) in self.core.topics()

    def is_durable_queue(self, queue: str) -> bool:
        info = self.registry.queues.get(queue)
        return info is not None and info.durable and not queue.startswith("amq.gen-")

    def is_share_queue(self, queue: str) -> bool:
        """A classic queue, consumed through its share group (``queues.py``): declared
        here without ``x-queue-type: stream``.  A topic consumed without a declaration is
        a stream."""
        info = self.registry.queues.get(queue)
        return info is not None and not is_stream_queue(info.arguments)

    def policy(self, queue: str) -> QueuePolicy:
        info = self.registry.queues.get(queue)
        if info is None:
            return QueuePolicy()
        try:
            return QueuePolicy.from_arguments(info.arguments)
        except ValueError:
            return QueuePolicy()

    def is_temporary_queue(self, queue: str) -> bool:
        """A queue read as a queue without a group: see the module docstring."""
        return queue in self.starts

    def queue_start(self, queue: str, partition: int) -> int | None:
        """Where a temporary queue's next consumer starts in ``partition`` (None: not one)."""
        starts = self.starts.get(queue)
        if starts is None:
            return None
        return starts.get(partition, 0)

    def consumer_stopped(self, queue: str, positions: Mapping[int, int]) -> None:
        """A stream consumer of a temporary queue stopped at ``positions``."""
        starts = self.starts.get(queue)
        if starts is not None:
            starts.update(positions)

    def group_changed(self, reader: GroupReader) -> None:
        """A consumer joined or left its group: its fellow members here heartbeat now."""
        group = reader.group
        if group is None:
            return
        for consumers in self.consumers_by_queue.values():
            for consumer in consumers:
                if consumer is not reader and consumer.group == group:
                    consumer.wake_member()

    def remember_consumer(self, consumer: Reader) -> None:
        self.consumers_by_queue.setdefault(consumer.queue, set()).add(consumer)

    def forget_consumer(self, consumer: Reader) -> None:
        consumers = self.consumers_by_queue.get(consumer.queue)
        if consumers is None:
            return
        consumers.discard(consumer)
        if consumers:
            return
        info = self.registry.queues.get(consumer.queue)
        if info is not None and info.auto_delete:
            self.core.background(self._auto_delete(consumer, info))

    async def _auto_delete(self, last: Reader, info: QueueInfo) -> None:
        await last.stop()  # committed and left its group
        queue = last.queue
        if self.consumers_by_queue.get(queue) or self.registry.queues.get(queue) is not info:
            return  # someone consumes again, or the queue was deleted or declared anew
        try:
            await self.drop_queue(queue, delete_topic=info.created_topic)
        except Exception:
            log.exception("deleting auto-delete queue %s failed", queue)

    def get_cursor(self, queue: str) -> GetCursor:
        cursor = self._cursors.get(queue)
        if cursor is None:
            cursor = self._cursors[queue] = GetCursor(self.core, queue)
        return cursor

    # ------------------------------------------------------------------ routing

    def route(
        self, exchange: str, routing_key: str, properties: dict[str, Any]
    ) -> list[tuple[str, bytes | None, int]]:
        """(topic, record key, partition count) of every queue this message goes to."""
        topics = self.core.topics()
        if exchange == "":
            topic = topic_for(routing_key)
            meta = topics.get(topic)
            return [(topic, None, meta.partitions)] if meta is not None else []
        ex = self.registry.exchanges.get(exchange)
        own_topic = topic_for(exchange)
        own = topics.get(own_topic)
        if ex is None and own is None:
            raise AmqpError(s.NOT_FOUND, f"no exchange '{exchange}' in vhost '/'", 60, 40)
        if ex is not None and ex.internal:
            raise AmqpError(
                s.ACCESS_REFUSED, f"cannot publish to internal exchange '{exchange}'", 60, 40
            )
        key = routing_key.encode() or None
        out: dict[str, int] = {}
        if own is not None:
            out[own_topic] = own.partitions
        if self.registry.bindings:
            kind = ex.type if ex is not None else "direct"
            for queue in self.registry.route(
                exchange, routing_key, properties.get("headers"), kind
            ):
                topic = topic_for(queue)
                meta = topics.get(topic)
                if meta is not None:
                    out[topic] = meta.partitions
        return [(topic, key, n) for topic, n in out.items()]

    # ------------------------------------------------------------------ exchanges

    def _exchange_exists(self, name: str) -> bool:
        return name in self.registry.exchanges or self.queue_exists(name)

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
            raise AmqpError(
                s.ACCESS_REFUSED, f"exchange name '{name}' contains reserved prefix 'amq.*'", *key
            )
        existing = self.registry.exchanges.get(name)
        if existing is not None:
            if existing.type != kind:
                raise AmqpError(
                    s.PRECONDITION_FAILED,
                    f"inequivalent arg 'type' for exchange "
                    f"'{name}' in vhost '/': received '{kind}' but current is "
                    f"'{existing.type}'",
                    *key,
                )
            return
        self.registry.put_exchange(
            Exchange(name, kind, m.durable, m.auto_delete, m.internal, dict(m.arguments))
        )
        await self._save()

    async def delete_exchange(self, m: Method) -> None:
        name: str = m.exchange
        if not name or name.startswith("amq."):
            raise AmqpError(s.ACCESS_REFUSED, f"exchange '{name}' cannot be deleted", *m.spec.key)
        if m.if_unused and self.registry.has_bindings(name):
            raise AmqpError(s.PRECONDITION_FAILED, f"exchange '{name}' in use", *m.spec.key)
        if name in self.registry.exchanges or self.registry.has_bindings(name):
            self.registry.drop_exchange(name)
            await self._save()

    # ------------------------------------------------------------------ queues

    async def declare_queue(self, m: Method) -> tuple[str, bool]:
        """Declare (or check) a queue; (its name, whether this declaration created its topic
        — an exclusive non-durable one then goes with its connection)."""
        name: str = m.queue
        key = m.spec.key
        core = self.core
        if m.passive:
            if not self.queue_exists(name):
                raise AmqpError(s.NOT_FOUND, f"no queue '{name}' in vhost '/'", *key)
            return name, False
        if not name:
            name = "amq.gen-" + secrets.token_hex(11)
        elif name.startswith("amq."):
            raise AmqpError(
                s.ACCESS_REFUSED, f"queue name '{name}' contains reserved prefix 'amq.*'", *key
            )
        args: dict[str, Any] = dict(m.arguments)
        share = not is_stream_queue(args)
        if share:
            try:
                QueuePolicy.from_arguments(args)
            except ValueError as exc:
                raise AmqpError(s.PRECONDITION_FAILED, str(exc), *key) from None
        created = False
        topic = topic_for(name)
        if topic not in core.topics():
            partitions = args.get("x-partitions", core.settings.num_partitions)
            if (
                isinstance(partitions, bool)
                or not isinstance(partitions, int)
                or not (1 <= partitions <= MAX_PARTITIONS)
            ):
                raise AmqpError(
                    s.PRECONDITION_FAILED,
                    f"x-partitions must be an integer between 1 and {MAX_PARTITIONS}",
                    *key,
                )
            try:
                await core.create_topic(topic, partitions, {})
                created = True
            except KafkaError as exc:
                if topic not in core.topics():  # lost a race with another creator: fine
                    raise AmqpError(
                        s.PRECONDITION_FAILED, f"cannot create queue '{name}': {exc}", *key
                    ) from None
        info = self.registry.queues.get(name)
        first = info is None
        if created:  # a new topic: nothing of an earlier queue of this name applies
            self._forget_positions(name)
            await self._delete_group(name)
        if (
            info is None
            or info.durable != m.durable
            or created
            or is_stream_queue(info.arguments) != is_stream_queue(args)
            or (share and QueuePolicy.from_arguments(args) != self.policy(name))
        ):
            owns_topic = created or (info is not None and info.created_topic)
            info = QueueInfo(name, m.durable, m.exclusive, m.auto_delete, args, owns_topic)
            self.registry.put_queue(info)
            await self._save()
        if share:
            await self._share_group(name, "earliest" if created or not first else "latest")
        elif created and not self.is_durable_queue(name):
            self.starts[name] = {}
        return name, created

    async def ensure_share_group(self, queue: str) -> None:
        """Before a classic queue is consumed: its share group set up (a queue declared
        before a restart, or by the release before, may not have been here)."""
        await self._share_group(queue, "earliest")

    async def _share_group(self, queue: str, reset: str) -> None:
        """Set up the classic queue's share group (``_set_up_share_group``), asking again
        for up to ``SETUP_WAIT_S`` while the group is between coordinators (a cluster
        settling after a broker joined or died): a queue set up later would lose its start."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + SETUP_WAIT_S
        while True:
            try:
                await self._set_up_share_group(queue, reset)
                return
            except ShareCoordinatorError as exc:
                if exc.code not in SETUP_RETRIABLE or loop.time() >= deadline:
                    log.warning("AMQP queue %s: setting up its share group failed: %s", queue, exc)
                    return
            await asyncio.sleep(SETUP_RETRY_S)

    async def _set_up_share_group(self, queue: str, reset: str) -> None:
        """The classic queue's share group's configs, and a share partition for every
        partition of the topic that has none (at ``reset``: the topic's end when a queue is
        first declared over an existing topic, else its start).  A consumer group of the
        queue's name left by a release that read classic queues as streams hands over its
        committed offsets and goes."""
        group_id = share_group_of(queue)
        try:
            where = self.core.share_place(group_id)
        except ShareCoordinatorError as exc:
            if exc.code in SETUP_RETRIABLE:
                raise
            return  # shares not running: the broker stopping
        topic = topic_for(queue)
        meta = self.core.topics().get(topic)
        if meta is None:
            return
        if not isinstance(where, ShareDriver):  # another broker coordinates the group
            configs = self.policy(queue).share_configs()
            configs["share.isolation.level"] = self.core.settings.door_isolation
            await set_up_remotely(
                self.core.group_link,
                where,
                group_id,
                configs=configs,
                partitions=[(topic, p) for p in range(meta.partitions)],
                reset=reset,
            )
            return
        driver = where
        coordinator = driver.coordinator
        inherited = await self._take_stream_group(queue, topic, meta.partitions)
        wanted = dict(coordinator.configs.get(group_id, {}))
        wanted.update(self.policy(queue).share_configs())
        # what every door delivers: committed transactions' records only, by default
        wanted["share.isolation.level"] = self.core.settings.door_isolation
        if wanted != coordinator.configs.get(group_id, {}):
            await driver.run(lambda now: coordinator.alter_configs(now, group_id, wanted))
        topic_id = str(meta.topic_id)
        missing = [
            p for p in range(meta.partitions) if (group_id, topic, p) not in coordinator.partitions
        ]
        offsets = {(topic, p): o for p, o in inherited.items() if p in missing}
        if offsets:  # refused (NON_EMPTY_GROUP) if members joined meanwhile
            await driver.run(
                lambda now: coordinator.alter_offsets(
                    now, group_id, offsets, driver.log_bounds, {topic: topic_id}
                )
            )
        for p in missing:
            await driver.run(
                functools.partial(
                    coordinator.ensure_partition,
                    group_id=group_id,
                    topic=topic,
                    partition=p,
                    log_bounds=driver.log_bounds,
                    topic_id=topic_id,
                    reset=reset,
                )
            )

    async def _take_stream_group(self, queue: str, topic: str, partitions: int) -> dict[int, int]:
        """The committed offsets of a consumer group ``amqp:<queue>`` without members,
        which is then deleted (the share group takes its id)."""
        try:
            driver = self.core.group_driver()
        except GroupCoordinatorError:
            return {}
        group_id = group_of(queue)
        coordinator = driver.read()
        group = coordinator.group(group_id)
        found = coordinator.fetch_offsets(group_id, None)[1]
        if group is None and not found:
            return {}
        offsets = self.core.offsets(group_id)
        inherited = {}
        for p in range(partitions):
            committed = committed_offset(offsets, topic, p)
            if committed is not None:
                inherited[p] = committed
        await self._delete_group(queue)
        return inherited

    def consumer_count(self, queue: str) -> int:
        return len(self.consumers_by_queue.get(queue, ()))

    def ready(self, queue: str) -> dict[int, tuple[int, int]]:
        """Per partition: (the queue's position, messages ready from it on).  The position
        is the most behind of this broker's consumers owning the partition, else the
        ``basic.get`` cursor's, the ``amqp:Q`` group's committed offset, a temporary
        queue's start, and at last the topic's start."""
        topic = topic_for(queue)
        meta = self.core.topics().get(topic)
        if meta is None:
            return {}
        consumers = self.consumers_by_queue.get(queue, ())
        cursor = self._cursors.get(queue)
        offsets = self.core.offsets(group_of(queue))
        out: dict[int, tuple[int, int]] = {}
        for p in range(meta.partitions):
            handle = self.core.partition(topic, p)
            start, end = handle.log_start_offset, handle.log_end_offset
            behind = [c.ready_in(p) for c in consumers if isinstance(c, Consumer) and c.owns(p)]
            if behind:
                pos, waiting = min(behind)
                pos = min(max(pos, start), end)
                out[p] = (pos, end - pos + waiting)
                continue
            found = cursor.position(p) if cursor is not None else None
            if found is None:
                found = committed_offset(offsets, topic, p)
            if found is None:
                found = self.queue_start(queue, p) or 0
            pos = min(max(found, start), end)
            out[p] = (pos, end - pos)
        return out

    def message_count(self, queue: str) -> int:
        """Messages the queue has ready (``queue.declare-ok``, ``basic.get-ok``)."""
        if self.is_share_queue(queue):
            return min(self._share_ready(queue), MAX_COUNT)
        return min(sum(n for _pos, n in self.ready(queue).values()), MAX_COUNT)

    def _share_ready(self, queue: str) -> int:
        """A classic queue's ready messages: per share partition, those not yet handed
        out up to the log end, and those released to be delivered again."""
        try:
            coordinator = self.core.share_driver().read()
        except ShareCoordinatorError:
            return 0
        group_id, topic = share_group_of(queue), topic_for(queue)
        meta = self.core.topics().get(topic)
        total = 0
        for p in range(meta.partitions if meta is not None else 0):
            sp = coordinator.partitions.get((group_id, topic, p))
            if sp is None:
                continue
            end = self.core.read_end(self.core.partition(topic, p))
            total += max(0, end - sp.end) + sp.available
        return total

    async def bind(self, m: Method, *, unbind: bool) -> None:
        key = m.spec.key
        queue: str = m.queue
        exchange: str = m.exchange
        if not self.queue_exists(queue):
            raise AmqpError(s.NOT_FOUND, f"no queue '{queue}' in vhost '/'", *key)
        if not exchange:
            raise AmqpError(
                s.ACCESS_REFUSED, "operation not permitted on the default exchange", *key
            )
        if not self._exchange_exists(exchange):
            raise AmqpError(s.NOT_FOUND, f"no exchange '{exchange}' in vhost '/'", *key)
        args = dict(m.arguments)
        changed = (
            self.registry.unbind(exchange, queue, m.routing_key, args)
            if unbind
            else self.registry.bind(exchange, queue, m.routing_key, args)
        )
        if changed:
            await self._save()

    async def purge_queue(self, m: Method) -> int:
        """queue.purge: move the queue's readers past the topic's end; the ready count."""
        queue: str = m.queue
        topic = topic_for(queue)
        meta = self.core.topics().get(topic)
        if meta is None:
            raise AmqpError(s.NOT_FOUND, f"no queue '{queue}' in vhost '/'", *m.spec.key)
        if self.is_share_queue(queue):
            return await self._purge_share(queue)
        ready = self.ready(queue)
        count = min(sum(n for _pos, n in ready.values()), MAX_COUNT)
        ends = {p: self.core.partition(topic, p).log_end_offset for p in range(meta.partitions)}
        consumers = [c for c in self.consumers_by_queue.get(queue, ()) if isinstance(c, Consumer)]
        for consumer in consumers:
            consumer.skip_to(ends)
        cursor = self._cursors.get(queue)
        if cursor is not None:
            cursor.skip_to(ends)
        if queue in self.starts:
            self.starts[queue] = dict(ends)
        await asyncio.gather(*(c.commit_now() for c in consumers))
        await self._commit_group(queue, topic, ends, consumers, m)
        return count

    async def _purge_share(self, queue: str) -> int:
        """A classic queue's purge: its share group drops what is ready (what consumers
        hold stays theirs, as RabbitMQ keeps unacknowledged messages)."""
        try:
            driver = self.core.share_driver()
        except ShareCoordinatorError:
            return 0
        group_id = share_group_of(queue)
        count = await driver.run(
            lambda now: driver.coordinator.purge(now, group_id, driver.log_end)
        )
        return min(count, MAX_COUNT)

    async def _commit_group(
        self, queue: str, topic: str, ends: dict[int, int], consumers: list[Consumer], m: Method
    ) -> None:
        """Commit ``ends`` for the partitions of the ``amqp:Q`` group that no member here
        just committed: through one of its members here, else as a group without members."""
        group_id = group_of(queue)
        live = [
            c
            for c in consumers
            if c.group == group_id and c.member is not None and c.member.epoch > 0
        ]
        done = {p for c in live for p in c.cursors}  # they committed in commit_now
        todo = {(topic, p): o for p, o in sorted(ends.items()) if p not in done}
        if not todo:
            return
        try:
            if live and live[0].member is not None:
                await live[0].member.commit(todo)
            else:
                await self.core.offsets(group_id).commit(todo)
        except GroupCoordinatorError as exc:
            raise AmqpError(
                s.PRECONDITION_FAILED,
                f"cannot purge queue '{queue}': its group "
                f"{group_id} refused the commit ({exc.code.name})",
                *m.spec.key,
            ) from None

    async def delete_queue(self, m: Method) -> int:
        name: str = m.queue
        key = m.spec.key
        if not self.queue_exists(name):
            return 0
        consumers = self.consumers_by_queue.get(name, set())
        if m.if_unused and consumers:
            raise AmqpError(s.PRECONDITION_FAILED, f"queue '{name}' in use", *key)
        count = self.message_count(name)
        if m.if_empty and count:
            raise AmqpError(s.PRECONDITION_FAILED, f"queue '{name}' not empty", *key)
        await self.drop_queue(name)
        return count

    async def drop_queue(self, name: str, *, delete_topic: bool = True) -> None:
        """Delete a queue: its consumers are cancelled, its group, bindings and registry
        entry removed, and its topic deleted (unless ``delete_topic`` is false)."""
        consumers = list(self.consumers_by_queue.pop(name, set()))
        for consumer in consumers:
            consumer.channel.consumer_gone(consumer, notify=True)
        await asyncio.gather(*(c.stop() for c in consumers), return_exceptions=True)
        self._forget_positions(name)
        await self._delete_group(name)
        if delete_topic:
            with contextlib.suppress(KafkaError):
                await self.core.delete_topic(topic_for(name))
        self.registry.drop_queue(name)
        await self._save()

    def _forget_positions(self, name: str) -> None:
        self._cursors.pop(name, None)
        self.starts.pop(name, None)

    async def _delete_group(self, name: str) -> None:
        """Remove the ``amqp:Q`` group, consumer or share group (its offsets or share
        partitions would misplace a new queue's readers)."""
        with contextlib.suppress(ShareCoordinatorError):
            shares = self.core.share_driver()
            share_id = share_group_of(name)
            await shares.run(lambda now: shares.coordinator.forget_group(now, share_id))
        group_id = group_of(name)
        try:
            driver = self.core.group_driver(group_id)
        except GroupCoordinatorError:
            return
        coordinator = driver.read()
        if coordinator.group(group_id) is None and not coordinator.fetch_offsets(group_id, None)[1]:
            return
        with contextlib.suppress(Exception):
            await driver.run(lambda now, _token: driver.coordinator.delete_groups(now, [group_id]))

    # ------------------------------------------------------------------ dead letters

    async def dead_letter(
        self, queue: str, partition: int, record: DecodedRecord, reason: str
    ) -> None:
        """Publish a classic queue's record to its dead-letter exchange (``x-death``)."""
        policy = self.policy(queue)
        exchange = policy.dead_letter_exchange
        if exchange is None:
            return
        props = delivery_properties(record, partition)
        headers: dict[str, Any] = dict(props.get("headers") or {})
        headers.pop("x-stream-offset", None)
        headers.pop("x-stream-partition", None)
        key = record.key.decode(errors="replace") if record.key is not None else queue
        routing_key = policy.dead_letter_routing_key or key
        now_s = now_ms() // 1000
        death = {
            "count": 1,
            "reason": reason,
            "queue": queue,
            "time": Timestamp(now_s),
            "exchange": "" if record.key is None else queue,
            "routing-keys": [key],
        }
        expiration = props.pop("expiration", None)  # RabbitMQ drops it, keeps it in x-death
        if expiration is not None:
            death["original-expiration"] = expiration
        deaths = headers.get("x-death")
        if isinstance(deaths, list):
            for entry in deaths:
                if (
                    isinstance(entry, dict)
                    and entry.get("queue") == queue
                    and entry.get("reason") == reason
                ):
                    deaths.remove(entry)
                    count = entry.get("count")
                    death["count"] = (count if isinstance(count, int) else 0) + 1
                    break
            deaths.insert(0, death)
        else:
            headers["x-death"] = [death]
            headers["x-first-death-reason"] = reason
            headers["x-first-death-queue"] = queue
            headers["x-first-death-exchange"] = death["exchange"]
        headers["x-last-death-reason"] = reason
        headers["x-last-death-queue"] = queue
        headers["x-last-death-exchange"] = death["exchange"]
        props["headers"] = headers
        try:
            dests = self.route(exchange, routing_key, props)
        except AmqpError:
            log.debug("dead-letter exchange %s of queue %s is gone: dropped", exchange, queue)
            return
        writes: list[tuple[str, int, bytes]] = []
        for topic, rkey, partitions in dests:
            p = self.partitioner.partition(topic, rkey, partitions)
            batch = build_batch([to_record(props, record.value or b"", rkey, now_ms())])
            writes.append((topic, p, batch))
        if writes:
            results = await self.core.append_many(writes)
            for result in results:
                if isinstance(result, Exception):
                    raise result
