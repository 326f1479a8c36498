"""Sparse per-segment indexes: offset → file position, timestamp → offset.

Theory of operation
-------------------
Like Kafka's ``OffsetIndex`` and ``TimeIndex``, each segment has two sparse, append-only
index files with big-endian fixed-size entries, offsets stored relative to the segment's
base offset:

* ``.index``: 8 bytes ``(relative offset: int32, position: int32)``; the offset is the base
  offset of the batch starting at ``position``.  An entry is added when at least
  ``index.interval.bytes`` of batches were appended since the previous one.
* ``.timeindex``: 12 bytes ``(timestamp: int64, relative offset: int32)``; added together
  with an offset-index entry (and when a segment is sealed) if the segment's maximum
  timestamp grew.  ``(T, o)``: the batch at ``o`` holds the largest timestamp ``T`` seen in
  the segment up to that point, so every batch before ``o`` has timestamps ``<= T``.

Entries are mirrored in memory in ``array`` columns, so a lookup is a ``bisect`` and an
append is an ``array.append`` plus bytes queued for one ``os.write`` per produce call.
Lookups never touch the files, so an index holds a descriptor only while it is written:
opened by the first write, closed when its segment is sealed, loaded, or idle (see
``_IndexFile``); a file is created with its first entry.
Files are appended to, not preallocated, so their size is always a whole number of entries
unless a crash tore the last write.  ``load`` refuses (returns None) any file that is not a
plausible index for the segment, and the caller rebuilds it from batch headers; indexes of
segments past the recovery point are always rebuilt (see ``recovery.py``).
"""

from __future__ import annotations

import contextlib
import os
import struct
from array import array
from bisect import bisect_left, bisect_right
from pathlib import Path

from bayou.storage.files import write_all

_OFFSET_ENTRY = struct.Struct(">ii")
_TIME_ENTRY = struct.Struct(">qi")


class _IndexFile:
    """The append-only file behind an index: a pending-bytes buffer and a lazily opened fd.

    The descriptor is opened by the first write and closed by ``close`` (a sealed segment
    never writes again, an idle active segment reopens on its next entry), so an index costs
    a descriptor only while it is being written — like Kafka's, whose indexes are mmapped
    and hold no descriptor.  ``_written`` is how many bytes of entries the file holds, so a
    failed write can be cut back to whole entries (``write_pending``, ``rollback``).
    """

    entry_size = 0

    def __init__(self, path: Path, base_offset: int) -> None:
        self.path = path
        self.base_offset = base_offset
        self._pending = bytearray()
        self._written = 0
        self._fd = -1

    def __len__(self) -> int:
        raise NotImplementedError

    @property
    def is_open(self) -> bool:
        return self._fd >= 0

    def _open(self) -> int:
        if self._fd < 0:
            self._fd = os.open(
                self.path, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC, 0o644
            )
        return self._fd

    def write_pending(self) -> None:
        """Write the entries added since the last call (one ``os.write``); on failure the
        file is cut back to its previous whole entries and the entries stay pending."""
        if self._pending:
            fd = self._open()
            try:
                write_all(fd, self._pending)
            except OSError:
                with contextlib.suppress(OSError):
                    os.ftruncate(fd, self._written)
                raise
            self._written += len(self._pending)
            self._pending.clear()

    def mark(self) -> int:
        """The number of entries now: what ``rollback`` returns to."""
        return len(self)

    def rollback(self, entries: int) -> None:
        """Forget every entry after the first ``entries`` — in memory, pending and on disk
        (an append that failed after adding them)."""
        self._truncate_entries(entries)
        keep = entries * self.entry_size
        # New buffers rather than resizing: the failed write's traceback may still hold a
        # memoryview of the old one.
        if keep < self._written:
            self._pending = bytearray()
            os.ftruncate(self._open(), keep)
            self._written = keep
        else:
            self._pending = self._pending[: keep - self._written]

    def _truncate_entries(self, entries: int) -> None:
        raise NotImplementedError

    def sync_fd(self) -> int | None:
        """A new descriptor to fsync the file through (the caller closes it), or None when
        there is no file (no entry was ever written, or the segment is being deleted)."""
        self.write_pending()
        if self._fd >= 0:
            return os.dup(self._fd)
        try:
            return os.open(self.path, os.O_RDONLY | os.O_CLOEXEC)
        except FileNotFoundError:
            return None

    def _rewrite(self, data: bytes) -> None:
        self._pending.clear()
        fd = self._open()
        os.ftruncate(fd, 0)
        self._written = 0
        write_all(fd, data)
        self._written = len(data)

    def _loaded(self, data: bytes) -> None:
        self._written = len(data)

    def close(self) -> None:
        """Write what is pending and close the descriptor (reopened by the next write)."""
        if self._fd >= 0:
            try:
                self.write_pending()
            finally:
                os.close(self._fd)
                self._fd = -1


class OffsetIndex(_IndexFile):
    """Relative offset → position of the batch with that base offset."""

    entry_size = _OFFSET_ENTRY.size

    def __init__(self, path: Path, base_offset: int) -> None:
        super().__init__(path, base_offset)
        self.relative = array("i")
        self.positions = array("i")

    def __len__(self) -> int:
        return len(self.relative)

    def reset(self) -> None:
        """Forget every entry (the file is rewritten by ``rebuild_file``)."""
        del self.relative[:]
        del self.positions[:]

    def append(self, offset: int, position: int) -> None:
        rel = offset - self.base_offset
        self.positions.append(position)  # first: a reader in a thread bisects ``relative``
        self.relative.append(rel)
        self._pending += _OFFSET_ENTRY.pack(rel, position)

    def _truncate_entries(self, entries: int) -> None:
        del self.relative[entries:]
        del self.positions[entries:]

    def lookup(self, offset: int) -> tuple[int, int]:
        """(base offset, position) of the last indexed batch with base offset ≤ ``offset``;
        (segment base offset, 0) when there is none."""
        i = bisect_right(self.relative, offset - self.base_offset) - 1
        if i < 0:
            return self.base_offset, 0
        return self.base_offset + self.relative[i], self.positions[i]

    def last(self) -> tuple[int, int]:
        return self.lookup(2**62)

    def rebuild_file(self) -> None:
        self._rewrite(
            b"".join(
                _OFFSET_ENTRY.pack(r, p) for r, p in zip(self.relative, self.positions, strict=True)
            )
        )

    def load(self, segment_size: int) -> bool:
        """Read the file; False (and empty) when it is not a plausible index."""
        data = _read(self.path)
        ok = len(data) % self.entry_size == 0
        if ok:
            for rel, pos in _OFFSET_ENTRY.iter_unpack(data):
                if rel < 0 or not 0 <= pos < segment_size:
                    ok = False
                    break
                if self.relative and (rel <= self.relative[-1] or pos <= self.positions[-1]):
                    ok = False
                    break
                self.relative.append(rel)
                self.positions.append(pos)
        if not ok:
            del self.relative[:]
            del self.positions[:]
        else:
            self._loaded(data)
        return ok


class TimeIndex(_IndexFile):
    """Timestamp → relative offset of the batch where that maximum timestamp appeared."""

    entry_size = _TIME_ENTRY.size

    def __init__(self, path: Path, base_offset: int) -> None:
        super().__init__(path, base_offset)
        self.timestamps = array("q")
        self.relative = array("i")

    def __len__(self) -> int:
        return len(self.timestamps)

    def reset(self) -> None:
        """Forget every entry (the file is rewritten by ``rebuild_file``)."""
        del self.timestamps[:]
        del self.relative[:]

    def maybe_append(self, timestamp: int, offset: int) -> None:
        """Add ``(timestamp, offset)`` if ``timestamp`` is larger than the last entry's."""
        if self.timestamps and timestamp <= self.timestamps[-1]:
            return
        rel = offset - self.base_offset
        self.relative.append(rel)  # first: a reader in a thread bisects ``timestamps``
        self.timestamps.append(timestamp)
        self._pending += _TIME_ENTRY.pack(timestamp, rel)

    def _truncate_entries(self, entries: int) -> None:
        del self.timestamps[entries:]
        del self.relative[entries:]

    def lookup(self, timestamp: int) -> int:
        """An offset such that every batch before it has max timestamp < ``timestamp``."""
        i = bisect_left(self.timestamps, timestamp) - 1
        if i < 0:
            return self.base_offset
        return self.base_offset + self.relative[i]

    def last(self) -> tuple[int, int] | None:
        """(timestamp, offset) of the last entry."""
        if not self.timestamps:
            return None
        return self.timestamps[-1], self.base_offset + self.relative[-1]

    def rebuild_file(self) -> None:
        self._rewrite(
            b"".join(
                _TIME_ENTRY.pack(t, r) for t, r in zip(self.timestamps, self.relative, strict=True)
            )
        )

    def load(self, next_offset: int) -> bool:
        """Read the file; False (and empty) when it is not a plausible index."""
        data = _read(self.path)
        ok = len(data) % self.entry_size == 0
        limit = next_offset - self.base_offset
        if ok:
            for ts, rel in _TIME_ENTRY.iter_unpack(data):
                if not 0 <= rel < max(limit, 1):
                    ok = False
                    break
                if self.timestamps and (ts <= self.timestamps[-1] or rel < self.relative[-1]):
                    ok = False
                    break
                self.timestamps.append(ts)
                self.relative.append(rel)
        if not ok:
            del self.timestamps[:]
            del self.relative[:]
        else:
            self._loaded(data)
        return ok


def _read(path: Path) -> bytes:
    try:
        with open(path, "rb") as f:
            return f.read()
    except FileNotFoundError:
        return b""
