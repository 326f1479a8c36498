"""The log side of tiered storage, without a store: the durable record of remote segments
(``remote.json``), local retention of copied segments only, retention over remote and local
segments as one log, restarts and crashes mid-upload.  The upload itself is simulated by
the steps ``TieredStorage`` takes around it (record started → objects → record complete)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from bayou.config import TopicConfig
from bayou.errors import OffsetOutOfRange
from bayou.protocol.kafka import records as R
from bayou.protocol.kafka.records import Record
from bayou.storage.engine import AbortedTxn
from bayou.storage.log import PartitionLog
from bayou.storage.tiered.remote_segments import COPIED, COPYING, DELETING, OffsetNotLocal
from bayou.storage.tiered.storage import _prepare_upload

HOUR = 3_600_000
TIERED = {"remote.storage.enable": True, "segment.bytes": 1000, "index.interval.bytes": 100}


class Clock:
    def __init__(self, now: int) -> None:
        self.now = now

    def __call__(self) -> int:
        return self.now


def open_log(path: Path, clock: Clock, **overrides: Any) -> PartitionLog:
    return PartitionLog("t", 0, path, TopicConfig.resolve({}, {**TIERED, **overrides}), clock)


def fill(log: PartitionLog, count: int, ts: int) -> None:
    for i in range(count):
        log.append(R.build_batch([Record(ts + i, b"k%d" % i, b"x" * 100)]))


def copy(log: PartitionLog, segments: int, *, finish: bool = True) -> list[str]:
    """Copy the next ``segments`` closed segments as TieredStorage would (no objects)."""
    log.flush()
    ids = []
    for seg in log.upload_candidates()[:segments]:
        prepared = _prepare_upload(log, seg)
        assert prepared is not None
        ids.append(prepared[0].id)
        if finish:
            assert log.remote.finish(prepared[0].id)
    return ids


def states(log: PartitionLog) -> list[tuple[int, str]]:
    return [(e.base_offset, e.state) for e in log.remote.entries]


def test_local_retention_deletes_copied_segments_only_and_keeps_the_log_start(
    tmp_path: Path,
) -> None:
    clock = Clock(HOUR)
    log = open_log(tmp_path, clock, **{"local.retention.bytes": 1500})
    fill(log, 60, clock.now)
    assert len(log.segments) > 6
    copy(log, 3)
    bases = [s.base_offset for s in log.segments]
    assert log.delete_old_segments() == 3  # more would be over the limit, but not copied
    assert log.local_start_offset == bases[3]
    assert log.log_start_offset == 0
    with pytest.raises(OffsetNotLocal):
        log.read(0, 100)
    with pytest.raises(OffsetNotLocal):
        log.read_slices(bases[3] - 1, 100)
    assert log.read(bases[3], 100)  # local from there

    copy(log, 100)  # everything closed is copied now: local.retention.bytes decides
    log.delete_old_segments()
    assert log.log_start_offset == 0
    assert log.active is log.segments[-1] and log.size_bytes <= 1500 + 1000
    assert all(state == COPIED for _, state in states(log))
    log.close()


def test_a_restart_keeps_the_log_start_below_the_local_segments(tmp_path: Path) -> None:
    """After a kill (no close, no clean-shutdown marker), recovery must not raise the log
    start offset to the first local segment: the remote copies still hold the data."""
    clock = Clock(HOUR)
    log = open_log(tmp_path, clock, **{"local.retention.bytes": 1500})
    fill(log, 60, clock.now)
    copy(log, 100)
    log.delete_old_segments()
    local_start, end = log.local_start_offset, log.log_end_offset
    assert local_start > 0
    # killed: the next process opens the directory as it is
    reopened = open_log(tmp_path, clock, **{"local.retention.bytes": 1500})
    assert reopened.log_start_offset == 0
    assert reopened.local_start_offset == local_start
    assert reopened.log_end_offset == end
    assert reopened.remote.start_before(local_start) == 0
    with pytest.raises(OffsetNotLocal):
        reopened.read(0, 100)
    reopened.close()
    log.close()


def test_an_upload_cut_by_a_crash_is_deleted_and_done_again(tmp_path: Path) -> None:
    clock = Clock(HOUR)
    log = open_log(tmp_path, clock, **{"local.retention.bytes": 0})
    fill(log, 30, clock.now)
    [orphan] = copy(log, 1, finish=False)
    assert states(log) == [(0, COPYING)]
    assert log.delete_old_segments() == 0  # not copied: the local copy stays

    reopened = open_log(tmp_path, clock, **{"local.retention.bytes": 0})
    assert [(e.id, e.state) for e in reopened.remote.entries] == [(orphan, DELETING)]
    assert reopened.upload_candidates()[0].base_offset == 0  # copied again, as a new upload
    assert reopened.remote.finish(orphan) is False  # the orphan never becomes readable
    reopened.close()
    log.close()


def test_retention_judges_remote_and_local_segments_as_one_log(tmp_path: Path) -> None:
    clock = Clock(10 * HOUR)
    log = open_log(tmp_path, clock, **{"local.retention.bytes": 0})
    fill(log, 40, clock.now - 3 * HOUR)  # old: remote only, once trimmed
    old_end = log.log_end_offset
    log.roll()
    fill(log, 40, clock.now)
    copy(log, 100)
    log.delete_old_segments()
    assert log.local_start_offset > old_end  # old data only remote now
    remote_before = [e.base_offset for e in log.remote.copied()]

    log.config = TopicConfig.resolve(
        {}, {**TIERED, "local.retention.bytes": 0, "retention.ms": HOUR}
    )
    deleted = log.delete_old_segments()
    assert deleted > 0
    assert log.log_start_offset == old_end  # every old segment went, no fresh one
    doomed = [(e.base_offset, e.state) for e in log.remote.entries if e.next_offset <= old_end]
    assert doomed and all(state == DELETING for _, state in doomed)
    assert [e.base_offset for e in log.remote.copied()] == [
        b for b in remote_before if b >= old_end
    ]
    with pytest.raises(OffsetOutOfRange):
        log.read(0, 100)
    reopened = open_log(tmp_path, clock)
    assert reopened.log_start_offset == old_end
    reopened.close()
    log.close()


def test_everything_expired_leaves_an_empty_log_at_the_same_end(tmp_path: Path) -> None:
    clock = Clock(10 * HOUR)
    log = open_log(tmp_path, clock, **{"local.retention.bytes": 0, "retention.ms": HOUR})
    fill(log, 40, clock.now)
    copy(log, 100)
    log.delete_old_segments()
    end = log.log_end_offset
    clock.now += 2 * HOUR
    log.delete_old_segments()
    assert log.log_start_offset == log.log_end_offset == end
    assert all(e.state == DELETING for e in log.remote.entries)
    log.close()


def test_uploads_wait_for_fsync_and_the_last_stable_offset(tmp_path: Path) -> None:
    clock = Clock(HOUR)
    log = open_log(tmp_path, clock)
    fill(log, 20, clock.now)
    assert log.upload_candidates() == []  # rolled, not yet fsynced
    log.flush()
    closed = [s.base_offset for s in log.segments[:-1]]
    assert [s.base_offset for s in log.upload_candidates()] == closed
    # a transaction opened now keeps everything from its first offset local
    txn = R.build_batch(
        [Record(clock.now, b"k", b"x" * 100)],
        producer_id=7,
        producer_epoch=0,
        base_sequence=0,
        is_transactional=True,
    )
    first = log.append(txn).base_offset
    fill(log, 20, clock.now)
    log.flush()
    assert all(s.next_offset <= first for s in log.upload_candidates())


def test_aborted_transactions_of_remote_segments_are_answered(tmp_path: Path) -> None:
    clock = Clock(HOUR)
    log = open_log(tmp_path, clock, **{"local.retention.bytes": 0})
    txn = R.build_batch(
        [Record(clock.now, b"k", b"x" * 100)],
        producer_id=7,
        producer_epoch=0,
        base_sequence=0,
        is_transactional=True,
    )
    first = log.append(txn).base_offset
    marker = log.write_marker(7, 0, False, 0).base_offset
    fill(log, 40, clock.now)
    copy(log, 100)
    log.delete_old_segments()
    assert log.local_start_offset > marker  # the abort is only in a remote segment now
    aborted = log.aborted_transactions(0, log.log_end_offset)
    assert aborted == [AbortedTxn(7, first, marker, marker + 1)]
    log.close()
