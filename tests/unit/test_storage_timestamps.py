"""Batch max timestamps as stored, and how retention judges a segment's age.

Older Sarama releases send batches whose header ``max_timestamp`` is -1.  Such a batch must
never be stored as is: the log computes the max from the records' timestamp deltas (only for
such batches), patches it into the header with a fresh CRC, and indexes with it — so
retention keeps the data for ``retention.ms`` and ListOffsets by time finds it.  A segment
without any valid timestamp is judged by its file's modification time, as Kafka does.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

import pytest

from bayou.config import TopicConfig
from bayou.protocol.kafka import records as R
from bayou.protocol.kafka.records import Record
from bayou.storage import append as append_module
from bayou.storage.log import PartitionLog

HOUR = 3_600_000
DAY = 24 * HOUR


class Clock:
    def __init__(self, now: int) -> None:
        self.now = now

    def __call__(self) -> int:
        return self.now


def open_log(path: Path, clock: Clock, **overrides: Any) -> PartitionLog:
    cfg = {"segment.bytes": 4000, "index.interval.bytes": 100, **overrides}
    return PartitionLog("t", 0, path, TopicConfig.resolve({}, cfg), clock)


def sarama_batch(timestamps: list[int], *, max_timestamp: int = -1, **kw: Any) -> bytes:
    """A batch as an old Sarama sends it: the header's max timestamp is wrong (-1)."""
    records = [Record(ts, b"k%d" % i, b"v%d" % i) for i, ts in enumerate(timestamps)]
    return R.build_batch(records, max_timestamp=max_timestamp, **kw)


def stored_headers(log: PartitionLog) -> list[R.BatchHeader]:
    data = log.read(log.log_start_offset, 1 << 20)
    assert R.validate_batches(data)  # every stored CRC still checks out
    return [h for _, h in R.iter_batches(data)]


@pytest.mark.parametrize("codec", [R.COMPRESSION_NONE, R.COMPRESSION_LZ4])
@pytest.mark.parametrize("header_max", [-1, "below-base"])
def test_a_wrong_header_max_timestamp_is_computed_from_the_records(
    tmp_path: Path, codec: int, header_max: int | str
) -> None:
    now = 1_700_000_000_000
    clock = Clock(now)
    log = open_log(tmp_path, clock, **{"retention.ms": DAY})
    ts = [now - 3000, now - 1000, now - 2000]  # out of order within the batch, as allowed
    bad = -1 if header_max == -1 else ts[0] - 5
    log.append(sarama_batch(ts, max_timestamp=bad, compression=codec))
    log.append(sarama_batch([now - 500], compression=codec))

    headers = stored_headers(log)
    assert [h.max_timestamp for h in headers] == [now - 1000, now - 500]
    assert [rec.timestamp for rec in R.iter_records(log.read(0, 1 << 20))] == ts
    assert log.active.max_timestamp == now - 500
    # ListOffsets by time: the exact first record at or after the target.
    assert log.offset_for_timestamp(now - 2500) == (1, now - 1000)
    assert log.offset_for_timestamp(now - 900) == (3, now - 500)
    assert log.offset_for_timestamp(now) is None
    assert log.max_timestamp() == (3, now - 500)
    # Retention with retention.ms = 1 day keeps the data (the active segment included).
    assert log.delete_old_segments(now) == 0
    assert log.log_start_offset == 0 and log.log_end_offset == 4
    log.close()
    # After a restart the rebuilt indexes agree.
    reopened = open_log(tmp_path, clock, **{"retention.ms": DAY})
    assert reopened.offset_for_timestamp(now - 2500) == (1, now - 1000)
    assert reopened.delete_old_segments(now) == 0
    reopened.close()


def test_batches_with_a_correct_header_are_not_decoded(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def refuse(*_args: object) -> int:
        raise AssertionError("a correct header must not cost a decode")

    monkeypatch.setattr(append_module, "records_max_timestamp", refuse)
    log = open_log(tmp_path, Clock(10_000))
    log.append(R.build_batch([Record(5000 + i, None, b"x") for i in range(10)]))
    assert stored_headers(log)[0].max_timestamp == 5009
    log.close()


def test_log_append_time_topics_still_stamp_the_append_time(tmp_path: Path) -> None:
    clock = Clock(1_700_000_000_000)
    log = open_log(tmp_path, clock, **{"message.timestamp.type": "LogAppendTime"})
    log.append(sarama_batch([clock.now - 10, clock.now - 5]))
    assert stored_headers(log)[0].max_timestamp == clock.now
    log.close()


def test_retention_judges_a_segment_without_timestamps_by_its_file_time(
    tmp_path: Path,
) -> None:
    now = time.time_ns() // 1_000_000  # the file's mtime is on the wall clock
    clock = Clock(now)
    log = open_log(tmp_path, clock, **{"retention.ms": HOUR})
    log.append(R.build_batch([Record(-1, None, b"no timestamp")]))  # max stays -1
    assert log.active.max_timestamp == -1
    assert log.delete_old_segments(now) == 0  # written just now: kept
    two_hours_ago = (now - 2 * HOUR) / 1000
    os.utime(log.active.log_path, (two_hours_ago, two_hours_ago))
    assert log.delete_old_segments(now) == 1  # untouched for two hours: expired
    assert log.log_start_offset == log.log_end_offset == 1
    log.close()
