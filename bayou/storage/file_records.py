"""FileRecords: whole batches of one partition, left in their segment files until sent.

Theory of operation
-------------------
A Fetch may ask for up to ``fetch.max.bytes`` (55 MiB) per response, many responses may be
pipelined, and many consumers fetch at once: reading every answer into memory before
sending it lets one client take hundreds of megabytes.  So Fetch does not read record data:
``PartitionLog.read_slices`` walks batch headers only (the offset index, then a few headers
near the first batch and near the cut) and returns a ``FileRecords`` — the
``(segment, position, length)`` slices holding the whole batches to send, and their total
length, which is all the response encoder needs.  The connection then reads the slices in
chunks as its socket drains (``bayou/gateways/kafka/response_stream.py``), so a response costs about
one chunk of memory however large it is (Kafka's ``FileRecords`` and ``transferTo`` idea).

The batches must still be there when they are sent, while retention or a compaction swap
may drop their segment meanwhile.  A ``FileRecords`` holds a *lease* on each segment it
reads (a per-segment counter, ``LogSegment.leases``): a segment that leaves the log is
renamed and unlinked at once, but its descriptor is closed only when no reader is pinned and
no lease is held (``PartitionLog._retire``), exactly as for pinned readers.  ``close``
returns the leases; the owner calls it when the bytes are written or dropped.  A lease is
returned once, and ``close`` may be called from any thread.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import TYPE_CHECKING

from bayou.errors import KafkaStorageError
from bayou.storage.engine import PageCacheMiss
from bayou.storage.segment import pread

if TYPE_CHECKING:
    from bayou.storage.segment import LogSegment

Slice = tuple["LogSegment", int, int]  # segment, position, length


class FileRecords:
    """Whole batches as file slices; ``read`` returns them in order, chunk by chunk."""

    __slots__ = ("_index", "_lock", "_offset", "_release", "_size", "_slices")

    def __init__(self, slices: list[Slice], release: Callable[[list[LogSegment]], None]) -> None:
        self._slices = slices
        self._size = sum(length for _seg, _pos, length in slices)
        self._release: Callable[[list[LogSegment]], None] | None = release
        self._index = 0  # the slice being read
        self._offset = 0  # bytes of it already read
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return self._size

    def __repr__(self) -> str:
        return f"FileRecords({self._size} bytes in {len(self._slices)} slice(s))"

    @property
    def remaining(self) -> bool:
        """Whether ``read`` has bytes left to return."""
        return self._index < len(self._slices)

    def read(self, max_bytes: int, *, nowait: bool = False) -> bytes | bytearray | memoryview:
        """The next bytes, at most ``max_bytes`` and never across a slice boundary (one
        ``pread``); ``b""`` at the end.  With ``nowait`` only what the page cache holds:
        fewer bytes, or ``PageCacheMiss`` when none of them is cached."""
        while self._index < len(self._slices):
            segment, position, length = self._slices[self._index]
            left = length - self._offset
            if left <= 0:
                self._index += 1
                self._offset = 0
                continue
            data = pread(segment.fd, min(max_bytes, left), position + self._offset, nowait)
            if not data:
                raise KafkaStorageError(f"{segment!r} ended before the batches being sent")
            self._offset += len(data)
            if self._offset >= length:
                self._index += 1
                self._offset = 0
            return data
        return b""

    def read_all(self, *, nowait: bool = False) -> bytes:
        """Everything not read yet, as one buffer (small sets: a copy is cheaper than a piece
        of its own).  With ``nowait``, all of it from the page cache or ``PageCacheMiss``
        (and nothing consumed)."""
        index, offset = self._index, self._offset
        parts: list[bytes | bytearray | memoryview] = []
        try:
            while self._index < len(self._slices):
                segment, position, length = self._slices[self._index]
                want = length - self._offset
                data = pread(segment.fd, want, position + self._offset, nowait)
                if len(data) < want:
                    if nowait:
                        raise PageCacheMiss(f"{want} bytes at {position} are only partly cached")
                    raise KafkaStorageError(f"{segment!r} ended before the batches being sent")
                parts.append(data)
                self._index += 1
                self._offset = 0
        except BaseException:
            self._index, self._offset = index, offset
            raise
        return b"".join(parts)

    def close(self) -> None:
        """Return the segment leases (idempotent, any thread)."""
        with self._lock:
            release, self._release = self._release, None
        if release is not None:
            release([segment for segment, _pos, _len in self._slices])
