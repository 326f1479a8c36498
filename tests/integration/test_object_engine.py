"""The ``s3://`` engine in process, on the test run's PostgreSQL and SeaweedFS: one object per
flush holding many partitions' batches; reads from an empty, bounded cache; retention,
topic deletion and compaction leaving no object behind that nothing refers to; orphaned
objects deleted after their grace; a failed PUT acknowledging nothing; and the
``postgres://`` engine refusing a database whose batches are in objects."""

from __future__ import annotations

import asyncio
import os
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from bayou.config import internal_log_config, parse_topic_configs
from bayou.errors import InvalidConfig, KafkaError
from bayou.protocol.kafka.records import Record, build_batch, iter_batches, iter_records
from bayou.storage.maintenance import MaintenanceSettings
from bayou.storage.objects import ObjectStore
from bayou.storage.postgres import PostgresEngine
from bayou.storage.s3 import ObjectEngine, ObjectEngineSettings
from bayou.storage.s3.flusher import OBJECTS, object_key
from tests.support.fault_proxy import FaultProxy
from tests.support.ports import free_port
from tests.support.postgres import PostgresServer
from tests.support.seaweedfs import SeaweedFS

START_MS = 1_700_000_000_000


class Clock:
    def __init__(self) -> None:
        self.now = START_MS

    def __call__(self) -> int:
        return self.now


class Setup:
    """A database, a key prefix and the environment: engines opened on them share data."""

    def __init__(self, tmp_path: Path, database: str, s3: SeaweedFS) -> None:
        self.tmp_path = tmp_path
        self.s3 = s3
        self.database = database
        self.prefix = f"engine-{uuid.uuid4().hex[:12]}"
        self.environ = {**os.environ, **s3.env}
        self.clock = Clock()
        self.store = ObjectStore.from_url(s3.url(self.prefix), self.environ)
        self.opened = 0

    def engine(self, endpoint: str | None = None, **params: Any) -> ObjectEngine:
        query = {"metadata": self.database, "flush_ms": 5, **params}
        url = self.s3.url(self.prefix, **query)
        if endpoint is not None:
            url = url.replace(f"endpoint={self.s3.endpoint}", f"endpoint={endpoint}")
        self.opened += 1
        return ObjectEngine(
            ObjectEngineSettings.from_url(url),
            self.tmp_path / f"data{self.opened}" / "object-cache",
            parse_topic_configs({}),
            internal_config=internal_log_config(),
            maintenance=MaintenanceSettings(interval_ms=3_600_000),
            clock_ms=self.clock,
            environ=self.environ,
        )

    async def object_keys(self) -> set[str]:
        return {info.key for info in await self.store.list(OBJECTS)}


@pytest.fixture
def setup(tmp_path: Path, postgres_server: PostgresServer, seaweedfs: SeaweedFS) -> Iterator[Setup]:
    yield Setup(tmp_path, postgres_server.create_database(), seaweedfs)


def batch(i: int, size: int = 100, key: bytes | None = None) -> bytes:
    value = f"v{i}-".encode() + bytes([i % 251]) * size
    return build_batch([Record(START_MS + i, key or b"k%d" % i, value, [("n", b"%d" % i)])])


async def read_values(engine: ObjectEngine, topic: str, partition: int) -> list[bytes]:
    p = engine.partition(topic, partition)
    out: list[bytes] = []
    offset = p.log_start_offset
    while offset < p.log_end_offset:
        data = memoryview(bytes(await p.read(offset, 64 * 1024)))
        assert data
        for pos, header in iter_batches(data):
            records = iter_records(data[pos : pos + header.size])
            out.extend(r.value or b"" for r in records if r.offset >= offset)
            offset = header.last_offset + 1
    return out


def test_one_object_per_flush_holds_every_partition(setup: Setup) -> None:
    async def body() -> None:
        engine = setup.engine(flush_ms=60_000, flush_bytes=7 * 1100)
        await engine.open()
        try:
            await engine.create_topic("t", 8, {})
            # seven appends of more than 1.1 KB fill the object: one PUT for all of them
            results = await asyncio.gather(
                *(engine.append_many([("t", i, batch(i, 1100))]) for i in range(7))
            )
            assert all(not isinstance(r[0], KafkaError) for r in results)
            keys = await setup.object_keys()
            assert len(keys) == 1
            assert engine.flusher.objects_written == 1
            for i in range(7):
                assert engine.partition("t", i).log_end_offset == 1
                assert (await read_values(engine, "t", i))[0].startswith(b"v%d-" % i)
        finally:
            await engine.close()

    asyncio.run(body())


def test_reads_from_an_empty_bounded_cache(setup: Setup) -> None:
    async def body() -> None:
        first = setup.engine()
        await first.open()
        try:
            await first.create_topic("t", 3, {})
            for i in range(0, 300, 3):  # three partitions' appends in each object
                await asyncio.gather(
                    *(first.append_many([("t", p, batch(i + p, 2000))]) for p in range(3))
                )
            expected = [await read_values(first, "t", p) for p in range(3)]
        finally:
            await first.close()
        assert [len(v) for v in expected] == [100, 100, 100]
        second = setup.engine(cache_bytes=64 * 1024, chunk_bytes=16 * 1024)
        await second.open()
        try:
            for p in range(3):
                assert await read_values(second, "t", p) == expected[p]
            assert second.cache.gets > 0
            assert second.cache.chunks.size_bytes <= 64 * 1024
            # lookups by time decode batches from objects too
            found = await second.partition("t", 1).offset_for_timestamp(START_MS + 151)
            assert found == (50, START_MS + 151)
            assert await second.partition("t", 2).max_timestamp() == (99, START_MS + 299)
        finally:
            await second.close()

    asyncio.run(body())


def test_a_cache_smaller_than_one_read_still_serves_it(setup: Setup) -> None:
    """A range that spans more chunks than the cache holds is read from the store, uncached:
    a small cache costs GETs, never a failed fetch."""

    async def body() -> None:
        first = setup.engine()
        await first.open()
        try:
            await first.create_topic("s", 1, {})
            for i in range(20):
                await first.append_many([("s", 0, batch(i, 3000))])
            expected = await read_values(first, "s", 0)
        finally:
            await first.close()
        # room for one 4 KiB chunk; every batch spans two chunks or more
        second = setup.engine(cache_bytes=4 * 1024, chunk_bytes=4 * 1024)
        await second.open()
        try:
            assert await read_values(second, "s", 0) == expected
            assert second.cache.chunks.size_bytes <= 4 * 1024
        finally:
            await second.close()

    asyncio.run(body())


def test_retention_deletion_and_compaction_leave_no_unreferenced_object(setup: Setup) -> None:
    async def body() -> None:
        engine = setup.engine()
        await engine.open()
        try:
            await engine.create_topic("r", 1, {"segment.bytes": "2000", "retention.bytes": "3000"})
            for i in range(40):
                await engine.append_many([("r", 0, batch(i, 300))])
            before = await setup.object_keys()
            assert len(before) == 40  # one flush per append here
            await engine.maintain()
            start = engine.partition("r", 0).log_start_offset
            assert start > 20
            after = await setup.object_keys()
            assert len(after) == 40 - start  # only the objects still holding batches
            assert (await read_values(engine, "r", 0))[0].startswith(b"v%d-" % start)

            await engine.create_topic(
                "c", 1, {"cleanup.policy": "compact", "segment.bytes": "1500"}
            )
            for i in range(30):
                await engine.append_many([("c", 0, batch(i, 200, key=b"k%d" % (i % 3)))])
            setup.clock.now += 1000
            await engine.maintain()
            values = await read_values(engine, "c", 0)
            latest = {v[:4] for v in values[-3:]}
            assert len(values) < 30 and len(latest) == 3
            await engine.delete_topic("r")
            await engine.delete_topic("c")
            await engine.maintain()
            assert await setup.object_keys() == set()
        finally:
            await engine.close()

    asyncio.run(body())


def test_orphaned_objects_go_after_their_grace(setup: Setup) -> None:
    async def body() -> None:
        engine = setup.engine(orphan_grace_ms=600_000)
        await engine.open()
        try:
            await engine.create_topic("t", 1, {})
            await engine.append_many([("t", 0, batch(1))])
            (live,) = await setup.object_keys()
            old = object_key(setup.clock.now - 700_000, 1)
            young = object_key(setup.clock.now - 100_000, 2)
            await setup.store.put(old, b"a flush that never committed")
            await setup.store.put(young, b"a flush that may still commit")
            await engine.maintain()
            assert await setup.object_keys() == {live, young}
            assert await read_values(engine, "t", 0) == [b"v1-" + bytes([1]) * 100]
        finally:
            await engine.close()

    asyncio.run(body())


def test_a_failed_put_acknowledges_nothing(setup: Setup) -> None:
    async def body() -> None:
        proxy = FaultProxy(setup.s3.host, setup.s3.s3_port, free_port()).start()
        engine = setup.engine(endpoint=proxy.endpoint, retries=1, backoff_ms=10)
        await engine.open()
        try:
            await engine.create_topic("t", 1, {})
            proxy.fail(2, methods=("PUT",))
            (result,) = await engine.append_many([("t", 0, batch(1))])
            assert isinstance(result, KafkaError) and result.code.retriable
            p = engine.partition("t", 0)
            assert p.log_end_offset == 0
            (result,) = await engine.append_many([("t", 0, batch(2))])
            assert not isinstance(result, KafkaError) and result.base_offset == 0
            assert await read_values(engine, "t", 0) == [b"v2-" + bytes([2]) * 100]
        finally:
            await engine.close()
            proxy.stop()

    asyncio.run(body())


def test_the_postgres_engine_refuses_a_database_whose_batches_are_in_objects(
    setup: Setup,
) -> None:
    async def body() -> None:
        engine = setup.engine()
        await engine.open()
        await engine.close()
        pg = PostgresEngine(
            setup.database,
            internal_config=internal_log_config(),
            maintenance=MaintenanceSettings(interval_ms=3_600_000),
        )
        with pytest.raises(InvalidConfig, match="s3://"):
            await pg.open()
        other = Setup(setup.tmp_path, setup.database, setup.s3)  # another prefix
        with pytest.raises(InvalidConfig, match="keeps its record batches"):
            await other.engine().open()
        other.environ = {**other.environ, "AWS_SECRET_ACCESS_KEY": "wrong"}
        with pytest.raises(InvalidConfig, match="cannot use the object store"):
            await other.engine().open()

    asyncio.run(body())


async def until(what: str, check: Any, timeout: float = 30.0) -> None:
    """Poll ``check`` every 10 ms (bounded) on the running loop."""
    for _ in range(int(timeout / 0.01)):
        if check():
            return
        await asyncio.sleep(0.01)
    raise AssertionError(f"timed out waiting for {what}")


def test_a_slow_store_makes_objects_larger_not_a_queue(setup: Setup) -> None:
    async def body() -> None:
        proxy = FaultProxy(setup.s3.host, setup.s3.s3_port, free_port()).start()
        engine = setup.engine(endpoint=proxy.endpoint, flush_concurrency=1, timeout_ms=30_000)
        await engine.open()
        try:
            await engine.create_topic("t", 1, {})
            proxy.delay(1, 2.0, methods=("PUT",))  # the first object's PUT is slow
            first = asyncio.create_task(engine.append_many([("t", 0, batch(0))]))
            await until("the first PUT held", lambda: proxy.outcomes("PUT"))
            later = []
            for i in range(1, 6):  # each one's window passes while the only slot is busy
                later.append(asyncio.create_task(engine.append_many([("t", 0, batch(i))])))
                await until("the open object due", lambda: engine.flusher._due)
            results = [(await first)[0], *[(await t)[0] for t in later]]
            assert [r.base_offset for r in results if not isinstance(r, KafkaError)] == [
                0,
                1,
                2,
                3,
                4,
                5,
            ]
            assert engine.flusher.objects_written == 2  # not six
        finally:
            await engine.close()
            proxy.stop()

    asyncio.run(body())
