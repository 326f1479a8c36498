"""The PostgreSQL engine beyond the contract suite, on a real PostgreSQL: two engines (two
brokers) on one database see each other's topics and appends and never assign one offset
twice; the leader epoch fences a broker that lost a partition; the schema is created, and a
newer one refused or accepted by the upgrade rule; a PostgreSQL restart costs retriable
errors, never an acknowledged batch."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable

import pytest

from bayou.config import internal_log_config
from bayou.errors import ErrorCode, InvalidConfig, KafkaError
from bayou.protocol.kafka.records import Record, build_batch, iter_batches, iter_records
from bayou.storage.cluster import BrokerAddress
from bayou.storage.engine import LogEngine, StateEntry, latest
from bayou.storage.maintenance import MaintenanceSettings
from bayou.storage.postgres import PostgresEngine
from bayou.storage.postgres.cluster import PgCluster
from bayou.storage.postgres.schema import LATEST
from tests.support.postgres import PostgresServer

T0 = 1_700_000_000_000


def engine(url: str) -> PostgresEngine:
    return PostgresEngine(
        url,
        {},
        internal_config=internal_log_config(),
        maintenance=MaintenanceSettings(interval_ms=3_600_000),
    )


def batch(*values: bytes, pid: int = -1, seq: int = -1) -> bytes:
    return build_batch(
        [Record(T0 + i, b"k", v) for i, v in enumerate(values)],
        producer_id=pid,
        producer_epoch=0 if pid >= 0 else -1,
        base_sequence=seq,
    )


async def eventually(what: str, check: Callable[[], bool], timeout_s: float = 30.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.02)


async def values_of(e: LogEngine, topic: str, index: int) -> list[tuple[int, bytes]]:
    p = e.partition(topic, index)
    offset = p.log_start_offset
    out: list[tuple[int, bytes]] = []
    for _ in range(10_000):
        if offset >= p.log_end_offset:
            break
        data = await p.read(offset, 1 << 20)
        view = memoryview(data)
        for pos, h in iter_batches(view):
            for rec in iter_records(view[pos : pos + h.size]):
                out.append((rec.offset, rec.value or b""))
            offset = h.last_offset + 1
    return out


def run(body: Callable[[], Awaitable[None]]) -> None:
    asyncio.run(body())  # type: ignore[arg-type]


def test_two_engines_on_one_database_share_topics_offsets_and_notifications(
    postgres_server: PostgresServer,
) -> None:
    url = postgres_server.create_database()

    async def body() -> None:
        a, b = engine(url), engine(url)
        await a.open()
        await b.open()
        try:
            assert a.cluster_id == b.cluster_id
            await a.create_topic("shared", 2, {"retention.ms": "60000"})
            await eventually("b to see the topic", lambda: "shared" in b.topics())
            assert b.topic_config("shared").retention_ms == 60_000
            # b long-polls; a's append wakes it (NOTIFY), and b's cache has the new end
            waiting = asyncio.ensure_future(b.wait_for_data([("shared", 1)], 30.0))
            await asyncio.sleep(0)  # one turn of the loop: b's waiter is registered
            await a.partition("shared", 1).append(batch(b"from-a"))
            assert await asyncio.wait_for(waiting, 40.0) is True  # woken, not timed out
            await eventually("b's log end", lambda: b.partition("shared", 1).log_end_offset == 1)
            # both append to one partition at once: every offset once, nothing lost
            pa, pb = a.partition("shared", 0), b.partition("shared", 0)
            results = await asyncio.gather(
                *(pa.append(batch(b"a%d" % i)) for i in range(40)),
                *(pb.append(batch(b"b%d" % i)) for i in range(40)),
            )
            assert sorted(r.base_offset for r in results) == list(range(80))
            await eventually("a's log end", lambda: pa.log_end_offset == 80)
            await eventually("b's log end", lambda: pb.log_end_offset == 80)
            got = await values_of(b, "shared", 0)
            assert [o for o, _v in got] == list(range(80))
            assert sorted(v for _o, v in got) == sorted(
                [b"a%d" % i for i in range(40)] + [b"b%d" % i for i in range(40)]
            )
            # each engine's own appends kept their call order
            assert [v for _o, v in got if v.startswith(b"a")] == [b"a%d" % i for i in range(40)]
            # an idempotent producer retrying through the other broker gets its offsets back
            pid = await a.allocate_producer_id()
            assert await b.allocate_producer_id() != pid
            first = await pa.append(batch(b"once", pid=pid, seq=0))
            again = await pb.append(batch(b"once", pid=pid, seq=0))
            assert (again.base_offset, again.last_offset) == (first.base_offset, first.last_offset)
            await eventually("b's log end", lambda: pb.log_end_offset == 81)
            # a topic deleted by one is gone for the other
            await b.delete_topic("shared")
            await eventually("a to drop the topic", lambda: "shared" not in a.topics())
        finally:
            await a.close()
            await b.close()

    run(body)


def test_a_broker_that_lost_the_leader_epoch_cannot_append(
    postgres_server: PostgresServer,
) -> None:
    url = postgres_server.create_database()

    async def body() -> None:
        a, b = engine(url), engine(url)
        await a.open()
        await b.open()
        try:
            await a.create_topic("fenced", 1, {})
            await eventually("b to see the topic", lambda: "fenced" in b.topics())
            await a.partition("fenced", 0).append(batch(b"before"))
            epoch = await b.claim_leadership("fenced", 0)
            assert epoch == 1
            with pytest.raises(KafkaError) as refused:
                await a.partition("fenced", 0).append(batch(b"stale"))
            assert refused.value.code == ErrorCode.NOT_LEADER_OR_FOLLOWER
            with pytest.raises(KafkaError) as marker:
                await a.partition("fenced", 0).write_marker(7, 0, True, 0)
            assert marker.value.code == ErrorCode.NOT_LEADER_OR_FOLLOWER
            result = await b.partition("fenced", 0).append(batch(b"after"))
            assert result.base_offset == 1
            assert [v for _o, v in await values_of(b, "fenced", 0)] == [b"before", b"after"]
        finally:
            await a.close()
            await b.close()

    run(body)


def test_a_partition_claimed_before_its_topic_was_loaded_is_led_once_it_is(
    postgres_server: PostgresServer,
) -> None:
    """A heartbeat reads the partitions table before this broker's engine has loaded a topic
    another broker just created (the catalog reload is under way): the partitions are led
    by this broker once the engine knows them — not named in the table and held by no one
    (producers saw NOT_LEADER_OR_FOLLOWER until the live set changed)."""
    url = postgres_server.create_database()

    async def body() -> None:
        creator, b = engine(url), engine(url)
        await creator.open()
        await b.open()
        cluster = PgCluster(b, 2, lease_ms=3_000, heartbeat_ms=200)
        reload = b._schedule_reload
        try:
            await cluster.join(BrokerAddress(2, "127.0.0.1", 9092))
            b._schedule_reload = lambda: None  # type: ignore[method-assign]  # held back
            await creator.create_topic("late", 3, {})
            await cluster._tick()  # reads the new rows; the engine does not know them yet
            assert b.topic_partition("late", 0) is None
            b._schedule_reload = reload  # type: ignore[method-assign]
            b._schedule_reload()
            await eventually("b to load the topic", lambda: "late" in b.topics())
            await eventually(
                "b to lead every partition",
                lambda: all(cluster.leads("late", i) for i in range(3)),
                timeout_s=10.0,
            )
            result = await b.partition("late", 1).append(batch(b"led"))
            assert result.base_offset == 0
        finally:
            b._schedule_reload = reload  # type: ignore[method-assign]
            await cluster.leave()
            await creator.close()
            await b.close()

    run(body)


def test_the_schema_is_created_and_upgrades_follow_the_compatibility_rule(
    postgres_server: PostgresServer,
) -> None:
    url = postgres_server.create_database()
    name = url.rsplit("/", 1)[1]

    async def open_close() -> None:
        e = engine(url)
        await e.open()
        await e.close()

    asyncio.run(open_close())
    assert postgres_server.psql("SELECT max(version) FROM bayou.schema_version", name) == str(
        LATEST
    )
    asyncio.run(open_close())  # a second start migrates nothing
    assert postgres_server.psql("SELECT count(*) FROM bayou.schema_version", name) == str(LATEST)
    # an additive migration by a newer release: this broker still runs on it
    postgres_server.psql(
        f"INSERT INTO bayou.schema_version VALUES ({LATEST + 1}, 'a new column', {LATEST}, 0)",
        name,
    )
    asyncio.run(open_close())
    # a breaking one: this broker refuses to start, saying why
    postgres_server.psql(
        "INSERT INTO bayou.schema_version VALUES "
        f"({LATEST + 2}, 'a renamed column', {LATEST + 2}, 0)",
        name,
    )
    with pytest.raises(InvalidConfig, match="upgrade the broker"):
        asyncio.run(open_close())


def test_appends_through_a_postgresql_restart_lose_nothing_acknowledged(
    postgres_server: PostgresServer,
) -> None:
    url = postgres_server.create_database()

    async def body() -> None:
        e = engine(url)
        await e.open()
        acked: list[bytes] = []
        errors: list[KafkaError] = []
        try:
            await e.create_topic("load", 1, {})
            groups = await e.state.open_log("__consumer_offsets", public=True)
            p = e.partition("load", 0)
            stop = asyncio.Event()

            async def produce() -> None:
                for i in range(100_000):
                    if stop.is_set():
                        return
                    value = b"m%d" % i
                    try:
                        await p.append(batch(value))
                        acked.append(value)
                    except KafkaError as exc:
                        errors.append(exc)
                        await asyncio.sleep(0.02)

            task = asyncio.ensure_future(produce())
            await eventually("a first append", lambda: len(acked) > 50)
            await asyncio.to_thread(postgres_server.restart)
            restarted_at = len(acked)
            await eventually("appends after the restart", lambda: len(acked) > restarted_at + 50)
            stop.set()
            await task
            await groups.put([StateEntry(b"g", b"after the restart")])
            assert all(err.code.retriable for err in errors), errors[:3]
            got = iter([v for _o, v in await values_of(e, "load", 0)])
            # every acknowledged batch is there, in order (a failed one may be too: the
            # outcome of a COMMIT cut by the restart is unknown to the client)
            assert all(any(v == want for v in got) for want in acked)
            assert (await latest(groups))[b"g"].value == b"after the restart"
        finally:
            await e.close()

    run(body)
