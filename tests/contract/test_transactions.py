"""The LogEngine contract for transactions (KIP-98): open transactions hold the last stable
offset back, markers close them, aborts are indexed for READ_COMMITTED readers, only the
coordinator writes markers — on every engine."""

from __future__ import annotations

import pytest

from bayou.errors import InvalidProducerEpoch, InvalidRecord
from bayou.protocol.kafka.records import Record, build_batch, build_control_batch, iter_batches
from bayou.storage.engine import AbortedTxn, Partition
from tests.contract.conftest import START_MS, EngineFactory, FakeClock, Opened, run
from tests.contract.test_log_engine import read_all


def txn_batch(pid: int, seq: int, *values: bytes, epoch: int = 0) -> bytes:
    return build_batch(
        [Record(START_MS, b"k", v) for v in values],
        producer_id=pid,
        producer_epoch=epoch,
        base_sequence=seq,
        is_transactional=True,
    )


def plain(*values: bytes) -> bytes:
    return build_batch([Record(START_MS, b"k", v) for v in values])


async def batches_below(p: Partition, max_offset: int) -> list[tuple[int, int]]:
    data = await p.read(p.log_start_offset, 1 << 20, max_offset)
    return [(h.base_offset, h.last_offset) for _pos, h in iter_batches(memoryview(data))]


def test_open_transactions_hold_the_last_stable_offset(engine_factory: EngineFactory) -> None:
    async def body() -> None:
        async with Opened(engine_factory) as engine:
            await engine.create_topic("t", 1, {})
            p = engine.partition("t", 0)
            await p.append(plain(b"a"))  # 0
            assert p.last_stable_offset == 1
            await p.append(txn_batch(7, 0, b"t1", b"t2"))  # 1-2: producer 7 opens at 1
            await p.append(plain(b"b"))  # 3
            await p.append(txn_batch(8, 0, b"u1"))  # 4: producer 8 opens at 4
            assert p.log_end_offset == 5 and p.last_stable_offset == 1
            assert await batches_below(p, p.last_stable_offset) == [(0, 0)]
            assert p.producers()[7].current_txn_first_offset == 1
            commit_at = await p.write_marker(7, 0, True, 0)  # 5
            assert commit_at == 5 and p.last_stable_offset == 4
            assert p.producers()[7].current_txn_first_offset == -1
            assert await batches_below(p, p.last_stable_offset) == [(0, 0), (1, 2), (3, 3)]
            abort_at = await p.write_marker(8, 0, False, 0)  # 6
            assert p.last_stable_offset == p.log_end_offset == 7
            assert await p.aborted_transactions(0, 7) == [AbortedTxn(8, 4, abort_at, 7)]
            assert await p.aborted_transactions(5, 7) == [AbortedTxn(8, 4, abort_at, 7)]
            assert await p.aborted_transactions(0, 4) == []  # nothing of it below 4
            # every record stays readable at READ_UNCOMMITTED, aborted ones included
            assert [r.value for r in await read_all(p)] == [b"a", b"t1", b"t2", b"b", b"u1"]
            # a new transaction of the same producer (next sequence) opens again
            await p.append(txn_batch(7, 2, b"t3"))  # 7
            assert p.last_stable_offset == 7

    run(body())


def test_markers_are_the_coordinators_alone(engine_factory: EngineFactory) -> None:
    async def body() -> None:
        async with Opened(engine_factory) as engine:
            await engine.create_topic("t", 1, {})
            p = engine.partition("t", 0)
            forged = build_control_batch(True, producer_id=7, producer_epoch=0, timestamp=START_MS)
            with pytest.raises(InvalidRecord):
                await p.append(forged)
            assert p.log_end_offset == 0
            await p.write_marker(9, 0, False, 0)  # no open transaction: written, not indexed
            assert p.log_end_offset == 1 and await p.aborted_transactions(0, 1) == []
            await p.append(txn_batch(7, 0, b"x", epoch=3))
            with pytest.raises(InvalidProducerEpoch):
                await p.write_marker(7, 2, True, 0)  # a zombie's epoch
            assert p.last_stable_offset == 1
            await p.write_marker(7, 4, False, 1)  # the coordinator bumped the epoch
            assert p.last_stable_offset == p.log_end_offset
            with pytest.raises(InvalidProducerEpoch):
                await p.append(txn_batch(7, 1, b"late", epoch=3))  # fenced

    run(body())


def test_aborted_transactions_survive_a_restart(engine_factory: EngineFactory) -> None:
    if engine_factory.kind == "memory":  # type: ignore[attr-defined]
        return  # nothing outlives the process: that is the memory engine's contract

    async def body() -> None:
        async with Opened(engine_factory, topic_defaults={"segment.bytes": "300"}) as engine:
            await engine.create_topic("t", 1, {})
            p = engine.partition("t", 0)
            for i in range(3):
                await p.append(txn_batch(5, i, b"x" * 60))
            await p.write_marker(5, 0, False, 0)  # aborts offsets 0-2
            await p.append(txn_batch(6, 0, b"open"))  # still open at the restart
            before = await p.aborted_transactions(0, p.log_end_offset)
            lso = p.last_stable_offset
        async with Opened(engine_factory, topic_defaults={"segment.bytes": "300"}) as engine:
            p = engine.partition("t", 0)
            assert await p.aborted_transactions(0, p.log_end_offset) == before
            assert p.last_stable_offset == lso == 4

    run(body())


def test_compaction_drops_aborted_data_then_markers(
    engine_factory: EngineFactory, clock: FakeClock
) -> None:
    def txn(pid: int, seq: int, key: bytes, value: bytes) -> bytes:
        return build_batch(
            [Record(START_MS, key, value)],
            producer_id=pid,
            producer_epoch=0,
            base_sequence=seq,
            is_transactional=True,
        )

    def keyed(key: bytes, value: bytes) -> bytes:
        return build_batch([Record(START_MS, key, value)])

    async def body() -> None:
        async with Opened(engine_factory, topic_defaults={"segment.bytes": "250"}) as engine:
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
            await p.append(txn(1, 0, b"k", b"committed"))  # 0
            await p.write_marker(1, 0, True, 0)  # 1
            await p.append(txn(2, 0, b"k", b"aborted"))  # 2: must not shadow offset 0
            await p.write_marker(2, 0, False, 0)  # 3
            await p.append(txn(3, 0, b"j", b"open"))  # 4: open: nothing from here cleaned
            for i in range(4):
                await p.append(keyed(b"filler%d" % i, b"x" * 40))
            await engine.maintain()
            values = {(r.key, r.value) for r in await read_all(p)}
            assert (b"k", b"committed") in values
            assert (b"k", b"aborted") not in values  # aborted data removed
            assert (b"j", b"open") in values  # the open transaction is untouched
            markers = [
                h for _pos, h in iter_batches(memoryview(await p.read(0, 1 << 20))) if h.is_control
            ]
            assert [m.base_offset for m in markers] == [1, 3]  # kept for now
            await p.write_marker(3, 0, True, 0)
            for i in range(4):
                await p.append(keyed(b"more%d" % i, b"y" * 40))
            await engine.maintain()  # the abort marker is cleaned a first time: kept
            assert 3 in [
                h.base_offset
                for _pos, h in iter_batches(memoryview(await p.read(0, 1 << 20)))
                if h.is_control
            ]
            clock.now += 10_000  # then it outlives delete.retention.ms
            for i in range(4):
                await p.append(keyed(b"last%d" % i, b"z" * 40))
            await engine.maintain()
            markers = [
                h for _pos, h in iter_batches(memoryview(await p.read(0, 1 << 20))) if h.is_control
            ]
            assert 3 not in [m.base_offset for m in markers]  # its transaction left nothing
            assert 1 in [m.base_offset for m in markers]  # the commit's data is still there
            values = {(r.key, r.value) for r in await read_all(p)}
            assert (b"k", b"committed") in values and (b"j", b"open") in values

    run(body())
