"""An append that fails part-way leaves the log exactly as acknowledged.

Fault injection: a file layer that fails the Nth write (``ENOSPC`` after writing half the
bytes, as a filling disk does).  The segment's writes go through ``write_all`` in
``bayou.storage.segment`` (the ``.log``) and ``bayou.storage.index`` (``.index`` and
``.timeindex``); the test wraps both.  Whichever write fails — the batch itself, the offset
index entry after it, or the time index entry after that — the append raises
``KafkaStorageError``, the files are cut back, the next append gets the offsets the failed
one would have had, and a reopened log (crash, no clean shutdown) holds exactly the
acknowledged batches with indexes that find each of them.
"""

from __future__ import annotations

import errno
import os
from collections.abc import Callable
from pathlib import Path

import pytest

from bayou.config import TopicConfig
from bayou.errors import KafkaStorageError
from bayou.protocol.kafka import records as R
from bayou.protocol.kafka.records import Record
from bayou.storage import index as index_module
from bayou.storage import segment as segment_module
from bayou.storage.files import write_all
from bayou.storage.log import PartitionLog

CONFIG = {"index.interval.bytes": 0, "segment.bytes": 1 << 20}  # every batch is indexed


class FailingWrites:
    """Counts ``write_all`` calls; the ``fail_at``-th writes half its bytes, then ENOSPC."""

    def __init__(self, fail_at: int) -> None:
        self.fail_at = fail_at
        self.calls = 0
        self.where: list[str] = []

    def wrap(self, label: str) -> Callable[[int, bytes | bytearray | memoryview], None]:
        def write(fd: int, data: bytes | bytearray | memoryview) -> None:
            self.calls += 1
            self.where.append(label)
            if self.calls == self.fail_at:
                view = memoryview(data)
                os.write(fd, view[: max(1, len(view) // 2)])
                raise OSError(errno.ENOSPC, "No space left on device (injected)")
            write_all(fd, data)

        return write


def batch(first_ts: int, n: int = 3) -> bytes:
    return R.build_batch([Record(first_ts + i, b"k%d" % i, b"v" * 40) for i in range(n)])


def open_log(path: Path) -> PartitionLog:
    return PartitionLog("t", 0, path, TopicConfig.resolve({}, CONFIG), lambda: 1_000_000)


def file_sizes(path: Path) -> dict[str, int]:
    return {
        p.name: p.stat().st_size
        for p in sorted(path.iterdir())
        if p.suffix in (".log", ".index", ".timeindex")
    }


def check_exactly(log: PartitionLog, acknowledged: list[tuple[int, int]]) -> None:
    """The log holds these (base offset, first timestamp) batches of 3 records, and every
    offset and timestamp is found through the indexes."""
    data = log.read(0, 1 << 20)
    assert R.validate_batches(data)
    assert [(h.base_offset, h.base_timestamp) for _, h in R.iter_batches(data)] == acknowledged
    assert log.log_end_offset == 3 * len(acknowledged)
    for base, ts in acknowledged:
        found = log.read(base + 1, 1)
        assert next(R.iter_batches(found))[1].base_offset == base
        assert log.offset_for_timestamp(ts + 1) == (base + 1, ts + 1)
    assert log.offset_for_timestamp(acknowledged[-1][1] + 3) is None


@pytest.mark.parametrize("fail_at", [1, 2, 3], ids=["log", "offset-index", "time-index"])
def test_a_failed_append_is_rolled_back_whatever_write_fails(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, fail_at: int
) -> None:
    log = open_log(tmp_path)
    log.append(batch(1000))
    log.append(batch(2000))
    before = file_sizes(tmp_path)
    faults = FailingWrites(fail_at)
    monkeypatch.setattr(segment_module, "write_all", faults.wrap("log"))
    monkeypatch.setattr(index_module, "write_all", faults.wrap("index"))

    with pytest.raises(KafkaStorageError, match="No space left"):
        log.append(batch(3000))
    assert faults.where == ["log", "index", "index"][:fail_at]  # the write that failed
    assert file_sizes(tmp_path) == before  # cut back to exactly what was acknowledged
    check_exactly(log, [(0, 1000), (3, 2000)])

    # The disk has room again: the next append takes the offsets the failed one did not.
    result = log.append(batch(4000))
    assert (result.base_offset, result.last_offset) == (6, 8)
    check_exactly(log, [(0, 1000), (3, 2000), (6, 4000)])
    monkeypatch.undo()

    # A crash now (no close, no clean-shutdown marker): recovery finds exactly those.
    reopened = open_log(tmp_path)
    check_exactly(reopened, [(0, 1000), (3, 2000), (6, 4000)])
    assert reopened.append(batch(5000)).base_offset == 9
    reopened.close()
    log.close()


def test_an_append_that_cannot_be_undone_takes_the_partition_offline(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    log = open_log(tmp_path)
    log.append(batch(1000))
    faults = FailingWrites(2)  # the offset-index write fails ...
    monkeypatch.setattr(index_module, "write_all", faults.wrap("index"))
    monkeypatch.setattr(segment_module, "write_all", faults.wrap("log"))

    def broken_truncate(_fd: int, _size: int) -> None:
        raise OSError(errno.EIO, "I/O error (injected)")

    monkeypatch.setattr(segment_module.os, "ftruncate", broken_truncate)  # ... and so does
    with pytest.raises(KafkaStorageError):  # the cut-back
        log.append(batch(2000))
    monkeypatch.undo()
    with pytest.raises(KafkaStorageError, match="offline"):
        log.append(batch(3000))
    assert log.log_end_offset == 3
    log.close()
