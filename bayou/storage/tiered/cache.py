"""The local cache of remote data: chunks of remote segments in files, bounded, LRU.

Theory of operation
-------------------
Reads of remote segments never go to the store for every fetch: a remote ``.log`` is read
in *chunks* of ``chunk_bytes`` (chunk ``k`` is bytes ``[k·C, (k+1)·C)``, one ranged GET), and
each chunk — like each index object, fetched whole — is kept as a file of its own in
``DATA/tiered-cache/`` (``<segment id>.<name>``).  The total size is bounded by
``capacity``: adding a file evicts the least recently used ones (``OrderedDict`` order,
refreshed by every ``open``/``read``).  The directory is wiped when the broker starts: the
cache is never trusted across a crash (files are not fsynced), and a cold cache costs only
GETs.

Readers never see a file disappear under them: a read *opens* the chunk files it needs
and keeps the descriptors (``CachedRecords`` holds them until its response is sent), and an
evicted file is only unlinked — an open descriptor keeps it readable.  The cache is used
from the event loop (adding what a GET returned goes through a worker thread) and from
worker threads (reads); one lock guards the bookkeeping, never any I/O but the unlinks of
evicted files.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import threading
from collections import OrderedDict
from pathlib import Path

from bayou.errors import KafkaStorageError
from bayou.storage.engine import PageCacheMiss
from bayou.storage.segment import pread

Buffer = bytes | bytearray | memoryview


class ChunkCache:
    def __init__(self, directory: Path, capacity: int) -> None:
        self.directory = directory
        self.capacity = capacity
        self._files: OrderedDict[str, int] = OrderedDict()  # name → size, LRU first
        self._bytes = 0
        self._lock = threading.Lock()
        self.hits = 0
        self.misses = 0
        self.evicted = 0

    @property
    def size_bytes(self) -> int:
        return self._bytes

    def reset(self) -> None:
        """Empty the directory (the broker starts with a cold cache; blocking)."""
        shutil.rmtree(self.directory, ignore_errors=True)
        self.directory.mkdir(parents=True, exist_ok=True)
        with self._lock:
            self._files.clear()
            self._bytes = 0

    def __contains__(self, name: str) -> bool:
        return name in self._files

    def open(self, name: str) -> int | None:
        """A descriptor of the cached file (the caller closes it), None when not cached."""
        with self._lock:
            if name not in self._files:
                self.misses += 1
                return None
            self._files.move_to_end(name)
            self.hits += 1
        try:
            return os.open(self.directory / name, os.O_RDONLY | os.O_CLOEXEC)
        except FileNotFoundError:  # evicted between the two steps
            return None

    def read(self, name: str) -> bytes | None:
        """The whole cached file (small ones: indexes), None when not cached."""
        fd = self.open(name)
        if fd is None:
            return None
        try:
            size = os.fstat(fd).st_size
            return os.pread(fd, size, 0) if size else b""
        finally:
            os.close(fd)

    def add(self, name: str, data: Buffer) -> None:
        """Store ``data`` as ``name`` (blocking: a worker thread), evicting LRU files."""
        path = self.directory / name
        tmp = path.with_name(name + ".tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o644)
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view) :]
        finally:
            os.close(fd)
        os.replace(tmp, path)
        size = len(data)
        with self._lock:
            old = self._files.pop(name, None)
            if old is not None:
                self._bytes -= old
            self._files[name] = size
            self._bytes += size
            doomed: list[str] = []
            while self._bytes > self.capacity and len(self._files) > 1:
                victim, victim_size = self._files.popitem(last=False)
                self._bytes -= victim_size
                doomed.append(victim)
            self.evicted += len(doomed)
        for victim in doomed:
            with contextlib.suppress(FileNotFoundError):
                (self.directory / victim).unlink()

    def discard(self, prefix: str) -> None:
        """Forget every file whose name starts with ``prefix`` (a deleted remote segment)."""
        with self._lock:
            names = [n for n in self._files if n.startswith(prefix)]
            for n in names:
                self._bytes -= self._files.pop(n)
        for n in names:
            with contextlib.suppress(FileNotFoundError):
                (self.directory / n).unlink()


Slice = tuple[int, int, int]  # descriptor (owned), position, length


class CachedRecords:
    """Whole batches of a remote segment, left in the cache's chunk files until sent: the
    ``RecordSet`` of a remote read, as ``FileRecords`` is of a local one.  It owns one
    descriptor per slice (closed by ``close``), so eviction cannot take the data away."""

    __slots__ = ("_index", "_lock", "_offset", "_size", "_slices")

    def __init__(self, slices: list[Slice]) -> None:
        self._slices = slices
        self._size = sum(length for _fd, _pos, length in slices)
        self._index = 0
        self._offset = 0
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return self._size

    def __repr__(self) -> str:
        return f"CachedRecords({self._size} bytes in {len(self._slices)} slice(s))"

    @property
    def remaining(self) -> bool:
        return self._index < len(self._slices)

    def read(self, max_bytes: int, *, nowait: bool = False) -> Buffer:
        while self._index < len(self._slices):
            fd, position, length = self._slices[self._index]
            left = length - self._offset
            if left <= 0:
                self._index += 1
                self._offset = 0
                continue
            data = pread(fd, min(max_bytes, left), position + self._offset, nowait)
            if not data:
                raise KafkaStorageError("a cached chunk ended before the batches being sent")
            self._offset += len(data)
            if self._offset >= length:
                self._index += 1
                self._offset = 0
            return data
        return b""

    def read_all(self, *, nowait: bool = False) -> bytes:
        index, offset = self._index, self._offset
        parts: list[Buffer] = []
        try:
            while self._index < len(self._slices):
                fd, position, length = self._slices[self._index]
                want = length - self._offset
                data = pread(fd, want, position + self._offset, nowait)
                if len(data) < want:
                    if nowait:
                        raise PageCacheMiss(f"{want} cached bytes are only partly in memory")
                    raise KafkaStorageError("a cached chunk ended before the batches being sent")
                parts.append(data)
                self._index += 1
                self._offset = 0
        except BaseException:
            self._index, self._offset = index, offset
            raise
        return b"".join(parts)

    def close(self) -> None:
        with self._lock:
            slices, self._slices = self._slices, []
            self._index = 0
        for fd, _pos, _length in slices:
            with contextlib.suppress(OSError):
                os.close(fd)
