"""The LogEngine contract for the log's lifecycle: retention, DeleteRecords, compaction.

Retention deletes whole segments (never a segment with data younger than retention.ms, and
never data above the log end), DeleteRecords moves the log start offset, compaction keeps the
last record of every key with its offset, drops tombstones after delete.retention.ms, and
never touches the active segment.
"""

from __future__ import annotations

import pytest

from bayou.errors import KafkaError, OffsetOutOfRange
from bayou.protocol.kafka.records import Record, build_batch
from tests.contract.conftest import START_MS, EngineFactory, FakeClock, Opened, run
from tests.contract.test_log_engine import read_all

SMALL = {"segment.bytes": "400"}
DAY_MS = 24 * 3600 * 1000


def one(key: bytes | None, value: bytes | None, ts: int) -> bytes:
    return build_batch([Record(ts, key, value)])


def test_time_retention_deletes_old_segments_only(
    engine_factory: EngineFactory, clock: FakeClock
) -> None:
    async def body() -> None:
        async with Opened(engine_factory, topic_defaults=SMALL) as engine:
            await engine.create_topic("t", 1, {"retention.ms": str(DAY_MS)})
            p = engine.partition("t", 0)
            for i in range(20):
                await p.append(one(b"k", b"v" * 60, START_MS + i))
            clock.now = START_MS + DAY_MS // 2
            await engine.maintain()
            assert p.log_start_offset == 0  # nothing is old enough
            for _ in range(20, 30):
                await p.append(one(b"k", b"v" * 60, clock.now))
            clock.now = START_MS + DAY_MS + 100
            await engine.maintain()
            start = p.log_start_offset
            assert 0 < start <= 20  # the old segments went, the young ones stayed
            got = await read_all(p)
            assert [r.offset for r in got] == list(range(start, 30))
            assert p.log_end_offset == 30
            with pytest.raises(OffsetOutOfRange):
                await p.read(0, 1000)

    run(body())


def test_retention_can_empty_the_log_and_appends_continue(
    engine_factory: EngineFactory, clock: FakeClock
) -> None:
    async def body() -> None:
        async with Opened(engine_factory, topic_defaults=SMALL) as engine:
            await engine.create_topic("t", 1, {"retention.ms": "1000"})
            p = engine.partition("t", 0)
            for i in range(5):
                await p.append(one(b"k", b"v" * 60, START_MS + i))
            clock.now = START_MS + 10_000
            await engine.maintain()
            assert p.log_start_offset == p.log_end_offset == 5
            assert await p.read(5, 1000) == b""
            result = await p.append(one(b"k", b"new", clock.now))
            assert result.base_offset == 5
            assert [r.value for r in await read_all(p)] == [b"new"]

    run(body())


def test_size_retention(engine_factory: EngineFactory) -> None:
    async def body() -> None:
        async with Opened(engine_factory, topic_defaults=SMALL) as engine:
            await engine.create_topic("t", 1, {"retention.bytes": "1000"})
            p = engine.partition("t", 0)
            for i in range(40):
                await p.append(one(b"k", b"v" * 60, START_MS + i))
            await engine.maintain()
            assert p.size_bytes <= 1000 + 400
            assert p.log_start_offset > 0
            got = await read_all(p)
            assert [r.offset for r in got] == list(range(p.log_start_offset, 40))

    run(body())


def test_delete_records_moves_the_log_start(engine_factory: EngineFactory) -> None:
    async def body() -> None:
        async with Opened(engine_factory, topic_defaults=SMALL) as engine:
            await engine.create_topic("t", 1, {})
            p = engine.partition("t", 0)
            for i in range(20):
                await p.append(one(b"k", b"v" * 60, START_MS + i))
            assert await p.delete_records(7) == 7
            assert p.log_start_offset == 7
            got = await read_all(p)
            assert [r.offset for r in got] == list(range(7, 20))
            with pytest.raises(OffsetOutOfRange):
                await p.read(6, 1000)
            assert await p.offset_for_timestamp(START_MS) == (7, START_MS + 7)
            assert await p.delete_records(3) == 7  # never backwards
            with pytest.raises(OffsetOutOfRange):
                await p.delete_records(21)
            assert await p.delete_records(-1) == 20  # -1: up to the high watermark
            await engine.create_topic("c", 1, {"cleanup.policy": "compact"})
            with pytest.raises(KafkaError):
                await engine.partition("c", 0).delete_records(0)

    run(body())


def test_compaction_keeps_the_last_record_of_every_key(
    engine_factory: EngineFactory, clock: FakeClock
) -> None:
    async def body() -> None:
        async with Opened(engine_factory, topic_defaults=SMALL) as engine:
            await engine.create_topic(
                "t",
                1,
                {
                    "cleanup.policy": "compact",
                    "min.cleanable.dirty.ratio": "0.01",
                    "delete.retention.ms": "1000",
                },
            )
            p = engine.partition("t", 0)
            written: dict[bytes, tuple[int, bytes | None]] = {}
            for i in range(60):
                key = b"k%d" % (i % 5)
                value = None if i == 57 else b"v%d" % i  # k2's last record is a tombstone
                result = await p.append(one(key, value, START_MS + i))
                written[key] = (result.base_offset, value)
            active_from = p.log_end_offset
            await p.append(one(b"tail", b"in the active segment", START_MS + 60))
            await engine.maintain()
            got = await read_all(p)
            offsets = [r.offset for r in got]
            assert offsets == sorted(offsets)
            closed = [(r.key, r.offset, r.value) for r in got if r.offset < active_from]
            survivors = {k: (o, v) for k, o, v in closed}
            # every key's last record survives with its offset (the tombstone too, for now)
            for key, (offset, value) in written.items():
                if offset < active_from - 8:  # well inside the closed segments
                    assert survivors[key] == (offset, value)
            assert len(closed) < 30  # older records of each key are gone
            assert got[-1].key == b"tail"
            assert p.log_end_offset == active_from + 1
            for i in range(10):  # close the tail segment: the tombstone gets cleaned once
                await p.append(one(b"k%d" % (i % 2), b"x" * 60, clock.now))
            await engine.maintain()
            assert any(r.key == b"k2" and r.value is None for r in await read_all(p))
            # once delete.retention.ms has passed since it was first cleaned, it goes
            clock.now += 10_000
            for i in range(10):
                await p.append(one(b"k%d" % (i % 2), b"y" * 60, clock.now))
            await engine.maintain()
            after = await read_all(p)
            assert all(r.key != b"k2" for r in after)
            keys = {r.key for r in after}
            assert {b"k0", b"k1", b"k3", b"k4", b"tail"} <= keys

    run(body())
