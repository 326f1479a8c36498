"""Checkpointed state snapshots: one file per task, so recovery reads one sequential file and
then only the changelog's tail.

Theory of operation
-------------------
A task's state lives in memory (its operators' dicts) and, durably, in its changelog
partition.  Replaying a whole changelog is what makes recovery slow in Kafka Streams, Faust
and Quix Streams once state is large.  Here, after a commit, a task may write a *snapshot*:
every entry of its state and the changelog offset the snapshot covers (the changelog's end
after that commit).  Recovery loads the snapshot, then reads the changelog from that offset
to its end — the records committed since — and applies them.  A snapshot is only a shortcut:
a missing, torn or foreign one (its offset beyond the changelog's end: the topic was
recreated) is ignored and the whole changelog is replayed.

File format (little-endian): ``BAYOUSNAP1``, the covered offset (u64), then entries of
(key length u32, value length u32, key, value), then ``END`` and the entry count (u64).
Written to ``<name>.tmp``, fsynced and renamed over ``<name>``: a crash leaves the old
snapshot or the new one, never a mix.
"""

from __future__ import annotations

import os
import struct
from collections.abc import Iterable, Iterator
from pathlib import Path

MAGIC = b"BAYOUSNAP1"
TRAILER = b"END"
_ENTRY = struct.Struct("<II")
_U64 = struct.Struct("<Q")
BUFFER = 1 << 20


def snapshot_path(state_dir: Path, store: str, partition: int) -> Path:
    safe = "".join(c if c.isalnum() or c in "._-" else "_" for c in store)
    return state_dir / safe / f"{partition}.snapshot"


def write_snapshot(path: Path, offset: int, entries: Iterable[tuple[bytes, bytes]]) -> int:
    """Write atomically; returns the number of entries."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    count = 0
    with open(tmp, "wb", buffering=BUFFER) as f:
        f.write(MAGIC)
        f.write(_U64.pack(offset))
        for key, value in entries:
            f.write(_ENTRY.pack(len(key), len(value)))
            f.write(key)
            f.write(value)
            count += 1
        f.write(TRAILER)
        f.write(_U64.pack(count))
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    return count


def read_snapshot(path: Path) -> tuple[int, list[tuple[bytes, bytes]]] | None:
    """(covered offset, entries), or None when there is no whole snapshot."""
    try:
        data = path.read_bytes()
    except OSError:
        return None
    head = len(MAGIC) + _U64.size
    tail = len(TRAILER) + _U64.size
    if len(data) < head + tail or not data.startswith(MAGIC):
        return None
    if data[-tail : -_U64.size] != TRAILER:
        return None
    (offset,) = _U64.unpack_from(data, len(MAGIC))
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
