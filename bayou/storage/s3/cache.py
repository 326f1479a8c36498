"""Byte ranges of objects, read through a bounded cache on local disk.

Theory of operation
-------------------
Objects never change once written, so a cached byte is never stale: the only reason to
forget one is space (least recently used first) or the object's deletion.  An object is
cached in *chunks* of ``chunk_bytes`` — chunk ``k`` is bytes ``[k·C, (k+1)·C)``, one ranged
GET — each a file of tiered storage's ``ChunkCache`` (``DATA/object-cache/``, bounded,
wiped at start: the cache is never trusted across a crash).

``read(object, start, end)`` returns those bytes: the chunks it needs are fetched when
missing (several at once; a chunk being fetched is fetched once however many readers want
it), then the slices are read from the chunk files in a worker thread — never on the event
loop.  A chunk evicted between its fetch and the read is fetched again (bounded); when
concurrent readers keep evicting each other's chunks (a cache smaller than what is being
read at once), the range is read straight from the store, uncached — a small cache costs
GETs, never a failed read.  The
broker that wrote an object fills the cache with it (``add_object``), so consumers
tailing a partition through the broker its producer uses never wait for a GET.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from pathlib import Path

from bayou.errors import KafkaStorageError
from bayou.storage.objects import ObjectStore
from bayou.storage.tiered.cache import ChunkCache

ATTEMPTS = 3


def chunk_name(object_id: int, chunk: int) -> str:
    return f"{object_id:016x}.{chunk}"


class ObjectCache:
    def __init__(
        self, store: ObjectStore, directory: Path, capacity: int, chunk_bytes: int
    ) -> None:
        self.store = store
        self.chunks = ChunkCache(directory, capacity)
        self.chunk_bytes = chunk_bytes
        self._fetching: dict[str, asyncio.Future[None]] = {}
        self.gets = 0

    def reset(self) -> None:
        """Empty the cache directory (blocking: at start)."""
        self.chunks.reset()

    def add_object(self, object_id: int, data: memoryview) -> None:
        """Cache a whole object just written (blocking: a worker thread)."""
        size = self.chunk_bytes
        for chunk, pos in enumerate(range(0, len(data), size)):
            self.chunks.add(chunk_name(object_id, chunk), data[pos : pos + size])

    def discard(self, object_id: int) -> None:
        """Forget a deleted object's chunks."""
        self.chunks.discard(f"{object_id:016x}.")

    async def read(self, object_id: int, key: str, start: int, end: int) -> bytes:
        """Bytes ``[start, end)`` of the object ``key``."""
        size = self.chunk_bytes
        wanted = range(start // size, (end - 1) // size + 1)
        for _ in range(ATTEMPTS):
            missing = [k for k in wanted if chunk_name(object_id, k) not in self.chunks]
            if missing:
                await asyncio.gather(*(self._fetch(object_id, key, k) for k in missing))
            data = await asyncio.to_thread(self._assemble, object_id, start, end)
            if data is not None:
                return data
        self.gets += 1
        got = await self.store.get_range(key, start, end)
        if len(got) < end - start:
            raise KafkaStorageError(
                f"object {object_id:x} is shorter than its index says ({start + len(got)})"
            )
        return bytes(got)

    async def _fetch(self, object_id: int, key: str, chunk: int) -> None:
        name = chunk_name(object_id, chunk)
        running = self._fetching.get(name)
        if running is not None:
            await asyncio.shield(running)
            return
        future = asyncio.get_running_loop().create_future()
        self._fetching[name] = future
        try:
            start = chunk * self.chunk_bytes
            self.gets += 1
            data = await self.store.get_range(key, start, start + self.chunk_bytes)
            await asyncio.to_thread(self.chunks.add, name, data)
            future.set_result(None)
        except BaseException as exc:
            future.set_exception(exc)
            raise
        finally:
            del self._fetching[name]
            if future.done() and not future.cancelled():
                future.exception()  # retrieved: a waiter may not exist

    def _assemble(self, object_id: int, start: int, end: int) -> bytes | None:
        """The slices from the chunk files; None if one was evicted meanwhile."""
        size = self.chunk_bytes
        parts: list[bytes] = []
        position = start
        while position < end:
            chunk = position // size
            fd = self.chunks.open(chunk_name(object_id, chunk))
            if fd is None:
                return None
            try:
                want = min(end, (chunk + 1) * size) - position
                got = os.pread(fd, want, position - chunk * size)
            finally:
                with contextlib.suppress(OSError):
                    os.close(fd)
            if len(got) < want:
                raise KafkaStorageError(
                    f"object {object_id:x} is shorter than its index says ({position + len(got)})"
                )
            parts.append(got)
            position += want
        return b"".join(parts)
