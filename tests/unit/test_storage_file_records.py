"""read_slices / FileRecords: the batches ``read`` returns, left in the files until sent, and
segments kept open by the leases of records not yet sent."""

from __future__ import annotations

import random
from pathlib import Path

import pytest

from bayou.config import TopicConfig
from bayou.protocol.kafka import records as R
from bayou.protocol.kafka.records import Record
from bayou.storage.log import PartitionLog

HOUR = 3_600_000


def open_log(path: Path, now: int = 10 * HOUR, **overrides: object) -> PartitionLog:
    cfg = {"segment.bytes": 3000, "index.interval.bytes": 200, **overrides}
    return PartitionLog("t", 0, path, TopicConfig.resolve({}, cfg), lambda: now)


def fill(log: PartitionLog, rng: random.Random, count: int, ts: int) -> None:
    for i in range(count):
        n = rng.randint(1, 4)
        log.append(R.build_batch([Record(ts + i, None, b"x" * rng.randint(1, 300))] * n))


def drain(records: object) -> bytes:
    from bayou.storage.file_records import FileRecords

    assert isinstance(records, FileRecords)
    out = bytearray()
    while records.remaining:
        out += records.read(100)  # small chunks: slices are read piece by piece
    records.close()
    return bytes(out)


def test_slices_hold_exactly_what_read_returns(tmp_path: Path) -> None:
    rng = random.Random(7)
    log = open_log(tmp_path)
    fill(log, rng, 120, ts=HOUR)
    assert len(log.segments) > 5
    for _ in range(300):
        offset = rng.randrange(0, log.log_end_offset + 1)
        max_bytes = rng.choice([1, 50, 400, 2000, 7000, 1 << 20])
        expected = bytes(log.read(offset, max_bytes))
        records = log.read_slices(offset, max_bytes)
        assert len(records) == len(expected)
        assert drain(records) == expected
    log.close()


def test_without_min_one_a_first_batch_over_the_limit_gives_nothing(tmp_path: Path) -> None:
    log = open_log(tmp_path)
    log.append(R.build_batch([Record(1, None, b"y" * 500)]))
    assert len(log.read_slices(0, 100, min_one=False)) == 0
    records = log.read_slices(0, 100)  # KIP-74: the first partition's first batch, whole
    assert drain(records) == bytes(log.read(0, 100))
    log.close()


def test_a_lease_keeps_a_deleted_segment_readable_until_closed(tmp_path: Path) -> None:
    log = open_log(tmp_path, **{"retention.ms": HOUR})
    fill(log, random.Random(1), 40, ts=1)  # old: retention deletes these segments
    first = log.segments[0]
    expected = bytes(log.read(0, 1 << 20))
    records = log.read_slices(0, 1 << 20)
    assert log.delete_old_segments() > 0
    assert first not in log.segments and not first.log_path.exists()
    assert first.fd >= 0  # leased: not closed yet
    assert drain(records) == expected  # ... and the bytes are all there
    assert first.fd == -1  # closed with the last lease
    log.close()


def test_read_all_with_nowait_is_all_or_nothing(tmp_path: Path) -> None:
    log = open_log(tmp_path)
    fill(log, random.Random(3), 10, ts=1)
    records = log.read_slices(0, 1 << 20)
    assert records.read_all(nowait=True) == bytes(log.read(0, 1 << 20))
    assert not records.remaining
    records.close()
    records.close()  # idempotent
    log.close()


@pytest.mark.parametrize("closed_first", [True, False])
def test_closing_the_log_waits_for_leases(tmp_path: Path, closed_first: bool) -> None:
    log = open_log(tmp_path)
    fill(log, random.Random(5), 10, ts=1)
    expected = bytes(log.read(0, 1 << 20))
    records = log.read_slices(0, 1 << 20)
    segments = list(log.segments)
    if closed_first:
        log.close()
        assert all(seg.fd >= 0 for seg in segments if seg.leases)
    assert drain(records) == expected
    if not closed_first:
        log.close()
    assert all(seg.fd == -1 for seg in segments)
