"""The LogEngine contract: appends, reads, offsets, time lookups, idempotence, admin.

Runs unchanged on every engine (``conftest.ENGINES``).  What is checked is what a client of
the core sees: every record back in order with its key, value, headers and timestamp, the
offsets the append answered, the errors Kafka would give.
"""

from __future__ import annotations

import asyncio

import pytest

from bayou.errors import (
    CorruptMessage,
    InvalidPartitions,
    InvalidTopic,
    KafkaError,
    MessageTooLarge,
    OffsetOutOfRange,
    OutOfOrderSequence,
    TopicAlreadyExists,
    UnknownTopicOrPartition,
)
from bayou.protocol.kafka.records import (
    TIMESTAMP_LOG_APPEND_TIME,
    DecodedRecord,
    Record,
    build_batch,
    iter_batches,
    iter_records,
    parse_header,
)
from bayou.storage.engine import Partition
from tests.contract.conftest import START_MS, EngineFactory, FakeClock, Opened, run


def records_of(data: bytes | bytearray | memoryview, start: int = 0) -> list[DecodedRecord]:
    view = memoryview(data)
    out: list[DecodedRecord] = []
    for pos, header in iter_batches(view):
        if header.is_control:
            continue
        out.extend(r for r in iter_records(view[pos : pos + header.size]) if r.offset >= start)
    return out


async def read_all(partition: Partition, start: int | None = None) -> list[DecodedRecord]:
    offset = partition.log_start_offset if start is None else start
    out: list[DecodedRecord] = []
    for _ in range(10_000):
        if offset >= partition.log_end_offset:
            break
        data = await partition.read(offset, 64 * 1024)
        got = records_of(data, offset)
        out.extend(got)
        last = max(h.last_offset for _p, h in iter_batches(memoryview(data)))
        offset = last + 1
    return out


def batch(
    *values: bytes | None,
    key: bytes | None = b"k",
    ts: int = START_MS,
    headers: list[tuple[str, bytes | None]] | None = None,
    **kw: int,
) -> bytes:
    return build_batch([Record(ts + i, key, v, headers or []) for i, v in enumerate(values)], **kw)


def test_append_assigns_offsets_and_reads_back_every_record(
    engine_factory: EngineFactory,
) -> None:
    async def body() -> None:
        async with Opened(engine_factory) as engine:
            await engine.create_topic("t", 2, {})
            p = engine.partition("t", 1)
            r1 = await p.append(batch(b"a", b"b", headers=[("h", b"1"), ("n", None)]))
            r2 = await p.append(batch(b"c", key=None))
            assert (r1.base_offset, r1.last_offset, r1.record_count) == (0, 1, 2)
            assert (r2.base_offset, r2.last_offset) == (2, 2)
            assert r1.log_append_time_ms == -1
            assert p.log_start_offset == 0 and p.log_end_offset == 3
            got = await read_all(p)
            assert [(r.offset, r.key, r.value, r.timestamp, r.headers) for r in got] == [
                (0, b"k", b"a", START_MS, [("h", b"1"), ("n", None)]),
                (1, b"k", b"b", START_MS + 1, [("h", b"1"), ("n", None)]),
                (2, None, b"c", START_MS, []),
            ]
            assert engine.partition("t", 0).log_end_offset == 0

    run(body())


def test_reads_are_whole_batches_at_least_one_and_bounded(engine_factory: EngineFactory) -> None:
    async def body() -> None:
        async with Opened(engine_factory) as engine:
            await engine.create_topic("t", 1, {})
            p = engine.partition("t", 0)
            sizes = []
            for i in range(5):
                b = batch(*[bytes([65 + i]) * 100] * 3)
                sizes.append(len(b))
                await p.append(b)
            # from the middle of the second batch: that whole batch comes back first
            data = await p.read(4, 1)
            headers = [h for _pos, h in iter_batches(memoryview(data))]
            assert [(h.base_offset, h.last_offset) for h in headers] == [(3, 5)]
            assert len(data) == sizes[1]  # at least one batch even over max_bytes
            data = await p.read(0, sizes[0] + sizes[1] + 10)
            assert [h.base_offset for _p, h in iter_batches(memoryview(data))] == [0, 3]
            assert await p.read(15, 1000) == b""
            with pytest.raises(OffsetOutOfRange):
                await p.read(16, 1000)
            with pytest.raises(OffsetOutOfRange):
                await p.read(-1, 1000)

    run(body())


def test_unknown_partitions_corrupt_and_oversized_batches_are_refused(
    engine_factory: EngineFactory,
) -> None:
    async def body() -> None:
        async with Opened(engine_factory) as engine:
            await engine.create_topic("t", 1, {"max.message.bytes": "200"})
            with pytest.raises(UnknownTopicOrPartition):
                engine.partition("t", 1)
            with pytest.raises(UnknownTopicOrPartition):
                engine.partition("nope", 0)
            p = engine.partition("t", 0)
            good = bytearray(batch(b"x"))
            good[-1] ^= 0xFF  # the CRC no longer matches
            with pytest.raises(CorruptMessage):
                await p.append(bytes(good))
            with pytest.raises(MessageTooLarge):
                await p.append(batch(b"y" * 300))
            assert p.log_end_offset == 0
            results = await engine.append_many(
                [("t", 0, batch(b"ok")), ("nope", 0, batch(b"x")), ("t", 0, batch(b"ok2"))]
            )
            assert [type(r).__name__ for r in results] == [
                "AppendResult",
                "UnknownTopicOrPartition",
                "AppendResult",
            ]
            assert [r.value for r in await read_all(p)] == [b"ok", b"ok2"]

    run(body())


def test_idempotent_producer_retries_get_their_first_offsets(
    engine_factory: EngineFactory,
) -> None:
    async def body() -> None:
        async with Opened(engine_factory) as engine:
            await engine.create_topic("t", 1, {})
            p = engine.partition("t", 0)
            pid = await engine.allocate_producer_id()
            assert await engine.allocate_producer_id() != pid
            first = batch(b"a", b"b", producer_id=pid, producer_epoch=0, base_sequence=0)
            r1 = await p.append(first)
            r2 = await p.append(batch(b"c", producer_id=pid, producer_epoch=0, base_sequence=2))
            again = await p.append(first)  # a retry of the first batch
            assert (again.base_offset, again.last_offset) == (r1.base_offset, r1.last_offset)
            with pytest.raises(OutOfOrderSequence):
                await p.append(batch(b"d", producer_id=pid, producer_epoch=0, base_sequence=9))
            assert p.log_end_offset == r2.last_offset + 1 == 3
            assert [r.value for r in await read_all(p)] == [b"a", b"b", b"c"]

    run(body())


def test_offsets_by_time_and_the_largest_timestamp(engine_factory: EngineFactory) -> None:
    async def body() -> None:
        async with Opened(engine_factory, topic_defaults={"segment.bytes": "300"}) as engine:
            await engine.create_topic("t", 1, {})
            p = engine.partition("t", 0)
            for i in range(10):  # timestamps 0, 10, 20 … after START_MS; several segments
                await p.append(build_batch([Record(START_MS + 10 * i, b"k", b"v" * 50)]))
            await p.append(build_batch([Record(START_MS + 5, b"k", b"late")]))  # offset 10
            assert await p.offset_for_timestamp(START_MS) == (0, START_MS)
            assert await p.offset_for_timestamp(START_MS + 41) == (5, START_MS + 50)
            assert await p.offset_for_timestamp(START_MS + 90) == (9, START_MS + 90)
            assert await p.offset_for_timestamp(START_MS + 91) is None
            assert await p.max_timestamp() == (9, START_MS + 90)

    run(body())


def test_log_append_time_topics_stamp_every_batch(
    engine_factory: EngineFactory, clock: FakeClock
) -> None:
    async def body() -> None:
        async with Opened(engine_factory) as engine:
            await engine.create_topic("t", 1, {"message.timestamp.type": "LogAppendTime"})
            p = engine.partition("t", 0)
            clock.now = START_MS + 12345
            result = await p.append(batch(b"a", b"b", ts=1))
            assert result.log_append_time_ms == START_MS + 12345
            data = await p.read(0, 10_000)
            assert parse_header(data).timestamp_type == TIMESTAMP_LOG_APPEND_TIME
            assert [r.timestamp for r in records_of(data)] == [START_MS + 12345] * 2
            assert await p.offset_for_timestamp(START_MS + 12345) == (0, START_MS + 12345)

    run(body())


def test_data_landed_notifications(engine_factory: EngineFactory) -> None:
    async def body() -> None:
        async with Opened(engine_factory) as engine:
            await engine.create_topic("t", 2, {})
            assert not await engine.wait_for_data([("t", 0)], 0.01)
            waiting = asyncio.ensure_future(engine.wait_for_data([("t", 0), ("t", 1)], 5.0))
            await asyncio.sleep(0)
            assert not waiting.done()
            await engine.partition("t", 1).append(batch(b"x"))
            assert await asyncio.wait_for(waiting, 5.0) is True
            other = asyncio.ensure_future(engine.wait_for_data([("t", 0)], 5.0))
            await asyncio.sleep(0)
            await engine.partition("t", 1).append(batch(b"y"))  # another partition
            await asyncio.sleep(0.05)
            assert not other.done()
            engine.wake_all()
            assert await asyncio.wait_for(other, 5.0) is True

    run(body())


def test_topic_admin(engine_factory: EngineFactory) -> None:
    async def body() -> None:
        async with Opened(engine_factory, topic_defaults={"retention.ms": "1000"}) as engine:
            meta = await engine.create_topic("orders", 2, {"cleanup.policy": "compact"})
            assert engine.topics()["orders"] == meta
            assert engine.topic_by_id(meta.topic_id) == meta
            assert engine.topic_config("orders").compact
            assert engine.topic_config("orders").retention_ms == 1000
            with pytest.raises(TopicAlreadyExists):
                await engine.create_topic("orders", 1, {})
            with pytest.raises(InvalidTopic):
                await engine.create_topic("bad name", 1, {})
            with pytest.raises(InvalidTopic):  # '.' and '_' collide
                await engine.create_topic("a.b", 1, {})
                await engine.create_topic("a_b", 1, {})
            with pytest.raises(KafkaError):
                await engine.create_topic("x", 1, {"retention.ms": "soon"})
            checked = await engine.create_topic("dry", 3, {}, validate_only=True)
            assert checked.partitions == 3 and "dry" not in engine.topics()
            with pytest.raises(InvalidPartitions):
                await engine.create_partitions("orders", 2)
            await engine.create_partitions("orders", 4)
            assert engine.topics()["orders"].partitions == 4
            assert engine.partition("orders", 3).log_end_offset == 0
            await engine.alter_topic_configs("orders", {"retention.ms": "5000"})
            assert engine.partition("orders", 0).config.retention_ms == 5000
            assert not engine.partition("orders", 0).config.compact  # replaced, not merged
            await engine.alter_broker_configs("default", {"retention.ms": "7000"})
            assert engine.topic_config("a.b").retention_ms == 7000
            assert engine.partition("orders", 0).config.retention_ms == 5000
            old = engine.partition("orders", 0)
            await old.append(batch(b"x"))
            await engine.delete_topic("orders")
            assert "orders" not in engine.topics()
            with pytest.raises(UnknownTopicOrPartition):
                engine.partition("orders", 0)
            with pytest.raises(UnknownTopicOrPartition):
                await engine.delete_topic("orders")
            again = await engine.create_topic("orders", 1, {})
            assert again.topic_id != meta.topic_id
            assert engine.partition("orders", 0).log_end_offset == 0

    run(body())


def test_topics_data_and_producer_state_survive_a_restart_of_a_durable_engine(
    engine_factory: EngineFactory,
) -> None:
    if engine_factory.kind == "memory":  # type: ignore[attr-defined]
        return  # nothing outlives the process: that is the memory engine's contract

    async def body() -> None:
        async with Opened(engine_factory) as engine:
            meta = await engine.create_topic("t", 2, {"retention.ms": "123456"})
            await engine.alter_broker_configs("default", {"retention.bytes": "999999"})
            p = engine.partition("t", 1)
            pid = await engine.allocate_producer_id()
            idempotent = batch(b"a", b"b", producer_id=pid, producer_epoch=0, base_sequence=0)
            first = await p.append(idempotent)
            await p.append(batch(b"c", key=None))
        async with Opened(engine_factory) as engine:
            assert engine.topics()["t"] == meta
            assert engine.topic_config("t").retention_ms == 123456
            assert engine.topic_config("t").retention_bytes == 999999
            p = engine.partition("t", 1)
            assert (p.log_start_offset, p.log_end_offset) == (0, 3)
            assert engine.partition("t", 0).log_end_offset == 0
            assert p.producers()[pid].last_seq == 1  # DescribeProducers knows it at once
            again = await p.append(idempotent)  # the producer's retry, after the restart
            assert (again.base_offset, again.last_offset) == (first.base_offset, first.last_offset)
            with pytest.raises(OutOfOrderSequence):
                await p.append(batch(b"d", producer_id=pid, producer_epoch=0, base_sequence=5))
            got = await read_all(p)
            assert [(r.offset, r.key, r.value) for r in got] == [
                (0, b"k", b"a"),
                (1, b"k", b"b"),
                (2, None, b"c"),
            ]
            assert await engine.allocate_producer_id() > pid  # ids are never handed out twice

    run(body())
