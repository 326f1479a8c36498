"""Large buffers lent out and reused once nothing refers to them any more.

Theory of operation
-------------------
A fresh megabyte for every large request frame or file read costs more than the copy that
fills it: the allocator maps new memory, the kernel faults it in and zeroes it page by page
(``bytearray(n)`` zeroes it once more), and it is unmapped again when freed — a profile of
the produce path showed a third of the broker's CPU there.  A ``BufferPool`` keeps buffers
(their sizes rounded up to a power of two, at most ``limit`` bytes in all) and lends a
``memoryview`` of the size asked for.

The pool is never told when a buffer is done with.  A buffer is lent again only when the
pool's own references are the only ones left: every ``memoryview`` of it, and every slice
of those, holds a reference to it for as long as it lives, so a request still holding its
frame, an engine still holding a view of its records or a transport still holding an unsent
chunk keeps the buffer out of reuse, whatever it does with it.  When every buffer of a size
is busy and the pool is full, idle buffers of other sizes are dropped to make room, else the
caller gets a buffer of its own that is simply freed after use.

Lending is under a lock: readers in worker threads may lend from the same pool as the event
loop.  A lend scans the buffers of one size only.
"""

from __future__ import annotations

import sys
import threading

POOLED_MAX = 16 * 1024 * 1024  # a larger buffer is never pooled


def _references(buf: bytearray) -> int:
    return sys.getrefcount(buf)


def _idle_references() -> int:
    """What ``_references`` says of a pooled buffer nobody else holds (held by a list, a
    loop variable and the call's argument, exactly as ``lend`` looks at one)."""
    held = [bytearray(1)]
    for buf in held:
        return _references(buf)
    raise AssertionError


IDLE_REFERENCES = _idle_references()


class BufferPool:
    """Buffers of power-of-two sizes lent as views, reused when idle (module docstring)."""

    __slots__ = ("_bytes", "_limit", "_lock", "_sizes")

    def __init__(self, limit: int) -> None:
        self._sizes: dict[int, list[bytearray]] = {}
        self._bytes = 0
        self._limit = limit
        self._lock = threading.Lock()

    def lend(self, size: int) -> memoryview:
        """A writable buffer of ``size`` bytes (its contents undefined)."""
        if size > POOLED_MAX or size > self._limit:
            return memoryview(bytearray(size))
        capacity = 1 << max(size - 1, 1).bit_length()
        with self._lock:
            same = self._sizes.setdefault(capacity, [])
            for buf in same:
                if _references(buf) == IDLE_REFERENCES:
                    return memoryview(buf)[:size]
            if self._bytes + capacity > self._limit:
                self._evict(capacity)
                if self._bytes + capacity > self._limit:
                    return memoryview(bytearray(size))
            buf = bytearray(capacity)
            same.append(buf)
            self._bytes += capacity
            return memoryview(buf)[:size]

    def _evict(self, wanted: int) -> None:
        """Drop idle buffers until ``wanted`` more bytes fit; under the lock."""
        for capacity, buffers in self._sizes.items():
            keep: list[bytearray] = []
            for buf in buffers:
                if self._bytes + wanted > self._limit and _references(buf) == IDLE_REFERENCES:
                    self._bytes -= capacity
                else:
                    keep.append(buf)
            buffers[:] = keep

    @property
    def pooled_bytes(self) -> int:
        """The bytes of every buffer the pool keeps, lent or idle."""
        return self._bytes
