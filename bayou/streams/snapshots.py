"""Checkpointed state snapshots: one file per task, so recovery reads the changelog's tail
only, and the snapshot itself only where the records that follow need it.

Theory of operation
-------------------
A task's state lives in memory (its operators' dicts) and, durably, in its changelog
partition.  Replaying a whole changelog is what makes recovery slow in Kafka Streams, Faust
and Quix Streams once state is large.  Here, after a commit, a task may write a *snapshot*:
every entry of its state and the changelog offset the snapshot covers (the changelog's end
after that commit).  Recovery opens the snapshot, then reads the changelog from that offset
to its end — the records committed since — and applies them.  A snapshot is only a shortcut:
a missing, torn or foreign one (its offset beyond the changelog's end: the topic was
recreated) is ignored and the whole changelog is replayed.

Opening costs nothing in the state's size (``open_snapshot``): the file is memory-mapped and
its trailer checked; an index at its end (every entry's position, sorted by key) answers a
key by binary search and a key prefix (an operator's namespace) by a range of it.  State
that needs no scheduling at restore (per-key state of the Python API, unwindowed
aggregations) is read key by key as records ask for it (``operators.LazyState``); the rest
(windows, whose ends must be scheduled) reads its own range.  So a restart with local state
costs what changed since the snapshot (the changelog's tail, the keys the next records
touch), as RocksDB's open does for Kafka Streams and Quix Streams, instead of the state's
size.

File format (little-endian): ``BAYOUSNAP2``, the covered offset (u64), then entries of
(key length u32, value length u32, key, value), then the index (u64 position of each entry,
in the order of their keys' bytes), then ``END``, the entry count (u64) and the index's
position (u64).  Written to ``<name>.tmp``, fsynced and renamed over ``<name>``: a crash
leaves the old snapshot or the new one, never a mix (an open snapshot's mapping keeps the
file it mapped).  ``BAYOUSNAP1`` files (no index) are still read, whole.
"""

from __future__ import annotations

import mmap
import os
import struct
from collections.abc import Iterable, Iterator
from pathlib import Path

MAGIC_V1 = b"BAYOUSNAP1"
MAGIC = b"BAYOUSNAP2"
TRAILER = b"END"
_ENTRY = struct.Struct("<II")
_U64 = struct.Struct("<Q")
_TAIL = struct.Struct("<3sQQ")  # END, count, index position
BUFFER = 1 << 20


def snapshot_path(state_dir: Path, store: str, partition: int) -> Path:
    safe = "".join(c if c.isalnum() or c in "._-" else "_" for c in store)
    return state_dir / safe / f"{partition}.snapshot"


def write_snapshot(path: Path, offset: int, entries: Iterable[tuple[bytes, bytes]]) -> int:
    """Write atomically; returns the number of entries (keys must be distinct)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    index: list[tuple[bytes, int]] = []
    with open(tmp, "wb", buffering=BUFFER) as f:
        f.write(MAGIC)
        f.write(_U64.pack(offset))
        position = len(MAGIC) + _U64.size
        for key, value in entries:
            index.append((bytes(key), position))
            f.write(_ENTRY.pack(len(key), len(value)))
            f.write(key)
            f.write(value)
            position += _ENTRY.size + len(key) + len(value)
        index.sort()
        f.write(b"".join(_U64.pack(p) for _k, p in index))
        f.write(_TAIL.pack(TRAILER, len(index), position))
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    return len(index)


class Snapshot:
    """An open snapshot (see the module docstring): ``offset`` it covers, ``get(key)``,
    ``range(prefix)``, ``entries(lo, hi)``; reads come from the mapping as asked."""

    def __init__(self, offset: int, data: mmap.mmap | bytes, count: int, index_at: int) -> None:
        self.offset = offset
        self.data = data
        self.count = count
        self.index_at = index_at

    def _position(self, i: int) -> int:
        (position,) = _U64.unpack_from(self.data, self.index_at + i * _U64.size)
        return int(position)

    def _key(self, i: int) -> bytes:
        position = self._position(i)
        klen, _vlen = _ENTRY.unpack_from(self.data, position)
        start = position + _ENTRY.size
        return self.data[start : start + klen]

    def entry(self, i: int) -> tuple[bytes, bytes]:
        """The ``i``-th entry in key order."""
        position = self._position(i)
        klen, vlen = _ENTRY.unpack_from(self.data, position)
        start = position + _ENTRY.size
        return self.data[start : start + klen], self.data[start + klen : start + klen + vlen]

    def _bisect(self, key: bytes, lo: int = 0, hi: int | None = None) -> int:
        """The first index whose key is >= ``key``."""
        hi = self.count if hi is None else hi
        while lo < hi:
            mid = (lo + hi) // 2
            if self._key(mid) < key:
                lo = mid + 1
            else:
                hi = mid
        return lo

    def get(self, key: bytes) -> bytes | None:
        i = self._bisect(key)
        if i < self.count:
            k, v = self.entry(i)
            if k == key:
                return v
        return None

    def range(self, prefix: bytes) -> tuple[int, int]:
        """The indexes ``[lo, hi)`` of the keys starting with ``prefix``."""
        lo = self._bisect(prefix)
        hi = self._bisect(prefix + b"\xff" * 8, lo) if prefix else self.count
        while hi < self.count and self._key(hi).startswith(prefix):
            hi += 1  # a key with more than eight 0xff bytes after the prefix
        return lo, hi

    def entries(self, lo: int = 0, hi: int | None = None) -> Iterator[tuple[bytes, bytes]]:
        for i in range(lo, self.count if hi is None else hi):
            yield self.entry(i)


def open_snapshot(path: Path) -> Snapshot | None:
    """The snapshot at ``path``, mapped, or None when there is no whole one (a version-1
    file is read whole into memory)."""
    try:
        with open(path, "rb") as f:
            size = os.fstat(f.fileno()).st_size
            if size < len(MAGIC) + _U64.size + _TAIL.size:
                return None
            data: mmap.mmap | bytes = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
    except (OSError, ValueError):
        return None
    if data[: len(MAGIC)] == MAGIC_V1:
        old = read_snapshot(path)
        if old is None:
            return None
        return _in_memory(old[0], old[1])
    if data[: len(MAGIC)] != MAGIC:
        return None
    tag, count, index_at = _TAIL.unpack_from(data, size - _TAIL.size)
    if tag != TRAILER or index_at + count * _U64.size != size - _TAIL.size:
        return None
    (offset,) = _U64.unpack_from(data, len(MAGIC))
    return Snapshot(offset, data, count, index_at)


def _in_memory(offset: int, entries: list[tuple[bytes, bytes]]) -> Snapshot:
    """A version-1 snapshot's entries as a ``Snapshot`` (rewritten in memory, indexed)."""
    chunks = [MAGIC, _U64.pack(offset)]
    index: list[tuple[bytes, int]] = []
    position = len(MAGIC) + _U64.size
    for key, value in dict(entries).items():
        index.append((key, position))
        chunks += [_ENTRY.pack(len(key), len(value)), key, value]
        position += _ENTRY.size + len(key) + len(value)
    index.sort()
    chunks += [_U64.pack(p) for _k, p in index]
    return Snapshot(offset, b"".join(chunks), len(index), position)


def read_snapshot(path: Path) -> tuple[int, list[tuple[bytes, bytes]]] | None:
    """(covered offset, entries) read whole, or None when there is no whole snapshot."""
    try:
        data = path.read_bytes()
    except OSError:
        return None
    if data.startswith(MAGIC):
        snapshot = open_snapshot(path)
        if snapshot is None:
            return None
        return snapshot.offset, [(bytes(k), bytes(v)) for k, v in snapshot.entries()]
    head = len(MAGIC_V1) + _U64.size
    tail = len(TRAILER) + _U64.size
    if len(data) < head + tail or not data.startswith(MAGIC_V1):
        return None
    if data[-tail : -_U64.size] != TRAILER:
        return None
    (offset,) = _U64.unpack_from(data, len(MAGIC_V1))
    (count,) = _U64.unpack_from(data, len(data) - _U64.size)
    entries = list(_entries(memoryview(data)[head : len(data) - tail]))
    if len(entries) != count:
        return None
    return offset, entries


def _entries(view: memoryview) -> Iterator[tuple[bytes, bytes]]:
    pos, end = 0, len(view)
    unpack = _ENTRY.unpack_from
    size = _ENTRY.size
    while pos + size <= end:
        klen, vlen = unpack(view, pos)
        pos += size
        if pos + klen + vlen > end:
            return
        yield bytes(view[pos : pos + klen]), bytes(view[pos + klen : pos + klen + vlen])
        pos += klen + vlen
