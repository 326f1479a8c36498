"""Retention and DeleteRecords: whole segments go, the log start offset moves and survives a
restart, readers of deleted segments keep working, timestamps stay exact."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from bayou.config import TopicConfig
from bayou.errors import KafkaError, OffsetOutOfRange
from bayou.protocol.kafka import records as R
from bayou.protocol.kafka.records import Record
from bayou.storage.log import PartitionLog

HOUR = 3_600_000


class Clock:
    def __init__(self, now: int) -> None:
        self.now = now

    def __call__(self) -> int:
        return self.now


def open_log(path: Path, clock: Clock, **overrides: Any) -> PartitionLog:
    cfg = {"segment.bytes": 1000, "index.interval.bytes": 100, **overrides}
    return PartitionLog("t", 0, path, TopicConfig.resolve({}, cfg), clock)


def fill(log: PartitionLog, count: int, ts: int, size: int = 100) -> None:
    for i in range(count):
        log.append(R.build_batch([Record(ts + i, b"k%d" % i, b"x" * size)]))


def first_offset(log: PartitionLog) -> int:
    data = log.read(log.log_start_offset, 1 << 20)
    _pos, header = next(R.iter_batches(data))
    return header.base_offset


def test_retention_ms_deletes_whole_old_segments(tmp_path: Path) -> None:
    clock = Clock(10 * HOUR)
    log = open_log(tmp_path, clock, **{"retention.ms": HOUR})
    fill(log, 30, ts=clock.now - 3 * HOUR)  # old
    old_end = log.log_end_offset
    log.roll()
    fill(log, 30, ts=clock.now)  # fresh
    segments = len(log.segments)
    deleted = log.delete_old_segments()
    assert deleted > 0 and len(log.segments) == segments - deleted
    assert log.log_start_offset == old_end  # every old segment went, no fresh one
    with pytest.raises(OffsetOutOfRange):
        log.read(0, 100)
    assert first_offset(log) == old_end
    assert not list(tmp_path.glob("*.deleted"))
    assert not (tmp_path / "00000000000000000000.log").exists()
    # The time index still answers exactly; a timestamp before the start maps to it.
    assert log.offset_for_timestamp(clock.now + 5) == (old_end + 5, clock.now + 5)
    assert log.offset_for_timestamp(0) == (old_end, clock.now)
    log.close()
    reopened = open_log(tmp_path, clock, **{"retention.ms": HOUR})
    assert reopened.log_start_offset == old_end
    reopened.close()


def test_retention_bytes_keeps_the_newest_segments(tmp_path: Path) -> None:
    clock = Clock(HOUR)
    log = open_log(tmp_path, clock, **{"retention.bytes": 2500, "retention.ms": -1})
    fill(log, 100, ts=clock.now)
    assert log.delete_old_segments() > 0
    assert log.size_bytes <= 2500 + 1000
    assert log.size_bytes == sum(s.size for s in log.segments)
    assert log.log_start_offset == log.segments[0].base_offset > 0
    log.close()


def test_minus_one_keeps_forever_and_compact_only_ignores_retention(tmp_path: Path) -> None:
    clock = Clock(1000 * HOUR)
    log = open_log(tmp_path / "a", clock, **{"retention.ms": -1, "retention.bytes": -1})
    fill(log, 50, ts=0)
    assert log.delete_old_segments() == 0 and log.log_start_offset == 0
    log.close()
    log = open_log(tmp_path / "b", clock, **{"retention.ms": 1, "cleanup.policy": "compact"})
    fill(log, 50, ts=0)
    assert log.delete_old_segments() == 0
    with pytest.raises(KafkaError):  # DeleteRecords needs the delete policy, as in Kafka
        log.delete_records(10)
    log.close()


def test_expired_active_segment_is_rolled_then_deleted(tmp_path: Path) -> None:
    clock = Clock(10 * HOUR)
    log = open_log(tmp_path, clock, **{"retention.ms": HOUR, "segment.bytes": 10**6})
    fill(log, 10, ts=0)
    assert log.delete_old_segments() == 1
    assert log.log_start_offset == log.log_end_offset == 10
    assert log.read(10, 100) == b""
    assert log.append(R.build_batch([Record(clock.now, b"k", b"v")])).base_offset == 10
    log.close()


def test_delete_records_moves_the_start_and_frees_segments(tmp_path: Path) -> None:
    clock = Clock(HOUR)
    log = open_log(tmp_path, clock)
    fill(log, 60, ts=clock.now)
    with pytest.raises(OffsetOutOfRange):
        log.delete_records(61)
    assert log.delete_records(25) == 25
    assert log.delete_records(5) == 25  # never moves backwards
    with pytest.raises(OffsetOutOfRange):
        log.read(24, 100)
    assert first_offset(log) == 25
    before = len(log.segments)
    log.delete_old_segments()
    assert len(log.segments) < before
    assert log.segments[0].base_offset <= 25 < log.segments[0].next_offset
    assert log.log_start_offset == 25
    assert log.delete_records(-1) == 60  # -1: up to the high watermark
    log.delete_old_segments()
    log.close_without_flush()  # a crash right after: the start offset was persisted
    reopened = open_log(tmp_path, clock)
    assert reopened.log_start_offset == 60 and reopened.log_end_offset == 60
    reopened.close()


def test_a_reader_holding_a_deleted_segment_keeps_reading(tmp_path: Path) -> None:
    clock = Clock(10 * HOUR)
    log = open_log(tmp_path, clock, **{"retention.ms": HOUR})
    fill(log, 30, ts=0)
    log.roll()
    fill(log, 5, ts=clock.now)
    expected = log.segments[0].read(0, 10**6)
    pinned = log._pin()  # as a read() in progress on the event loop would
    assert log.delete_old_segments() > 0
    assert not pinned[0].log_path.exists()
    assert pinned[0].read(0, 10**6) == expected  # unlinked, fd still open
    log._unpin()
    assert pinned[0].fd == -1
    log.close()
