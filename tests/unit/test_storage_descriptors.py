"""Index files hold a descriptor only while they are written (see docs/design/limits.md)."""

from __future__ import annotations

import os
from pathlib import Path

from bayou.config import TopicConfig
from bayou.protocol.kafka import records as R
from bayou.protocol.kafka.records import Record
from bayou.storage.log import PartitionLog


def open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


def batch(ts: int) -> bytes:
    return R.build_batch([Record(ts, None, b"x" * 300)])


def test_sealed_and_idle_segments_hold_only_their_log_descriptor(tmp_path: Path) -> None:
    config = TopicConfig.resolve({}, {"segment.bytes": 2000, "index.interval.bytes": 0})
    log = PartitionLog("t", 0, tmp_path, config, lambda: 1000)
    for i in range(20):
        log.append(batch(i))
    *sealed, active = log.segments
    assert len(sealed) >= 3
    for seg in sealed:
        assert not seg.offset_index.is_open and not seg.time_index.is_open
    assert active.offset_index.is_open  # being written
    before = open_fds()
    log.release_idle_files()  # the first round only notes the log end offset
    assert active.offset_index.is_open
    log.release_idle_files()  # nothing appended since: idle
    assert not active.offset_index.is_open and not active.time_index.is_open
    assert open_fds() == before - 2
    log.append(batch(100))  # rolls: a new segment, its first batch needs no entry
    log.append(batch(101))  # the next entry opens its file
    assert log.active.offset_index.is_open
    assert log.offset_for_timestamp(101) == (21, 101)
    log.close()
    reopened = PartitionLog("t", 0, tmp_path, config, lambda: 1000)
    assert all(not s.offset_index.is_open and not s.time_index.is_open for s in reopened.segments)
    assert reopened.offset_for_timestamp(5) == (5, 5)
    assert reopened.read(20, 1 << 20)  # the indexes were kept, not lost
    reopened.close()
