"""A Fetch never plans a set of only empty batches when records follow.

Compaction leaves an empty batch at the end of every cleaned group; a compacted partition can
hold long runs of them.  librdkafka takes a response without a single record (nor a marker)
for a size limit too tight: it doubles its fetch size and, after ten such responses, fails
the partition with MSG_SIZE_TOO_LARGE ("might be too large to fetch").  So a read that has
planned only empty batches goes on — and when the rest is not in the page cache, it is
repeated where it may block instead of answering with the empty part."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from bayou.protocol.kafka import records as R
from bayou.storage.cleaner import clean
from bayou.storage.engine import PageCacheMiss
from bayou.storage.file_records import FileRecords
from tests.unit.test_storage_log import Clock, open_log


def batches(records: FileRecords) -> list[R.BatchHeader]:
    data = records.read_all()
    records.close()
    return [h for _pos, h in R.iter_batches(memoryview(data))]


def test_a_run_of_empty_batches_is_read_through(tmp_path: Path) -> None:
    clock = Clock()
    log = open_log(
        tmp_path / "p",
        clock,
        **{"segment.bytes": 300, "cleanup.policy": "compact", "min.cleanable.dirty.ratio": 0.01},
    )
    try:  # a segment per 300 bytes: each holds a descriptor until the log closes
        for i in range(200):
            log.append(R.build_batch([R.Record(1000 + i, b"k%d" % (i % 3), b"v" * 40)]))
        assert clean(log, clock(), 1000) is not None  # one pass: an empty batch per old segment
        planned = batches(log.read_slices(0, 1 << 20))
        assert sum(h.records_count for h in planned) >= 3  # through the empties to the records
        empties = [h for h in planned if h.records_count == 0]
        assert len(empties) > 10  # the run this is about
        if not hasattr(os, "RWF_NOWAIT"):
            pytest.skip("no RWF_NOWAIT: every read may block, nothing to plan around")
        # the page cache holds the first segments only: before, the read answered those
        for seg in log.segments[3:]:
            os.posix_fadvise(seg.fd, 0, 0, os.POSIX_FADV_DONTNEED)
        try:
            nowait = log.read_slices(0, 1 << 20, nowait=True)
        except PageCacheMiss:
            return  # repeated in a worker thread by the engine: fine
        got = batches(nowait)
        assert any(h.records_count > 0 for h in got), [h.base_offset for h in got]
    finally:
        log.close()
