"""Planning remote reads over the chunk cache, without a store: the cache is filled with a
real segment's files cut into chunks, and every plan must answer what the local log answers
for the same offset — same bytes, same cut, same exact record for a time."""

from __future__ import annotations

import os
import random
from collections.abc import Iterator
from pathlib import Path

import pytest

from bayou.config import TopicConfig
from bayou.protocol.kafka import records as R
from bayou.protocol.kafka.records import Record
from bayou.storage.log import PartitionLog
from bayou.storage.tiered.cache import ChunkCache
from bayou.storage.tiered.reader import (
    Missing,
    SegmentView,
    plan_max_timestamp,
    plan_offset_for_timestamp,
    plan_read,
)
from bayou.storage.tiered.remote_segments import RemoteSegment

CHUNK = 1000  # small: batches straddle chunk boundaries


@pytest.fixture
def sealed(tmp_path: Path) -> tuple[PartitionLog, RemoteSegment]:
    """A log whose first segment (~20 KB, batches of 1-5 records of varied sizes) is closed."""
    config = TopicConfig.resolve({}, {"segment.bytes": 20_000, "index.interval.bytes": 700})
    log = PartitionLog("t", 0, tmp_path / "log", config, lambda: 1_000_000)
    rng = random.Random(7)
    ts = 1_000_000
    while len(log.segments) < 2:
        batch = []
        for _ in range(rng.randint(1, 5)):
            ts += rng.randint(0, 3)
            batch.append(Record(ts, b"k", bytes(rng.randint(10, 400))))
        log.append(R.build_batch(batch))
    seg = log.segments[0]
    entry = RemoteSegment(
        "seg",
        seg.base_offset,
        seg.next_offset,
        seg.size,
        seg.max_timestamp,
        seg.offset_of_max_timestamp,
        0,
        seg.offset_index.path.stat().st_size,
        seg.time_index.path.stat().st_size,
        0,
    )
    return log, entry


def fill_cache(cache: ChunkCache, log: PartitionLog, entry: RemoteSegment) -> None:
    seg = log.segments[0]
    data = seg.log_path.read_bytes()
    for k in range(0, len(data), CHUNK):
        cache.add(f"seg.{k // CHUNK:06d}", data[k : k + CHUNK])
    cache.add("seg.index", seg.offset_index.path.read_bytes())
    cache.add("seg.timeindex", seg.time_index.path.read_bytes())


_views: list[SegmentView] = []


def view(cache: ChunkCache, entry: RemoteSegment) -> SegmentView:
    made = SegmentView(cache, "p/0/", entry, CHUNK, 0)
    _views.append(made)
    return made


@pytest.fixture(autouse=True)
def close_views() -> Iterator[None]:
    """A view holds a descriptor per chunk it read until closed (the broker closes each
    plan's view): these tests make thousands, so each test closes its own at the end."""
    yield
    while _views:
        _views.pop().close()


def test_reads_match_the_local_log(
    tmp_path: Path, sealed: tuple[PartitionLog, RemoteSegment]
) -> None:
    log, entry = sealed
    cache = ChunkCache(tmp_path / "cache", 1 << 30)
    cache.reset()
    fill_cache(cache, log, entry)
    seg_end = log.segments[1].base_offset
    for offset in range(entry.base_offset, entry.next_offset, 3):
        for max_bytes in (1, 500, 1500, 7000, 1 << 20):
            records = plan_read(view(cache, entry), offset, max_bytes, None, True)
            try:
                got = records.read_all()
            finally:
                records.close()
            local = bytes(log.read(offset, max_bytes))
            # the local read continues into the next segment; a remote one stops at its end
            within = b"".join(
                bytes(log.segments[0].read(pos, h.size))
                for pos, h, _ in log.segments[0].iter_batches(0)
                if h.last_offset >= offset
            )
            assert local.startswith(got) and within.startswith(got), (offset, max_bytes)
            assert got, (offset, max_bytes)  # KIP-74: at least one whole batch
            batches = list(R.iter_batches(memoryview(got)))
            assert batches[0][1].last_offset >= offset > batches[0][1].base_offset - 1
            if max_bytes >= 1 << 20:
                assert batches[-1][1].last_offset == seg_end - 1  # the segment's whole rest
    log.close()


def test_read_committed_bound_and_no_first_batch_beyond_max_bytes(
    tmp_path: Path, sealed: tuple[PartitionLog, RemoteSegment]
) -> None:
    log, entry = sealed
    cache = ChunkCache(tmp_path / "cache", 1 << 30)
    cache.reset()
    fill_cache(cache, log, entry)
    bound = entry.base_offset + (entry.next_offset - entry.base_offset) // 2
    records = plan_read(view(cache, entry), 0, 1 << 20, bound, True)
    got = records.read_all()
    records.close()
    assert all(h.base_offset < bound for _, h in R.iter_batches(memoryview(got)))
    assert bytes(log.read(0, 1 << 20, max_offset=bound)).startswith(got)
    assert len(plan_read(view(cache, entry), 0, 1, None, False)) == 0  # min_one=False
    log.close()


def test_times_match_the_local_log(
    tmp_path: Path, sealed: tuple[PartitionLog, RemoteSegment]
) -> None:
    log, entry = sealed
    cache = ChunkCache(tmp_path / "cache", 1 << 30)
    cache.reset()
    fill_cache(cache, log, entry)
    for ts in range(999_990, entry.max_timestamp + 2, 7):
        assert plan_offset_for_timestamp(view(cache, entry), ts, 0) == log.offset_for_timestamp(
            ts
        ), ts
    first_at_max = next(
        (rec.offset, rec.timestamp)
        for _pos, _h, body in log.segments[0].iter_batches(0, with_body=True)
        for rec in R.iter_records(body)  # type: ignore[arg-type]
        if rec.timestamp == entry.max_timestamp
    )
    assert plan_max_timestamp(view(cache, entry)) == first_at_max
    log.close()


def test_a_plan_names_the_chunks_it_lacks(
    tmp_path: Path, sealed: tuple[PartitionLog, RemoteSegment]
) -> None:
    log, entry = sealed
    cache = ChunkCache(tmp_path / "cache", 1 << 30)
    cache.reset()
    with pytest.raises(Missing) as missing:
        plan_read(view(cache, entry), 0, 2500, None, True)
    assert [p.name for p in missing.value.pieces] == ["seg.index"]
    cache.add("seg.index", log.segments[0].offset_index.path.read_bytes())
    v = view(cache, entry)
    v.hint = 2500
    with pytest.raises(Missing) as missing:
        plan_read(v, 0, 2500, None, True)
    pieces = missing.value.pieces
    assert [p.name for p in pieces] == ["seg.000000", "seg.000001", "seg.000002"]
    assert [(p.start, p.end) for p in pieces] == [(0, 1000), (1000, 2000), (2000, 3000)]
    assert all(p.key == "p/0/" + entry.key(".log") for p in pieces)
    log.close()


def test_the_cache_stays_within_its_capacity_lru_first(tmp_path: Path) -> None:
    cache = ChunkCache(tmp_path / "cache", 3000)
    cache.reset()
    for name in "abc":
        cache.add(name, bytes(1000))
    fd = cache.open("a")  # a is used: b is now the least recently used
    assert fd is not None
    cache.add("d", bytes(1000))
    assert "b" not in cache and {"a", "c", "d"} <= {n for n in "abcd" if n in cache}
    assert cache.size_bytes == 3000
    assert sorted(p.name for p in (tmp_path / "cache").iterdir()) == ["a", "c", "d"]
    cache.add("e", bytes(1000))  # c goes: it was used before a
    cache.add("f", bytes(1000))  # now a goes, but its open descriptor still reads it
    assert "c" not in cache and "a" not in cache
    assert len(os.pread(fd, 2000, 0)) == 1000
    os.close(fd)
