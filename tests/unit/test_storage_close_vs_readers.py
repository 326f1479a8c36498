"""Closing a partition (DeleteTopics, shutdown) while a read runs in a worker thread.

A Fetch whose data is cold reads in a worker thread (``LocalPartition.read``); a DeleteTopics on
another connection may close the partition meanwhile.  The read must not hit closed (or,
worse, reused) descriptors, and a read that starts after the close must answer with a Kafka
error, not an ``OSError`` that would close the client's connection.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from bayou.errors import KafkaError
from tests.unit.test_storage_log import batch, open_log


def test_a_pinned_reader_keeps_its_descriptors_through_close(tmp_path: Path) -> None:
    log = open_log(tmp_path / "p", **{"segment.bytes": 1000, "index.interval.bytes": 100})
    for _ in range(10):
        log.append(batch(3, size=50))
    assert len(log.segments) > 1
    expected = log.read(0, 1 << 20)
    pinned = log._pin()  # a read in a worker thread, between pinning and reading
    try:
        log.close_without_flush()  # DeleteTopics on the event loop
        assert log._read(pinned, 0, 1 << 20, False) == expected
    finally:
        log._unpin()
    assert all(seg.fd == -1 for seg in pinned)  # closed once the reader is done


def test_a_read_after_close_is_a_kafka_error(tmp_path: Path) -> None:
    log = open_log(tmp_path / "p")
    log.append(batch(3))
    log.close_without_flush()
    with pytest.raises(KafkaError):
        log.read(0, 1 << 20)
