"""PartitionLog: append/read across segments, read semantics, timestamps, idempotence."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from bayou.config import TopicConfig
from bayou.errors import (
    CorruptMessage,
    InvalidProducerEpoch,
    InvalidRecord,
    MessageTooLarge,
    OffsetOutOfRange,
    OutOfOrderSequence,
)
from bayou.protocol.kafka import records as R
from bayou.protocol.kafka.records import Record
from bayou.storage.log import PartitionLog
from bayou.storage.recovery import RECOVERY_FILE


class Clock:
    def __init__(self, now: int = 1_000_000) -> None:
        self.now = now

    def __call__(self) -> int:
        return self.now


def open_log(
    path: Path, clock: Clock | None = None, clean: bool = False, **overrides: Any
) -> PartitionLog:
    config = TopicConfig.resolve({}, overrides)
    return PartitionLog("t", 0, path, config, clock or Clock(), clean_shutdown=clean)


def batch(n: int = 3, ts: int = 1000, size: int = 10, **kw: Any) -> bytes:
    return R.build_batch([Record(ts + i, None, b"x" * size) for i in range(n)], **kw)


def decoded(data: bytes) -> Iterator[R.DecodedRecord]:
    for pos, h in R.iter_batches(data):
        yield from R.iter_records(memoryview(data)[pos : pos + h.size])


@pytest.fixture
def log(tmp_path: Path) -> Iterator[PartitionLog]:
    lg = open_log(tmp_path / "p", **{"segment.bytes": 1000, "index.interval.bytes": 100})
    yield lg
    lg.close()


def test_append_assigns_offsets(log: PartitionLog) -> None:
    r1 = log.append(batch(3))
    r2 = log.append(memoryview(batch(2) + batch(4)))
    assert (r1.base_offset, r1.last_offset, r1.record_count) == (0, 2, 3)
    assert (r2.base_offset, r2.last_offset, r2.record_count) == (3, 8, 6)
    assert r1.log_append_time_ms == -1 and r1.log_start_offset == 0
    assert log.log_end_offset == 9
    data = log.read(0, 1 << 20)
    assert [h.base_offset for _, h in R.iter_batches(data)] == [0, 3, 5]
    assert R.validate_batches(data)
    assert [r.offset for r in decoded(data)] == list(range(9))


def test_append_across_segment_rolls(log: PartitionLog) -> None:
    for _ in range(50):
        log.append(batch(2, size=50))
    assert len(log.segments) > 5
    assert log.size_bytes == sum(s.size for s in log.segments)
    out = []
    offset = 0
    while offset < log.log_end_offset:
        data = log.read(offset, 300)
        headers = R.validate_batches(data)
        out.extend(r.offset for r in decoded(data))
        offset = headers[-1].last_offset + 1
    assert out == list(range(100))
    everything = log.read(0, 1 << 30)  # crosses every segment
    assert [r.offset for r in decoded(everything)] == list(range(100))


def test_read_semantics(log: PartitionLog) -> None:
    for _ in range(5):
        log.append(batch(4, size=30))  # offsets 0-3, 4-7, ...
    size = len(batch(4, size=30))
    assert log.read(20, 100) == b""
    with pytest.raises(OffsetOutOfRange):
        log.read(21, 100)
    with pytest.raises(OffsetOutOfRange):
        log.read(-1, 100)
    mid = log.read(6, 1 << 20)  # offset in the middle of the second batch
    assert R.parse_header(mid).base_offset == 4
    one = log.read(6, 1)  # smaller than a batch: still one whole batch
    assert len(one) == size and R.validate_batches(one)
    two = log.read(0, 2 * size + size // 2)
    assert len(two) == 2 * size


def test_message_too_large_and_corrupt(tmp_path: Path) -> None:
    lg = open_log(tmp_path, **{"max.message.bytes": 200})
    with pytest.raises(MessageTooLarge):
        lg.append(batch(1, size=300))
    bad = bytearray(batch(2))
    bad[-1] ^= 1
    with pytest.raises(CorruptMessage):
        lg.append(batch(1) + bytes(bad))  # all or nothing
    assert lg.log_end_offset == 0 and lg.size_bytes == 0
    lg.close()


def test_log_append_time(tmp_path: Path) -> None:
    clock = Clock(5_000)
    lg = open_log(tmp_path, clock, **{"message.timestamp.type": "LogAppendTime"})
    r = lg.append(batch(3, ts=1))
    assert r.log_append_time_ms == 5_000
    data = lg.read(0, 1000)
    (h,) = R.validate_batches(data)
    assert h.timestamp_type == 1 and h.max_timestamp == 5_000
    assert lg.offset_for_timestamp(4_000) == (0, 5_000)
    lg.close()


def test_offset_for_timestamp_exact(log: PartitionLog) -> None:
    # batches: ts 100..109, 200..209, ... (each 10 records) across several segments
    for b in range(20):
        log.append(batch(10, ts=100 * (b + 1), size=20))
    assert len(log.segments) > 2
    assert log.offset_for_timestamp(0) == (0, 100)
    assert log.offset_for_timestamp(105) == (5, 105)
    assert log.offset_for_timestamp(110) == (10, 200)
    assert log.offset_for_timestamp(1503) == (143, 1503)
    assert log.offset_for_timestamp(2009) == (199, 2009)
    assert log.offset_for_timestamp(2010) is None
    assert log.max_timestamp() == (199, 2009)


def test_offset_for_timestamp_unordered(log: PartitionLog) -> None:
    log.append(R.build_batch([Record(50), Record(10), Record(70)]))
    log.append(R.build_batch([Record(20), Record(60)]))
    assert log.offset_for_timestamp(55) == (2, 70)
    assert log.offset_for_timestamp(15) == (0, 50)
    assert log.max_timestamp() == (2, 70)


def test_empty_log(log: PartitionLog) -> None:
    assert log.read(0, 100) == b""
    assert log.offset_for_timestamp(0) is None
    assert log.max_timestamp() is None


def idem(seq: int, n: int = 2, pid: int = 7, epoch: int = 0, size: int = 10) -> bytes:
    return batch(n, size=size, producer_id=pid, producer_epoch=epoch, base_sequence=seq)


def test_idempotent_producer(log: PartitionLog) -> None:
    r0 = log.append(idem(0))
    r1 = log.append(idem(2))
    assert log.append(idem(0)) == r0  # retry: same answer, nothing written
    assert log.append(idem(2)) == r1
    assert log.log_end_offset == 4
    with pytest.raises(OutOfOrderSequence):
        log.append(idem(5))
    with pytest.raises(OutOfOrderSequence):
        log.append(idem(1, pid=8))  # unknown producer must start at 0
    with pytest.raises(OutOfOrderSequence):
        log.append(idem(3, epoch=1))  # new epoch must start at 0
    log.append(idem(0, epoch=1))
    with pytest.raises(InvalidProducerEpoch):
        log.append(idem(4, epoch=0))
    assert log.log_end_offset == 6


def test_idempotent_duplicate_window(log: PartitionLog) -> None:
    results = [log.append(idem(i)) for i in range(0, 14, 2)]  # 7 batches
    for i, r in enumerate(results[2:], start=2):
        assert log.append(idem(2 * i)) == r
    with pytest.raises(OutOfOrderSequence):
        log.append(idem(0))  # evicted from the 5-batch window


def test_sequence_wraps(log: PartitionLog) -> None:
    log.append(idem(0))
    # pretend a long history: jump the state to near the wrap point through a new epoch
    log.append(idem(0, n=1, epoch=1))
    log.producer_state.producers[7].batches[-1] = (
        log.producer_state.producers[7].batches[-1]._replace(last_seq=2**31 - 1)
    )
    log.append(idem(0, epoch=1))


def test_restart_keeps_everything(tmp_path: Path) -> None:
    cfg = {"segment.bytes": 600, "index.interval.bytes": 64}
    lg = open_log(tmp_path, **cfg)
    rs = [lg.append(idem(2 * i, size=40)) for i in range(20)]
    before = lg.read(0, 1 << 20)
    lg.close()
    for clean in (True, False):
        lg = open_log(tmp_path, clean=clean, **cfg)
        assert lg.log_end_offset == 40
        assert lg.read(0, 1 << 20) == before
        assert lg.append(idem(38, size=40)) == rs[-1]
        assert lg.offset_for_timestamp(1001) == (1, 1001)
        lg.close()
    lg = open_log(tmp_path, **cfg)
    assert lg.append(idem(40)).base_offset == 40
    lg.close()


def test_producer_state_without_checkpoint(tmp_path: Path) -> None:
    lg = open_log(tmp_path, **{"segment.bytes": 500})
    rs = [lg.append(idem(2 * i, size=40)) for i in range(10)]
    lg.flush()
    lg.checkpoint()
    rs += [lg.append(idem(2 * i, size=40)) for i in range(10, 15)]
    lg.close_without_flush()  # like kill -9: page cache has it, no final checkpoint
    lg = open_log(tmp_path, **{"segment.bytes": 500})
    assert lg.log_end_offset == 30
    assert lg.append(idem(28, size=40)) == rs[-1]
    assert lg.append(idem(30)).base_offset == 30
    lg.close()


def test_checkpoint_of_an_idle_partition_is_not_rewritten(tmp_path: Path) -> None:
    """The periodic checkpoint writes (and fsyncs) a partition's recovery point only when it
    moved: an idle broker's partitions cost no disk writes every round."""
    lg = open_log(tmp_path)
    lg.append(batch(3))
    lg.flush()
    lg.checkpoint()
    checkpoint = tmp_path / RECOVERY_FILE
    written = checkpoint.stat()
    for _ in range(3):
        lg.checkpoint()
    again = checkpoint.stat()
    assert (again.st_ino, again.st_mtime_ns) == (written.st_ino, written.st_mtime_ns)
    lg.append(batch(2))
    lg.flush()
    lg.checkpoint()  # moved: written again
    assert checkpoint.stat().st_ino != written.st_ino
    assert json.loads(checkpoint.read_text())["recovery_point"] == 5
    lg.close()


def test_flush_and_needs_flush(tmp_path: Path) -> None:
    clock = Clock()
    lg = open_log(tmp_path, clock, **{"flush.messages": 5, "flush.ms": 1000})
    assert not lg.needs_flush(clock.now)
    lg.append(batch(3))
    assert not lg.needs_flush(clock.now)
    assert lg.needs_flush(clock.now + 1000)
    lg.append(batch(3))
    assert lg.needs_flush(clock.now)
    assert lg.flush() == 6
    assert not lg.needs_flush(clock.now + 5000)
    lg.close()


def test_segment_ms_roll(tmp_path: Path) -> None:
    clock = Clock()
    lg = open_log(tmp_path, clock, **{"segment.ms": 100})
    lg.append(batch())
    clock.now += 50
    lg.append(batch())
    assert len(lg.segments) == 1
    clock.now += 60
    lg.append(batch())
    assert [s.base_offset for s in lg.segments] == [0, 6]
    lg.close()


def test_flush_from_a_thread_while_appending_and_rolling(tmp_path: Path) -> None:
    import threading

    lg = open_log(tmp_path, **{"segment.bytes": 300})
    stop = threading.Event()
    errors: list[BaseException] = []

    def flusher() -> None:
        try:
            while not stop.is_set():
                lg.flush()
                lg.checkpoint()
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    t = threading.Thread(target=flusher)
    t.start()
    for _ in range(300):
        lg.append(batch(2, size=40))
    stop.set()
    t.join()
    assert not errors
    assert lg.flush() == 600
    lg.close()
    lg = open_log(tmp_path)
    assert lg.log_end_offset == 600
    lg.close()


def test_control_batches_and_producer_epoch(log: PartitionLog) -> None:
    log.append(idem(0))
    log.write_marker(7, 0, True, 0)
    log.append(idem(2))  # a marker with the same epoch keeps the sequence
    log.write_marker(7, 1, False, 0)
    with pytest.raises(OutOfOrderSequence):
        log.append(idem(4, epoch=1))  # a bumped epoch restarts at 0
    log.append(idem(0, epoch=1))
    with pytest.raises(InvalidProducerEpoch):
        log.write_marker(7, 0, True, 0)
    with pytest.raises(InvalidRecord):  # only the coordinator writes markers
        log.append(R.build_control_batch(True, producer_id=7, producer_epoch=1, timestamp=7))


def test_reads_from_where_recent_appends_began_match_reads_through_the_index(
    tmp_path: Path,
) -> None:
    """A segment remembers where its latest appends began (a reader at the log end asks for
    exactly those offsets); what it finds there is what the offset index and a walk of the
    batch headers find, for every offset, past the bound of what it remembers too."""
    overrides = {"segment.bytes": 10_000_000, "index.interval.bytes": 4096}
    live = open_log(tmp_path / "p", **overrides)
    appends = 3_000  # more than a segment remembers (RECENT_STARTS)
    for i in range(appends):
        live.append(batch(1 + i % 3) + (batch(2) if i % 5 == 0 else b""))
    end = live.log_end_offset
    live.flush()
    walked = open_log(tmp_path / "p", clean=True, **overrides)  # loaded: remembers nothing
    try:
        for offset in range(end):
            assert bytes(live.read(offset, 1)) == bytes(walked.read(offset, 1)), offset
    finally:
        walked.close()
        live.close()
