"""Reading remote segments: batches at an offset, the offset for a time, through the cache.

Theory of operation
-------------------
A remote read is a local read of the cache's files, planned in a worker thread, with the
missing pieces fetched from the store in between:

1. ``to_thread(plan)``: the plan looks the offset up in the segment's offset index (a
   cached object, bisected where it lies: 8-byte big-endian entries, never parsed), walks
   batch headers through the chunk files from there, and cuts whole batches up to
   ``max_bytes`` exactly as a local Fetch does (KIP-74's first whole batch; only batches
   below ``max_offset`` for READ_COMMITTED; the offset index to jump near the cut).  The
   result is a ``CachedRecords`` holding descriptors of the chunk files, sent as the
   socket drains like a local ``FileRecords``.
2. Where the plan needs a file the cache lacks it raises ``Missing`` naming it — and the
   chunks a read of that size will need next — and the async side fetches them (ranged
   GETs, several at once, each chunk fetched once however many readers want it) and plans
   again.  Each attempt only finds more of what it needs, so a read settles in a few;
   the number of attempts is bounded all the same.
3. A read that is sequential (a consumer catching up) prefetches the chunk after the last
   one it used, so the next fetch finds it cached.

Lookups by time use the segment's time index the same way (the first entry below the
target bounds where the walk starts) and decode the first batch that reaches the target,
returning the exact record as a local lookup does.  One remote segment is read per call:
a consumer's next fetch continues into the next one (Kafka's remote fetches read one
segment too).  Nothing here runs on the event loop but the awaiting.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import struct
from bisect import bisect_left, bisect_right
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import TypeVar

from bayou.errors import BayouError, KafkaStorageError
from bayou.protocol.kafka.records import HEADER_SIZE, BatchHeader, iter_records, parse_header
from bayou.storage.objects import ObjectStore
from bayou.storage.tiered.cache import CachedRecords, ChunkCache
from bayou.storage.tiered.remote_segments import RemoteSegment

T = TypeVar("T")

_OFFSET_ENTRY = struct.Struct(">ii")
_TIME_ENTRY = struct.Struct(">qi")
_WALK = 64 * 1024
_MIN_BATCH_LENGTH = HEADER_SIZE - 12
MAX_ATTEMPTS = 16
PREFETCH_LIMIT = 2


@dataclass(frozen=True)
class Piece:
    """One cache file to fetch: the cache name, the object key, and a byte range of it
    (``end`` -1: the whole object)."""

    name: str
    key: str
    start: int
    end: int


class Missing(BayouError):
    """What a plan needs from the store before it can finish."""

    def __init__(self, pieces: list[Piece]) -> None:
        super().__init__(f"{len(pieces)} piece(s) not cached")
        self.pieces = pieces


class SegmentView:
    """A remote segment's ``.log`` and indexes as seen through the cache (one plan's use)."""

    def __init__(
        self, cache: ChunkCache, prefix: str, seg: RemoteSegment, chunk_bytes: int, hint: int
    ) -> None:
        self.cache = cache
        self.prefix = prefix
        self.seg = seg
        self.chunk_bytes = chunk_bytes
        self.hint = hint  # how far a read will likely go: chunks to fetch together
        self._fds: dict[int, int] = {}

    def close(self) -> None:
        for fd in self._fds.values():
            os.close(fd)
        self._fds.clear()

    # ------------------------------------------------------------------ pieces

    def chunk_piece(self, k: int) -> Piece:
        start = k * self.chunk_bytes
        end = min(start + self.chunk_bytes, self.seg.size)
        return Piece(f"{self.seg.id}.{k:06d}", self.prefix + self.seg.key(".log"), start, end)

    def index_piece(self, suffix: str) -> Piece:
        return Piece(f"{self.seg.id}{suffix}", self.prefix + self.seg.key(suffix), 0, -1)

    def index(self, suffix: str) -> bytes:
        """A whole index object (``.index``/``.timeindex``; empty when it has no entry)."""
        size = self.seg.index_size if suffix == ".index" else self.seg.time_index_size
        if size == 0:
            return b""
        data = self.cache.read(f"{self.seg.id}{suffix}")
        if data is None:
            raise Missing([self.index_piece(suffix)])
        return data

    def _fd(self, k: int) -> int:
        fd = self._fds.get(k)
        if fd is None:
            fd = self.cache.open(self.chunk_piece(k).name)
            if fd is None:
                last = max(k, min(self.hint, self.seg.size - 1) // self.chunk_bytes)
                wanted = [self.chunk_piece(j) for j in range(k, last + 1)]
                raise Missing([p for p in wanted if p.name not in self.cache] or wanted[:1])
            self._fds[k] = fd
        return fd

    # ------------------------------------------------------------------ bytes and batches

    def pread(self, position: int, length: int) -> bytes:
        """``length`` bytes of the ``.log`` at ``position`` (fewer at its end)."""
        end = min(position + length, self.seg.size)
        parts: list[bytes] = []
        pos = position
        while pos < end:
            k, within = divmod(pos, self.chunk_bytes)
            want = min(end - pos, self.chunk_bytes - within)
            data = os.pread(self._fd(k), want, within)
            if len(data) < want:
                raise KafkaStorageError(f"cached chunk {k} of {self.seg.key('.log')} is short")
            parts.append(data)
            pos += want
        return b"".join(parts)

    def batches(self, start: int) -> Iterator[tuple[int, BatchHeader]]:
        """(position, header) of every batch from ``start`` (a batch's position) on."""
        size = self.seg.size
        buf = b""
        buf_pos = pos = start
        while size - pos >= HEADER_SIZE:
            off = pos - buf_pos
            if off + HEADER_SIZE > len(buf):
                buf = self.pread(pos, min(_WALK, size - pos))
                buf_pos, off = pos, 0
            header = parse_header(buf, off)
            if header.batch_length < _MIN_BATCH_LENGTH or pos + header.size > size:
                raise KafkaStorageError(
                    f"remote segment {self.seg.key('.log')} has no whole batch at {pos}"
                )
            yield pos, header
            pos += header.size

    def records(self, start: int, end: int) -> CachedRecords:
        """``[start, end)`` as slices of chunk files, each with its own descriptor."""
        slices: list[tuple[int, int, int]] = []
        try:
            pos = start
            while pos < end:
                k, within = divmod(pos, self.chunk_bytes)
                length = min(end - pos, self.chunk_bytes - within)
                slices.append((os.dup(self._fd(k)), within, length))
                pos += length
        except BaseException:
            for fd, _p, _l in slices:
                os.close(fd)
            raise
        return CachedRecords(slices)


def _offset_lookup(index: bytes, base: int, offset: int) -> tuple[int, int]:
    """(entry number + 1, position) of the last offset-index entry with offset ≤ ``offset``
    — (0, 0) when there is none (the segment's first batch is at position 0)."""
    n = len(index) // _OFFSET_ENTRY.size
    i = bisect_right(
        range(n), offset - base, key=lambda j: _OFFSET_ENTRY.unpack_from(index, 8 * j)[0]
    )
    return (i, _OFFSET_ENTRY.unpack_from(index, 8 * (i - 1))[1]) if i else (0, 0)


def _time_lookup(index: bytes, base: int, timestamp: int) -> int:
    """An offset before which every batch has max timestamp < ``timestamp``."""
    n = len(index) // _TIME_ENTRY.size
    i = bisect_left(range(n), timestamp, key=lambda j: _TIME_ENTRY.unpack_from(index, 12 * j)[0])
    return base + _TIME_ENTRY.unpack_from(index, 12 * (i - 1))[1] if i else base


def plan_read(
    view: SegmentView, offset: int, max_bytes: int, max_offset: int | None, min_one: bool
) -> CachedRecords:
    """The whole batches to send from the one holding ``offset`` (see the module docstring)."""
    index = view.index(".index")
    base = view.seg.base_offset
    _, pos = _offset_lookup(index, base, offset)
    found: tuple[int, BatchHeader] | None = None
    for p, header in view.batches(pos):
        if header.last_offset >= offset:
            found = p, header
            break
    if found is None:
        return CachedRecords([])
    start, first = found
    if max_offset is not None and first.base_offset >= max_offset:
        return CachedRecords([])
    limit = min(start + max_bytes, view.seg.size)
    if min_one:
        limit = max(limit, start + first.size)
    if start + first.size > limit:
        return CachedRecords([])
    cut = start + first.size
    n = len(index) // _OFFSET_ENTRY.size
    i = bisect_right(range(n), limit, key=lambda j: _OFFSET_ENTRY.unpack_from(index, 8 * j)[1])
    while i > 0:  # jump to the last indexed batch that fits and is below max_offset
        rel, position = _OFFSET_ENTRY.unpack_from(index, 8 * (i - 1))
        if position <= cut:
            break
        if max_offset is None or base + rel < max_offset:
            cut = position
            break
        i -= 1
    for p, header in view.batches(cut):
        if p + header.size > limit or (max_offset is not None and header.base_offset >= max_offset):
            break
        cut = p + header.size
    return view.records(start, cut)


def plan_offset_for_timestamp(
    view: SegmentView, timestamp: int, log_start: int
) -> tuple[int, int] | None:
    """(offset, timestamp) of the first record of the segment with timestamp ≥ the target
    and offset ≥ the log start; None when it has none."""
    base = view.seg.base_offset
    start_offset = _time_lookup(view.index(".timeindex"), base, timestamp)
    _, pos = _offset_lookup(view.index(".index"), base, start_offset)
    for p, header in view.batches(pos):
        if (
            header.max_timestamp < timestamp
            or header.records_count == 0
            or header.last_offset < log_start
        ):
            continue
        try:
            for rec in iter_records(view.pread(p, header.size)):
                if rec.timestamp >= timestamp and rec.offset >= log_start:
                    return rec.offset, rec.timestamp
        except BayouError:
            return max(header.base_offset, log_start), header.max_timestamp
    return None


def plan_max_timestamp(view: SegmentView) -> tuple[int, int] | None:
    """(offset, timestamp) of the first record holding the segment's max timestamp."""
    seg = view.seg
    _, pos = _offset_lookup(view.index(".index"), seg.base_offset, seg.offset_of_max_timestamp)
    for p, header in view.batches(pos):
        if header.last_offset < seg.offset_of_max_timestamp:
            continue
        with contextlib.suppress(BayouError):
            for rec in iter_records(view.pread(p, header.size)):
                if rec.timestamp == seg.max_timestamp:
                    return rec.offset, rec.timestamp
        return header.base_offset, header.max_timestamp
    return None


class RemoteReader:
    """Plans in worker threads, fetches what the plans miss (see the module docstring)."""

    def __init__(self, store: ObjectStore, cache: ChunkCache, chunk_bytes: int) -> None:
        self.store = store
        self.cache = cache
        self.chunk_bytes = chunk_bytes
        self._fetching: dict[str, asyncio.Task[None]] = {}
        self._prefetches: set[asyncio.Task[None]] = set()
        self.fetched_bytes = 0

    async def read(
        self,
        prefix: str,
        seg: RemoteSegment,
        offset: int,
        max_bytes: int,
        max_offset: int | None,
        min_one: bool,
    ) -> CachedRecords:
        views: list[SegmentView] = []

        def plan() -> CachedRecords:
            view = SegmentView(self.cache, prefix, seg, self.chunk_bytes, 0)
            views.append(view)
            try:
                index = view.index(".index")
                _, pos = _offset_lookup(index, seg.base_offset, offset)
                view.hint = pos + max_bytes
                return plan_read(view, offset, max_bytes, max_offset, min_one)
            finally:
                view.close()

        records = await self._settle(plan)
        if views:
            self._prefetch_after(prefix, seg, views[-1].hint)
        return records

    async def offset_for_timestamp(
        self, prefix: str, seg: RemoteSegment, timestamp: int, log_start: int
    ) -> tuple[int, int] | None:
        def plan() -> tuple[int, int] | None:
            view = SegmentView(self.cache, prefix, seg, self.chunk_bytes, 0)
            try:
                return plan_offset_for_timestamp(view, timestamp, log_start)
            finally:
                view.close()

        return await self._settle(plan, attempts=MAX_ATTEMPTS + seg.size // self.chunk_bytes)

    async def max_timestamp(self, prefix: str, seg: RemoteSegment) -> tuple[int, int] | None:
        def plan() -> tuple[int, int] | None:
            view = SegmentView(self.cache, prefix, seg, self.chunk_bytes, 0)
            try:
                return plan_max_timestamp(view)
            finally:
                view.close()

        return await self._settle(plan)

    async def _settle(self, plan: Callable[[], T], attempts: int = MAX_ATTEMPTS) -> T:
        for _ in range(attempts):
            try:
                return await asyncio.to_thread(plan)
            except Missing as missing:
                await asyncio.gather(*(self._fetch(p) for p in missing.pieces))
        raise KafkaStorageError(f"a remote read did not settle after {attempts} attempts")

    def _fetch(self, piece: Piece) -> asyncio.Task[None]:
        """One fetch per piece however many readers want it."""
        task = self._fetching.get(piece.name)
        if task is None:
            task = asyncio.ensure_future(self._download(piece))
            self._fetching[piece.name] = task
            task.add_done_callback(lambda _t: self._fetching.pop(piece.name, None))
        return task

    async def _download(self, piece: Piece) -> None:
        if piece.end < 0:
            data = await self.store.get(piece.key)
        else:
            data = await self.store.get_range(piece.key, piece.start, piece.end)
            if len(data) != piece.end - piece.start:
                raise KafkaStorageError(
                    f"{piece.key}: {len(data)} bytes at {piece.start}, "
                    f"expected {piece.end - piece.start}"
                )
        self.fetched_bytes += len(data)
        await asyncio.to_thread(self.cache.add, piece.name, data)

    def _prefetch_after(self, prefix: str, seg: RemoteSegment, position: int) -> None:
        """Fetch the chunk after ``position`` in the background (a sequential reader's
        next fetch finds it cached); at most ``PREFETCH_LIMIT`` at once."""
        k = position // self.chunk_bytes + 1
        if k * self.chunk_bytes >= seg.size or len(self._prefetches) >= PREFETCH_LIMIT:
            return
        view = SegmentView(self.cache, prefix, seg, self.chunk_bytes, 0)
        piece = view.chunk_piece(k)
        if piece.name in self.cache or piece.name in self._fetching:
            return
        task = asyncio.ensure_future(self._quiet(self._fetch(piece)))
        self._prefetches.add(task)
        task.add_done_callback(self._prefetches.discard)

    @staticmethod
    async def _quiet(fetch: asyncio.Task[None]) -> None:
        with contextlib.suppress(Exception):
            await fetch

    async def close(self) -> None:
        tasks = [*self._fetching.values(), *self._prefetches]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
