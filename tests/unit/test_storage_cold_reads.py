"""Reads on the event loop come only from the page cache; cold data is reported, not waited for.

``posix_fadvise(DONTNEED)`` on fsynced files drops their pages, which makes a segment cold
on demand (Linux, and a file system with ``RWF_NOWAIT``; skipped elsewhere).  A refused
``RWF_NOWAIT`` read may start readahead, so each test evicts right before the read it checks.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from bayou.protocol.kafka import records as R
from bayou.storage import PageCacheMiss
from bayou.storage.log import PartitionLog
from tests.unit.test_storage_log import batch, decoded, open_log

pytestmark = pytest.mark.skipif(
    not hasattr(os, "RWF_NOWAIT") or not hasattr(os, "posix_fadvise"),
    reason="needs RWF_NOWAIT and posix_fadvise (Linux)",
)


def evict(log: PartitionLog, *, skip_active: bool = False) -> None:
    """Flush, then drop the page cache of the log's segment files."""
    log.flush()
    segments = log.segments[:-1] if skip_active else log.segments
    for seg in segments:
        fd = os.open(seg.log_path, os.O_RDONLY)
        try:
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        finally:
            os.close(fd)


def filled(tmp_path: Path) -> PartitionLog:
    log = open_log(tmp_path / "p", **{"segment.bytes": 16384, "index.interval.bytes": 1024})
    for _ in range(40):
        log.append(batch(8, size=200))
    return log


def test_cold_data_is_a_page_cache_miss_and_a_blocking_read_still_works(tmp_path: Path) -> None:
    log = filled(tmp_path)
    try:
        assert len(log.segments) > 3
        everything = log.read(0, 1 << 30)
        evict(log)
        with pytest.raises(PageCacheMiss):
            log.read(0, 1 << 30, nowait=True)
        assert log.read(0, 1 << 30) == everything  # a worker thread would do this
        assert log.read(0, 1 << 30, nowait=True) == everything  # and now it is cached
    finally:
        log.close()


def test_a_read_into_cold_segments_returns_what_is_cached(tmp_path: Path) -> None:
    log = filled(tmp_path)
    try:
        first = log.segments[0]
        log.read(0, first.size)  # warm the first segment only
        evict(log, skip_active=True)
        log.read(0, first.size)
        data = log.read(0, 1 << 30, nowait=True)
        offsets = [r.offset for r in decoded(bytes(data))]
        assert offsets and offsets[0] == 0
        assert R.validate_batches(bytes(data))
        assert offsets == list(range(offsets[-1] + 1))  # a prefix, whole batches only
        assert offsets[-1] + 1 < log.log_end_offset  # ... that stops where the cold data begins
    finally:
        log.close()
