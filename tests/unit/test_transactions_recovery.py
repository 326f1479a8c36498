"""The transaction coordinator over a real local engine: a transaction whose commit was
decided (PrepareCommit durable) but whose markers were not all written when the broker died
is completed on the next start — markers written, consumer offsets made visible — and one
whose markers fail is retried until they succeed.  Markers are stopped by fault injection
in the marker writer (the thing in front of the log); the log itself is the real one."""

from __future__ import annotations

import asyncio
from pathlib import Path

from bayou.config import internal_log_config
from bayou.core import Core, CoreSettings
from bayou.core.groups import OffsetCommit
from bayou.core.transactions import OFFSETS_PARTITION, MarkerJob, TxnDriver, TxnState
from bayou.core.transactions.model import TopicPartition
from bayou.protocol.kafka.records import Record, build_batch
from bayou.storage.local_engine import LocalEngine
from bayou.storage.maintenance import MaintenanceSettings

TID = "etl"


class FailingMarkers:
    """Writes nothing and says so: the broker 'dies' before its markers."""

    def __init__(self, fail_times: int = 10**9) -> None:
        self.calls = 0
        self.fail_times = fail_times
        self.real: object = None

    async def write(
        self, job: MarkerJob, partitions: frozenset[TopicPartition]
    ) -> set[TopicPartition]:
        self.calls += 1
        if self.calls <= self.fail_times:
            return set()
        assert self.real is not None
        return await self.real.write(job, partitions)  # type: ignore[attr-defined, no-any-return]


async def started(data: Path) -> Core:
    engine = LocalEngine(
        data,
        {},
        internal_config=internal_log_config(),
        maintenance=MaintenanceSettings(interval_ms=3_600_000),
    )
    await engine.open()
    await engine.start()
    core = Core(engine, CoreSettings())
    await core.start()
    return core


async def crash(core: Core) -> None:
    """Stop without completing anything (the state logs keep what was written)."""
    assert core.transactions is not None and core.groups is not None
    core.transactions.shutdown()
    core.groups.shutdown()
    await core.engine.close()


async def begin_and_commit(core: Core, driver: TxnDriver) -> int:
    await core.create_topic("out", 1, {})
    init = await driver.init_producer_id(TID, 60_000, None)
    pid = init.producer_id
    coordinator = driver.coordinator
    assert (
        await driver.run(lambda now: coordinator.add_partitions(now, TID, pid, 0, [("out", 0)]))
        == 0
    )
    assert await driver.run(lambda now: coordinator.add_offsets(now, TID, pid, 0)) == 0
    batch = build_batch(
        [Record(0, b"k", b"v1"), Record(0, b"k", b"v2")],
        producer_id=pid,
        producer_epoch=0,
        base_sequence=0,
        is_transactional=True,
    )
    await core.append("out", 0, batch)
    groups = core.group_driver()
    await groups.run(
        lambda now, _t: groups.coordinator.txn_commit_offsets(
            now,
            group_id="g",
            producer_id=pid,
            generation=-1,
            member_id="",
            instance_id=None,
            offsets=[OffsetCommit("in", 0, 42)],
        )
    )
    return pid


async def committed_values(core: Core) -> list[bytes | None]:
    cursor = core.cursor("out", 0, 0)
    cursor.isolation = "read_committed"
    return [r.value for r in await cursor.read(1 << 20, 100)]


def test_a_decided_commit_is_completed_after_a_restart(tmp_path: Path) -> None:
    async def body() -> None:
        core = await started(tmp_path / "data")
        driver = core.transaction_driver()
        driver.markers = FailingMarkers()
        pid = await begin_and_commit(core, driver)
        assert await driver.end_txn(TID, pid, 0, True) == 0  # decided; no marker written
        assert driver.coordinator.txns[TID].state == TxnState.PREPARE_COMMIT
        p = core.partition("out", 0)
        assert p.last_stable_offset == 0  # still open on the partition
        assert await committed_values(core) == []
        await crash(core)

        core = await started(tmp_path / "data")  # start() writes the missing markers
        driver = core.transaction_driver()
        for _ in range(200):
            if driver.coordinator.txns[TID].state == TxnState.COMPLETE_COMMIT:
                break
            await asyncio.sleep(0.01)
        assert driver.coordinator.txns[TID].state == TxnState.COMPLETE_COMMIT
        p = core.partition("out", 0)
        assert p.last_stable_offset == p.log_end_offset == 3  # 2 records + the marker
        assert await committed_values(core) == [b"v1", b"v2"]
        fetched = core.group_driver().read().fetch_offsets("g", [("in", 0)], require_stable=True)[1]
        assert fetched[0].offset == 42
        # the producer carries on with its epoch after the restart
        assert (
            await driver.run(
                lambda now: driver.coordinator.add_partitions(now, TID, pid, 0, [("out", 0)])
            )
            == 0
        )
        await core.close()
        await core.engine.close()

    asyncio.run(body())


def test_an_ongoing_transaction_survives_a_restart_and_is_aborted_by_its_successor(
    tmp_path: Path,
) -> None:
    async def body() -> None:
        core = await started(tmp_path / "data")
        pid = await begin_and_commit(core, core.transaction_driver())
        await crash(core)
        core = await started(tmp_path / "data")
        driver = core.transaction_driver()
        assert driver.coordinator.txns[TID].state == TxnState.ONGOING
        assert core.partition("out", 0).last_stable_offset == 0
        successor = await driver.init_producer_id(TID, 60_000, None)
        assert (successor.error, successor.producer_id, successor.producer_epoch) == (0, pid, 2)
        assert driver.coordinator.txns[TID].state == TxnState.EMPTY
        p = core.partition("out", 0)
        assert p.last_stable_offset == p.log_end_offset == 3
        assert await committed_values(core) == []
        assert core.group_driver().read().fetch_offsets("g", [("in", 0)])[1][0].offset == -1
        assert OFFSETS_PARTITION not in driver.coordinator.txns[TID].partitions
        await core.close()
        await core.engine.close()

    asyncio.run(body())


def test_failed_markers_are_retried_until_written(tmp_path: Path) -> None:
    async def body() -> None:
        core = await started(tmp_path / "data")
        driver = core.transaction_driver()
        flaky = FailingMarkers(fail_times=2)
        flaky.real = driver.markers
        driver.markers = flaky
        pid = await begin_and_commit(core, driver)
        assert await driver.end_txn(TID, pid, 0, True) == 0
        for _ in range(500):  # retried every second
            if driver.coordinator.txns[TID].state == TxnState.COMPLETE_COMMIT:
                break
            await asyncio.sleep(0.01)
        assert driver.coordinator.txns[TID].state == TxnState.COMPLETE_COMMIT
        assert flaky.calls == 3
        assert await committed_values(core) == [b"v1", b"v2"]
        await core.close()
        await core.engine.close()

    asyncio.run(body())
