"""The core's Cursor over every engine: positions, markers, gaps, resets, waiting."""

from __future__ import annotations

import asyncio

import pytest

from bayou.core import Cursor, StartSpec, resolve_start, wait_any
from bayou.errors import OffsetOutOfRange, UnknownTopicOrPartition
from bayou.protocol.kafka.records import Record, build_batch
from tests.contract.conftest import START_MS, EngineFactory, FakeClock, Opened, run


def values(n: int, start: int = 0) -> bytes:
    return build_batch([Record(START_MS + start + i, b"k", b"v%d" % (start + i)) for i in range(n)])


def test_reads_every_record_in_order_skipping_markers(engine_factory: EngineFactory) -> None:
    async def body() -> None:
        async with Opened(engine_factory) as engine:
            await engine.create_topic("t", 1, {})
            p = engine.partition("t", 0)
            await p.append(values(3))
            await p.write_marker(7, 0, True, 0)
            await p.append(values(2, 3))
            cursor = Cursor(engine, "t", 0, 1)
            got = await cursor.read()
            assert [(r.offset, r.value) for r in got] == [
                (1, b"v1"),
                (2, b"v2"),
                (4, b"v3"),
                (5, b"v4"),
            ]
            assert cursor.position == 6 and cursor.lag() == 0
            assert await cursor.read() == []
            # max_records stops inside a batch; the position is the first record not returned
            cursor.position = 0
            first = await cursor.read(max_records=2)
            assert [r.offset for r in first] == [0, 1] and cursor.position == 2
            assert (await cursor.record_at(4)).value == b"v3"  # type: ignore[union-attr]
            assert await cursor.record_at(3) is None  # the marker
            assert cursor.position == 2

    run(body())


def test_reset_policies(engine_factory: EngineFactory) -> None:
    async def body() -> None:
        async with Opened(engine_factory, topic_defaults={"segment.bytes": "300"}) as engine:
            await engine.create_topic("t", 1, {})
            p = engine.partition("t", 0)
            for i in range(10):
                await p.append(values(1, i))
            await p.delete_records(6)
            early = Cursor(engine, "t", 0, 2, reset="earliest")
            assert [r.offset for r in await early.read()] == [6, 7, 8, 9]
            late = Cursor(engine, "t", 0, 2, reset="latest")
            assert await late.read() == [] and late.position == 10
            strict = Cursor(engine, "t", 0, 2, reset="none")
            with pytest.raises(OffsetOutOfRange):
                await strict.read()
            beyond = Cursor(engine, "t", 0, 99, reset="earliest")  # Kafka: the log start
            assert [r.offset for r in await beyond.read()] == [6, 7, 8, 9]
            past = Cursor(engine, "t", 0, 99, reset="latest")
            assert await past.read() == [] and past.position == 10

    run(body())


def test_start_specs(engine_factory: EngineFactory, clock: FakeClock) -> None:
    async def body() -> None:
        async with Opened(engine_factory) as engine:
            await engine.create_topic("t", 1, {})
            p = engine.partition("t", 0)
            await p.append(values(5))
            assert await resolve_start(p, StartSpec("earliest")) == 0
            assert await resolve_start(p, StartSpec("latest")) == 5
            assert await resolve_start(p, StartSpec("last")) == 4
            assert await resolve_start(p, StartSpec("offset", 3)) == 3
            assert await resolve_start(p, StartSpec("offset", 99)) == 5
            assert await resolve_start(p, StartSpec("timestamp", START_MS + 2)) == 2
            assert await resolve_start(p, StartSpec("timestamp", START_MS + 50)) == 5

    run(body())


def test_waiting_for_data(engine_factory: EngineFactory) -> None:
    async def body() -> None:
        async with Opened(engine_factory) as engine:
            await engine.create_topic("t", 2, {})
            a = Cursor(engine, "t", 0, 0)
            b = Cursor(engine, "t", 1, 0)
            assert not await wait_any(engine, [a, b], 0.01)
            waiting = asyncio.ensure_future(wait_any(engine, [a, b], 5.0))
            await asyncio.sleep(0)
            await engine.partition("t", 1).append(values(1))
            assert await asyncio.wait_for(waiting, 5.0)
            assert await b.wait(0.01) and not await a.wait(0.01)
            assert [r.value for r in await b.read()] == [b"v0"]
            await engine.delete_topic("t")
            with pytest.raises(UnknownTopicOrPartition):
                await a.read()

    run(body())


def test_read_committed_stops_at_open_transactions_and_skips_aborted_ones(
    engine_factory: EngineFactory,
) -> None:
    def txn(pid: int, seq: int, value: bytes) -> bytes:
        return build_batch(
            [Record(START_MS, b"k", value)],
            producer_id=pid,
            producer_epoch=0,
            base_sequence=seq,
            is_transactional=True,
        )

    async def body() -> None:
        async with Opened(engine_factory) as engine:
            await engine.create_topic("t", 1, {})
            p = engine.partition("t", 0)
            await p.append(values(1))  # 0: v0
            await p.append(txn(1, 0, b"aborted"))  # 1
            await p.append(txn(2, 0, b"committed"))  # 2
            await p.append(values(1, 1))  # 3: v1
            await p.write_marker(1, 0, False, 0)  # 4: abort producer 1
            await p.append(txn(3, 0, b"open"))  # 5: still open
            committed = Cursor(engine, "t", 0, 0, isolation="read_committed")
            got = await committed.read()
            assert [r.value for r in got] == [b"v0"]  # producer 2's transaction is open
            assert committed.position == 2 and not committed.ready()
            await p.write_marker(2, 0, True, 0)  # 6
            got = await committed.read()
            assert [r.value for r in got] == [b"committed", b"v1"]
            assert committed.position == 5  # stopped at producer 3's open transaction
            waiting = asyncio.ensure_future(committed.wait(5.0))
            await p.write_marker(3, 0, False, 0)  # 7: aborts the open one
            assert await asyncio.wait_for(waiting, 5.0)
            assert await committed.read() == [] and committed.position == 8
            everything = Cursor(engine, "t", 0, 0)
            assert [r.value for r in await everything.read()] == [
                b"v0",
                b"aborted",
                b"committed",
                b"v1",
                b"open",
            ]

    run(body())
