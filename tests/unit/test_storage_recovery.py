"""Crash recovery: torn tails, corrupt bytes, broken indexes; the log stays a prefix."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any

from hypothesis import event, given, settings
from hypothesis import strategies as st

from bayou.config import TopicConfig
from bayou.protocol.kafka import records as R
from bayou.protocol.kafka.records import Record
from bayou.storage.files import INDEX_SUFFIX, TIME_INDEX_SUFFIX
from bayou.storage.log import PartitionLog

CFG = {"segment.bytes": 700, "index.interval.bytes": 120}
PID = 42


def open_log(path: Path, clean: bool = False) -> PartitionLog:
    return PartitionLog(
        "t", 0, path, TopicConfig.resolve({}, CFG), lambda: 1_000, clean_shutdown=clean
    )


def make_batch(i: int, n: int, size: int, seq: int | None) -> bytes:
    recs = [Record(100 * i + j, b"k", bytes([i % 256]) * size) for j in range(n)]
    if seq is None:
        return R.build_batch(recs)
    return R.build_batch(recs, producer_id=PID, producer_epoch=0, base_sequence=seq)


appends_st = st.lists(
    st.tuples(st.integers(1, 4), st.integers(0, 120), st.booleans()), min_size=1, max_size=25
)


@settings(max_examples=60, deadline=None)
@given(
    appends_st,
    st.integers(0, 25),  # flush + checkpoint after this many appends
    st.sampled_from(["truncate", "corrupt", "none"]),
    st.randoms(use_true_random=False),
)
def test_recovery_keeps_a_valid_prefix(
    appends: list[tuple[int, int, bool]], flush_at: int, damage: str, rnd: Any
) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp)
        log = open_log(path)
        seq = 0
        written = bytearray()
        flushed = 0
        for i, (n, size, idem) in enumerate(appends):
            if i == flush_at:
                flushed = log.flush()
                log.checkpoint()
            log.append(make_batch(i, n, size, seq if idem else None))
            if idem:
                seq += n
            written += log.read(log.log_end_offset - 1, 1 << 20)
        log.close_without_flush()  # kill -9: no final flush, checkpoint or marker
        assert bytes(written) == _all(path, log)

        flushed_bytes = _bytes_below(written, flushed)
        last = max(path.glob("*.log"))
        last_base = int(last.name[:20])
        data_before_last = _bytes_below(written, last_base)
        low = max(flushed_bytes - data_before_last, 0)  # first damageable byte of `last`
        file_size = last.stat().st_size
        if damage == "truncate" and file_size > low:
            os.truncate(last, rnd.randrange(low, file_size))
        elif damage == "corrupt" and file_size > low:
            spot = _crc_covered_byte(written[data_before_last:], low, rnd)
            if spot is not None:
                with open(last, "r+b") as f:
                    f.seek(spot)
                    byte = f.read(1)
                    f.seek(spot)
                    f.write(bytes([byte[0] ^ (1 << rnd.randrange(8))]))

        log = open_log(path)
        data = log.read(0, 1 << 30) if log.log_end_offset else b""
        assert bytes(written).startswith(data)
        headers = R.validate_batches(data) if data else []
        assert log.log_end_offset == (headers[-1].last_offset + 1 if headers else 0)
        assert log.log_end_offset >= flushed
        if damage == "none":
            assert data == bytes(written)
        event(f"{damage}: {'lost data' if len(data) < len(written) else 'intact'}")
        # appends continue at the right offset, with the right producer sequence
        survived_seq = sum(h.records_count for h in headers if h.producer_id == PID)
        result = log.append(make_batch(99, 2, 5, survived_seq))
        assert result.base_offset == log.log_end_offset - 2
        assert log.append(make_batch(99, 2, 5, survived_seq)) == result  # a retry
        log.close()
        log = open_log(path, clean=True)
        assert log.read(0, 1 << 30) == data + log.read(result.base_offset, 1 << 30)
        log.close()


def _all(path: Path, log: PartitionLog) -> bytes:
    return b"".join(p.read_bytes() for p in sorted(path.glob("*.log")))


def _bytes_below(written: bytearray, offset: int) -> int:
    """Bytes taken by the batches wholly below ``offset``."""
    total = 0
    for _pos, h in R.iter_batches(written):
        if h.last_offset >= offset:
            break
        total += h.size
    return total


def _crc_covered_byte(segment: bytearray, low: int, rnd: Any) -> int | None:
    """A random position ≥ low that a check can catch (not in the leader-epoch field)."""
    spots = []
    for pos, h in R.iter_batches(segment):
        for rel in (*range(0, 12), *range(16, h.size)):
            if pos + rel >= low:
                spots.append(pos + rel)
    return rnd.choice(spots) if spots else None


def test_broken_indexes_are_rebuilt(tmp_path: Path) -> None:
    log = open_log(tmp_path)
    for i in range(30):
        log.append(make_batch(i, 3, 50, None))
    expected = log.read(0, 1 << 30)
    ts = log.offset_for_timestamp(1501)
    log.close()
    for p in tmp_path.glob("*" + INDEX_SUFFIX):
        p.write_bytes(b"\x00\x00\x00\x07\x00\x00\x00\x01" * 3 + b"\x01")
    for p in tmp_path.glob("*" + TIME_INDEX_SUFFIX):
        p.write_bytes(b"")
    for clean in (True, False):
        log = open_log(tmp_path, clean=clean)
        assert log.read(0, 1 << 30) == expected
        assert log.offset_for_timestamp(1501) == ts
        for off in range(0, 90, 7):
            assert R.parse_header(log.read(off, 1)).last_offset >= off
        log.close()


def test_truncated_first_segment_file_leaves_empty_log(tmp_path: Path) -> None:
    log = open_log(tmp_path)
    log.append(make_batch(0, 2, 10, 0))
    log.close_without_flush()
    os.truncate(tmp_path / f"{0:020d}.log", 30)
    log = open_log(tmp_path)
    assert (log.log_end_offset, log.read(0, 100)) == (0, b"")
    assert log.append(make_batch(0, 2, 10, 0)).base_offset == 0
    log.close()
