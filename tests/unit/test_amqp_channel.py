"""The AMQP channel and its consumers without a socket: a real ``Core`` on the memory engine,
the real ``Channel``, ``Topology`` and ``Consumer``, and a stand-in connection that records
what the channel sends (the interfaces of ``bayou/gateways/amqp/interfaces.py``)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import asynccontextmanager
from typing import Any

from bayou.core import Core, CoreSettings, StartSpec
from bayou.core.partitioner import Partitioner
from bayou.gateways.amqp.channel import Channel
from bayou.gateways.amqp.consumers import Consumer
from bayou.gateways.amqp.interfaces import ChannelHandle, ConsumerHandle, GroupReader, Settler
from bayou.gateways.amqp.topology import Topology
from bayou.protocol.amqp import AmqpError, MessageReceived, Method, MethodReceived, method
from bayou.protocol.kafka.records import DecodedRecord, Record, build_batch
from bayou.storage.memory import MemoryEngine

WAIT_S = 10.0


async def until(what: str, check: Callable[[], bool], timeout: float = WAIT_S) -> None:
    """Bounded poll on the event loop (the tasks under test run meanwhile)."""
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.01)


@asynccontextmanager
async def running_core() -> AsyncIterator[Core]:
    engine = MemoryEngine()
    core = Core(engine, CoreSettings())
    await engine.open()
    await engine.start()
    await core.start()
    try:
        yield core
    finally:
        core.begin_stop()
        await core.close()
        await engine.close()


# ----------------------------------------------------------------------------- a channel


class Wire:
    """Stands in for ``ServerConnection``: keeps what the channel sends, in order."""

    def __init__(self) -> None:
        self.sent: list[tuple[Method, dict[str, Any] | None, bytes | None]] = []

    def send_method(self, channel: int, m: Method) -> bool:
        self.sent.append((m, None, None))
        return True

    def send_content(
        self, channel: int, m: Method, properties: Mapping[str, Any], body: bytes
    ) -> bool:
        self.sent.append((m, dict(properties), bytes(body)))
        return True

    def channel_close_ok(self, channel: int) -> None:
        self.sent.append((method("channel.close_ok"), None, None))

    def named(self, name: str) -> list[tuple[Method, dict[str, Any] | None, bytes | None]]:
        return [s for s in self.sent if s[0].name == name]


class Connection:
    """A ``ChannelConnection`` without a socket."""

    def __init__(self) -> None:
        self.proto = Wire()
        self.write_paused = False
        self.peer_host = "127.0.0.1"
        self.exclusive_queues: set[str] = set()
        self.errors: list[AmqpError] = []

    def flush_soon(self) -> None:
        return None

    def maybe_resume_reading(self) -> None:
        return None

    def channel_error(self, channel: ChannelHandle, exc: AmqpError) -> None:
        self.errors.append(exc)
        channel.abort()

    def allowed(self, operation: object, resource_type: object, name: str) -> bool:
        return True  # no authorizer


def open_channel(core: Core, topology: Topology) -> tuple[Channel, Wire, Connection]:
    conn = Connection()
    channel = Channel(
        conn,
        1,
        core=core,
        topology=topology,  # type: ignore[arg-type]
        partitioner=Partitioner(),
    )
    return channel, conn.proto, conn


def call(channel: Channel, name: str, **args: Any) -> None:
    channel.submit(MethodReceived(1, method(name, **args)))


def publish(
    channel: Channel,
    exchange: str,
    routing_key: str,
    body: bytes,
    headers: dict[str, Any] | None = None,
) -> None:
    props: dict[str, Any] = {"headers": headers} if headers else {}
    channel.submit(
        MessageReceived(
            1, method("basic.publish", exchange=exchange, routing_key=routing_key), props, body
        )
    )


def test_declare_publish_confirm_consume_ack_and_get() -> None:
    async def body() -> None:
        async with running_core() as core:
            topology = Topology(core)
            await topology.load()
            channel, wire, conn = open_channel(core, topology)
            call(channel, "confirm.select")
            call(channel, "queue.declare", queue="jobs")
            for i in range(3):
                publish(channel, "", "jobs", b"m%d" % i, {"n": i})
            await until("the burst confirmed", lambda: bool(wire.named("basic.ack")))
            ((ack, _p, _b),) = wire.named("basic.ack")
            assert (ack.delivery_tag, ack.multiple) == (3, True)  # one ack for the burst
            assert core.partition("jobs", 0).log_end_offset == 3

            call(channel, "basic.qos", prefetch_count=2)
            call(channel, "basic.consume", queue="jobs", consumer_tag="c1")
            await until("two deliveries", lambda: len(wire.named("basic.deliver")) == 2)
            await asyncio.sleep(0.05)
            assert len(wire.named("basic.deliver")) == 2  # prefetch holds the third back
            first, props, payload = wire.named("basic.deliver")[0]
            assert (first.routing_key, payload) == ("jobs", b"m0")
            assert props is not None and props["headers"]["n"] == 0
            assert props["headers"]["x-stream-offset"] == 0
            channel.settle(method("basic.ack", delivery_tag=first.delivery_tag))
            await until("the third delivery", lambda: len(wire.named("basic.deliver")) == 3)
            assert [b for _m, _p, b in wire.named("basic.deliver")] == [b"m0", b"m1", b"m2"]

            # basic.get on a second queue fed through a bound exchange
            call(channel, "exchange.declare", exchange="x", type="direct", durable=True)
            call(channel, "queue.declare", queue="other", durable=True)
            call(channel, "queue.bind", queue="other", exchange="x", routing_key="k")
            publish(channel, "x", "k", b"routed")
            call(channel, "basic.get", queue="other")
            await until("basic.get answered", lambda: bool(wire.named("basic.get_ok")))
            ((got, _p, got_body),) = wire.named("basic.get_ok")
            assert (got_body, got.routing_key, got.message_count) == (b"routed", "k", 0)
            assert not conn.errors
            await channel.drain()

    asyncio.run(body())


def test_stream_queue_group_consumers_on_two_channels_share_partitions_and_commit_acks() -> None:
    async def body() -> None:
        async with running_core() as core:
            topology = Topology(core)
            await topology.load()
            ch1, wire1, _c1 = open_channel(core, topology)
            ch2, _wire2, _c2 = open_channel(core, topology)
            call(
                ch1,
                "queue.declare",
                queue="work",
                durable=True,
                arguments={"x-partitions": 4, "x-queue-type": "stream"},
            )
            for i in range(40):  # through the queue's own exchange: keyed, spread by key
                publish(ch1, "work", f"key-{i}", b"m%d" % i)
            call(ch1, "basic.consume", queue="work", consumer_tag="a")
            await until(
                "the first member has everything", lambda: len(wire1.named("basic.deliver")) == 40
            )
            call(ch2, "basic.consume", queue="work", consumer_tag="b")
            await until("the second member", lambda: "b" in ch2.consumers)
            a, b = ch1.consumers["a"], ch2.consumers["b"]
            await until(
                "the partitions shared",
                lambda: len(a.cursors) == 2 and len(b.cursors) == 2,
                timeout=15,
            )
            assert not set(a.cursors) & set(b.cursors)
            # nothing acked: the group's offsets stay at the start of what a had
            committed = core.offsets("amqp:work").committed(None)
            assert all(offset == 0 for offset, _meta in committed.values())
            by_partition: dict[int, list[Method]] = {}
            for m, props, _b in wire1.sent:
                if m.name == "basic.deliver" and props is not None:
                    by_partition.setdefault(props["headers"]["x-stream-partition"], []).append(m)
            kept = max(sorted(a.cursors), key=lambda p: len(by_partition[p]))
            tags = [m.delivery_tag for m in by_partition[kept]]
            assert len(tags) >= 2
            ch1.settle(method("basic.ack", delivery_tag=tags[1]))  # the second, not the first
            await asyncio.sleep(0.1)
            assert core.offsets("amqp:work").committed(None)[("work", kept)][0] == 0
            ch1.settle(method("basic.ack", delivery_tag=tags[0]))
            expected = 2 if len(tags) > 2 else a.cursors[kept].position
            await until(
                "the lowest unacked offset committed",
                lambda: core.offsets("amqp:work").committed(None)[("work", kept)][0] == expected,
            )
            await ch1.drain()
            await ch2.drain()

    asyncio.run(body())


# ----------------------------------------------------------------------------- a consumer


class Deliveries:
    """A ``DeliveryChannel`` that keeps what it is handed."""

    def __init__(self) -> None:
        self.global_prefetch = 0
        self.got: list[tuple[int, int, bool]] = []  # (partition, offset, redelivered)
        self.settlers: dict[int, Settler] = {}
        self.gone: list[str] = []

    @property
    def unacked_count(self) -> int:
        return len(self.settlers)

    def paused(self) -> bool:
        return False

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
        self.got.append((partition, record.offset, redelivered))
        self.settlers[len(self.got)] = settler
        return len(self.got)

    def consumer_gone(self, consumer: ConsumerHandle, *, notify: bool) -> None:
        self.gone.append(consumer.tag)

    def flush_soon(self) -> None:
        return None


class Queues:
    """``QueuePositions`` of a stream queue (no temporary-queue start)."""

    def __init__(self) -> None:
        self.stopped_at: dict[int, int] = {}

    def queue_start(self, queue: str, partition: int) -> int | None:
        return None

    def consumer_stopped(self, queue: str, positions: Mapping[int, int]) -> None:
        self.stopped_at = dict(positions)

    def group_changed(self, reader: GroupReader) -> None:
        return None


def test_a_consumer_delivers_within_prefetch_redelivers_and_reports_where_it_stopped() -> None:
    async def body() -> None:
        async with running_core() as core:
            await core.create_topic("s", 1, {})
            await core.append(
                "s", 0, build_batch([Record(0, None, b"v%d" % i, []) for i in range(5)])
            )
            channel, queues = Deliveries(), Queues()
            consumer = Consumer(
                core,
                channel,
                queues,
                "t",
                "s",
                no_ack=False,
                start=StartSpec("offset", 1),
                group=None,
                prefetch=3,
            )
            await consumer.start()
            await until("three deliveries", lambda: len(channel.got) == 3)
            assert channel.got == [(0, 1, False), (0, 2, False), (0, 3, False)]
            consumer.requeue(0, 2)  # nack with requeue: delivered again, marked
            await until("the redelivery", lambda: len(channel.got) == 4)
            assert channel.got[3] == (0, 2, True)
            consumer.settled(0, 1)
            await until("the next one", lambda: len(channel.got) == 5)
            assert channel.got[4] == (0, 4, False)
            await consumer.stop()
            assert queues.stopped_at == {0: 2}  # the lowest offset not acked
            assert channel.gone == []

    asyncio.run(body())


def test_a_consumer_of_a_deleted_topic_cancels_itself() -> None:
    async def body() -> None:
        async with running_core() as core:
            await core.create_topic("gone", 1, {})
            channel = Deliveries()
            consumer = Consumer(
                core,
                channel,
                Queues(),
                "t",
                "gone",
                no_ack=True,
                start=StartSpec("next"),
                group=None,
                prefetch=0,
            )
            await consumer.start()
            await core.delete_topic("gone")
            await until("the consumer cancelled", lambda: channel.gone == ["t"])
            await consumer.stop()

    asyncio.run(body())
