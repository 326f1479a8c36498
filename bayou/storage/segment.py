"""One log segment: a ``.log`` file of record batches plus its two sparse indexes.

Theory of operation
-------------------
A segment holds the batches with offsets from its ``base_offset`` (in its file name) up to
``next_offset - 1``.  Batches are appended exactly as produced (offsets already patched)
with one ``os.write`` per produce call to an ``O_APPEND`` descriptor; reads use
``os.pread`` on the same descriptor, so nothing is ever seeked and readers never disturb
the writer.  ``size`` counts only bytes of whole batches that were written successfully,
together with their index entries; readers never look past it.  An append is all or
nothing: when the log write or an index write fails (a full disk), the files are cut back
and every field restored (``append``), so the next append goes exactly where this one would
have, and a restart finds only acknowledged batches.

Descriptors: the ``.log`` descriptor stays open for the segment's life (readers pin the
segment list, never reopen — see ``log.py``); the index files are written through
descriptors opened on demand and closed when the segment is sealed, loaded or idle, so a
segment at rest costs one descriptor.

Locating an offset: the offset index gives the position of an indexed batch at or before
the target, then ``iter_batches`` walks batch headers forward (reading the file in chunks,
parsing only the 61-byte headers) to the first batch whose last offset reaches the target.

Recovery (``rebuild``) walks the whole file from position 0, optionally checking every
batch's framing, magic and CRC, rebuilds both indexes from what it saw, and truncates the
file after the last good batch.  ``load_trusted`` is the fast path for segments below the
recovery point: it loads the index files, checks them for plausibility, and scans only the
tail after the last offset-index entry; anything implausible falls back to ``rebuild``.
"""

from __future__ import annotations

import contextlib
import os
from bisect import bisect_right
from collections.abc import Iterator, Sequence
from pathlib import Path

from bayou.buffer_pool import BufferPool
from bayou.errors import BayouError
from bayou.protocol.kafka.records import HEADER_SIZE, BatchHeader, check_batch, parse_header
from bayou.storage.engine import PageCacheMiss
from bayou.storage.files import (
    INDEX_SUFFIX,
    LOG_SUFFIX,
    TIME_INDEX_SUFFIX,
    TXN_INDEX_SUFFIX,
    segment_path,
    write_all,
)
from bayou.storage.index import OffsetIndex, TimeIndex
from bayou.storage.txn_index import TxnIndex

_RWF_NOWAIT: int | None = getattr(os, "RWF_NOWAIT", None)

# Buffers for reads from the page cache (``pread`` with ``nowait``: the loop's reads for
# Fetch responses, a megabyte at a time): reused once the transport has sent them.
READ_BUFFERS = BufferPool(32 * 1024 * 1024)
_POOLED_READ = 64 * 1024  # smaller reads get a buffer of their own


def pread(fd: int, length: int, position: int, nowait: bool) -> bytes | bytearray | memoryview:
    """``os.pread``; with ``nowait``, only what the page cache holds (``RWF_NOWAIT``): a short
    result when the rest is not cached, ``PageCacheMiss`` when the first page is not.  A
    large ``nowait`` read lands in a ``READ_BUFFERS`` buffer, lent for as long as the result
    (or any view of it) lives."""
    if not nowait or _RWF_NOWAIT is None:
        return os.pread(fd, length, position)
    buf = READ_BUFFERS.lend(length) if length >= _POOLED_READ else bytearray(length)
    try:
        n = os.preadv(fd, [buf], position, _RWF_NOWAIT)
    except BlockingIOError:
        raise PageCacheMiss(f"{length} bytes at {position} are not cached") from None
    except OSError:  # a file system without RWF_NOWAIT: read as before
        return os.pread(fd, length, position)
    if n == 0 and length > 0:
        raise PageCacheMiss(f"{length} bytes at {position} are not cached")
    return buf if n == length else memoryview(buf)[:n]


# A walk reads headers a chunk at a time: the first chunk small (a fetch's walk starts at an
# offset-index entry, within index.interval.bytes of the batch it wants, and a Fetch walks
# twice per partition), then doubling up to _CHUNK for long walks (recovery, the cleaner).
_FIRST_CHUNK = 4 * 1024
RECENT_STARTS = 1024  # appends whose start position a segment remembers (find_batch)
_CHUNK = 64 * 1024
_MIN_BATCH_LENGTH = HEADER_SIZE - 12


class LogSegment:
    """A ``.log`` file with its offset and time indexes."""

    def __init__(
        self,
        directory: Path,
        base_offset: int,
        created_ms: int,
        suffix: str = "",
        *,
        new: bool = False,
    ) -> None:
        """``new``: a segment being created now (a roll, a cleaned copy), not one loaded."""
        self.base_offset = base_offset
        self.created_ms = created_ms
        self.log_path = segment_path(directory, base_offset, LOG_SUFFIX + suffix)
        self.fd = os.open(self.log_path, os.O_RDWR | os.O_CREAT | os.O_APPEND, 0o644)
        self.offset_index = OffsetIndex(
            segment_path(directory, base_offset, INDEX_SUFFIX + suffix), base_offset
        )
        self.time_index = TimeIndex(
            segment_path(directory, base_offset, TIME_INDEX_SUFFIX + suffix), base_offset
        )
        self.txn_index = TxnIndex(
            segment_path(directory, base_offset, TXN_INDEX_SUFFIX + suffix), new=new
        )
        self.size = 0
        self.next_offset = base_offset
        self.max_timestamp = -1
        self.offset_of_max_timestamp = -1  # base offset of the batch holding max_timestamp
        self._bytes_since_index = 0
        self.failed = False  # an append failed and could not be rolled back
        self.leases = 0  # FileRecords still to send from this file (under the log's lock)
        # where the latest appends start (base offset → position): the very offsets a
        # reader at the log end asks for next, found without walking batch headers from
        # the last index entry; at most RECENT_STARTS, forgotten all at once past that
        self._starts: dict[int, int] = {}

    def __repr__(self) -> str:
        return f"LogSegment({self.base_offset}..{self.next_offset}, {self.size} bytes)"

    @property
    def empty(self) -> bool:
        return self.size == 0

    def largest_timestamp(self) -> int:
        """What time retention judges the segment by (Kafka's ``LogSegment.largestTimestamp``):
        its max timestamp when it holds a valid one, else the log file's last-modified time."""
        if self.max_timestamp >= 0:
            return self.max_timestamp
        return os.fstat(self.fd).st_mtime_ns // 1_000_000

    # ------------------------------------------------------------------ appending

    def append(
        self,
        buf: bytes | bytearray | memoryview,
        batches: Sequence[tuple[int, int, int, int]],
        index_interval: int,
    ) -> None:
        """Write ``buf`` (whole batches) and index them — all or nothing.

        ``batches`` describes each batch in ``buf``: (base offset, last offset, max
        timestamp, size).  If anything fails — the log write, or an index write after it
        (a full disk) — the log file and both indexes are cut back and every field restored,
        so the segment is exactly what it was; then the error is raised.  Should even the
        cut-back fail, ``failed`` is set and the segment must not be appended to again.
        """
        start = self.size
        saved = (
            self.next_offset,
            self.max_timestamp,
            self.offset_of_max_timestamp,
            self._bytes_since_index,
        )
        marks = (self.offset_index.mark(), self.time_index.mark())
        pos = start
        try:
            write_all(self.fd, buf)
            for base, last, max_ts, size in batches:
                self._index_batch(base, max_ts, pos, size, index_interval)
                pos += size
                self.next_offset = last + 1
            self.offset_index.write_pending()
            self.time_index.write_pending()
        except BaseException:
            self._roll_back(start, saved, marks)
            raise
        self.size = pos  # only now may readers see the new batches
        starts = self._starts
        if len(starts) >= RECENT_STARTS:
            starts.clear()
        starts[batches[0][0]] = start

    def _roll_back(
        self, size: int, saved: tuple[int, int, int, int], marks: tuple[int, int]
    ) -> None:
        (
            self.next_offset,
            self.max_timestamp,
            self.offset_of_max_timestamp,
            self._bytes_since_index,
        ) = saved
        try:
            os.ftruncate(self.fd, size)
            self.offset_index.rollback(marks[0])
            self.time_index.rollback(marks[1])
        except OSError:
            self.failed = True  # the files may hold bytes past ``size``: stop appending

    def _index_batch(self, base: int, max_ts: int, pos: int, size: int, interval: int) -> None:
        if max_ts > self.max_timestamp:
            self.max_timestamp = max_ts
            self.offset_of_max_timestamp = base
        if self._bytes_since_index >= interval and pos > 0:
            self.offset_index.append(base, pos)
            self.time_index.maybe_append(self.max_timestamp, self.offset_of_max_timestamp)
            self._bytes_since_index = 0
        self._bytes_since_index += size

    def seal(self) -> None:
        """The segment stops being active: record its max timestamp in the time index, and
        close the index files (a sealed segment never writes them again)."""
        if self.max_timestamp >= 0:
            self.time_index.maybe_append(self.max_timestamp, self.offset_of_max_timestamp)
        self.release_index_files()

    def release_index_files(self) -> None:
        """Write pending index entries and close the index descriptors; lookups use the
        in-memory entries, and the next entry written reopens its file."""
        self.time_index.close()
        self.offset_index.close()

    # ------------------------------------------------------------------ reading

    def read(
        self, position: int, length: int, *, nowait: bool = False
    ) -> bytes | bytearray | memoryview:
        """Up to ``length`` bytes at ``position`` (never past ``size``); ``nowait``: see
        ``pread`` (fewer bytes when only part is cached, ``PageCacheMiss`` when none is)."""
        length = min(length, self.size - position)
        if length <= 0:
            return b""
        return pread(self.fd, length, position, nowait)

    def iter_batches(
        self,
        start: int,
        end: int | None = None,
        *,
        with_body: bool = False,
        nowait: bool = False,
    ) -> Iterator[tuple[int, BatchHeader, memoryview | None]]:
        """Walk the batches in ``[start, end)``: (position, header, whole batch if asked).

        Stops silently at a torn or insane batch (the caller sees where the walk ended).
        With ``nowait`` it reads only from the page cache and raises ``PageCacheMiss`` where
        the headers it needs are not cached.
        """
        end = self.size if end is None else end
        buf = memoryview(b"")
        buf_pos = pos = start
        chunk = _FIRST_CHUNK
        while end - pos >= HEADER_SIZE:
            off = pos - buf_pos
            if off + HEADER_SIZE > len(buf):
                buf = memoryview(pread(self.fd, min(chunk, end - pos), pos, nowait))
                chunk = min(2 * chunk, _CHUNK)
                buf_pos, off = pos, 0
                if len(buf) < HEADER_SIZE:
                    if nowait:
                        raise PageCacheMiss(f"batch header at {pos} is not cached")
                    return
            header = parse_header(buf, off)
            size = header.size
            if header.batch_length < _MIN_BATCH_LENGTH or pos + size > end:
                return
            body: memoryview | None = None
            if with_body:
                if off + size > len(buf):
                    buf = memoryview(os.pread(self.fd, min(max(chunk, size), end - pos), pos))
                    chunk = min(2 * chunk, _CHUNK)
                    buf_pos, off = pos, 0
                    if len(buf) < size:
                        return
                body = buf[off : off + size]
            yield pos, header, body
            pos += size

    def find_batch(self, offset: int, *, nowait: bool = False) -> tuple[int, BatchHeader] | None:
        """Position and header of the first batch whose last offset is ≥ ``offset``."""
        start = self._starts.get(offset)
        if start is not None:
            for found in self.iter_batches(start, nowait=nowait):
                return found[0], found[1]  # the batch an append of ``offset`` began with
        _, start = self.offset_index.lookup(offset)
        for pos, header, _ in self.iter_batches(start, nowait=nowait):
            if header.last_offset >= offset:
                return pos, header
        return None

    def batches_end(self, start: int, limit: int, *, nowait: bool = False) -> int:
        """The end of the last whole batch in ``[start, limit]``, ``start`` being a batch's
        position; ``start`` itself when not even that batch fits.

        Reads only batch headers: the offset index gives the last indexed batch at or before
        ``limit`` (every entry is a batch's position), and headers are walked from there.
        """
        size = self.size
        if limit >= size:
            return size
        positions = self.offset_index.positions
        i = bisect_right(positions, limit) - 1
        end = start
        if i >= 0 and positions[i] > start:
            end = positions[i]
        for pos, header, _ in self.iter_batches(end, size, nowait=nowait):
            if pos + header.size > limit:
                break
            end = pos + header.size
        return end

    def holds_records(
        self, start: int, end: int, first: BatchHeader, *, nowait: bool = False
    ) -> bool:
        """Whether the batches in ``[start, end)`` (``first`` being the one at ``start``)
        hold a record or a transaction marker, not only empty batches."""
        if first.records_count > 0 or first.is_control:
            return True
        for _pos, header, _ in self.iter_batches(start + first.size, end, nowait=nowait):
            if header.records_count > 0 or header.is_control:
                return True
        return False

    def find_timestamp(self, timestamp: int) -> tuple[int, BatchHeader] | None:
        """Position and header of the first batch whose max timestamp is ≥ ``timestamp``."""
        if self.max_timestamp < timestamp:
            return None
        _, start = self.offset_index.lookup(self.time_index.lookup(timestamp))
        for pos, header, _ in self.iter_batches(start):
            if header.max_timestamp >= timestamp:
                return pos, header
        return None

    # ------------------------------------------------------------------ loading

    def rebuild(self, index_interval: int, *, verify: bool, allow_gaps: bool = False) -> bool:
        """Re-read the whole file, rebuild the indexes, cut off a bad tail.

        With ``verify`` every batch's framing, magic and CRC is checked, and offsets must be
        contiguous from the segment's base offset (appends never leave gaps) — or, with
        ``allow_gaps`` (a segment the cleaner rewrote), strictly increasing.  Returns True if
        the file was truncated.
        """
        file_size = os.fstat(self.fd).st_size
        self.size = 0
        self.next_offset = self.base_offset
        self.max_timestamp = self.offset_of_max_timestamp = -1
        self._bytes_since_index = 0
        self.offset_index.reset()
        self.time_index.reset()
        good_end = 0
        for pos, header, body in self.iter_batches(0, file_size, with_body=verify):
            if header.last_offset < header.base_offset or (
                header.base_offset != self.next_offset
                if verify and not allow_gaps
                else header.base_offset < self.next_offset
            ):
                break  # offsets are contiguous as appended (the base offset has no CRC)
            if body is not None:
                try:
                    check_batch(body, 0, len(body))
                except BayouError:
                    break
            self._index_batch(
                header.base_offset, header.max_timestamp, pos, header.size, index_interval
            )
            self.next_offset = header.last_offset + 1
            good_end = pos + header.size
        self.size = good_end
        truncated = good_end < file_size
        if truncated:
            os.ftruncate(self.fd, good_end)
        self.offset_index.rebuild_file()
        self.time_index.rebuild_file()
        self.txn_index.truncate_to(self.next_offset)  # replayed markers are added back
        return truncated

    def load_trusted(self, index_interval: int, *, allow_gaps: bool = False) -> bool:
        """Load a segment below the recovery point, trusting plausible indexes.

        Returns True if the log file had to be truncated (it was not what the indexes and
        the recovery point promised).
        """
        file_size = os.fstat(self.fd).st_size
        if not self.offset_index.load(file_size):
            return self.rebuild(index_interval, verify=True, allow_gaps=allow_gaps)
        base, start = self.offset_index.last()
        self.size = file_size
        self.next_offset = base
        last_pos = start
        for pos, header, _ in self.iter_batches(start, file_size):
            if header.base_offset < self.next_offset:
                return self.rebuild(index_interval, verify=True, allow_gaps=allow_gaps)
            self.next_offset = header.last_offset + 1
            if header.max_timestamp > self.max_timestamp:
                self.max_timestamp = header.max_timestamp
                self.offset_of_max_timestamp = header.base_offset
            last_pos = pos + header.size
        if last_pos != file_size or not self.time_index.load(self.next_offset):
            return self.rebuild(index_interval, verify=True, allow_gaps=allow_gaps)
        last = self.time_index.last()
        if last is not None and last[0] >= self.max_timestamp:
            self.max_timestamp, self.offset_of_max_timestamp = last
        self._bytes_since_index = file_size - start
        return False

    # ------------------------------------------------------------------ lifecycle

    def dup_fds(self) -> list[int]:
        """Descriptors of the log and index files for fsync from another thread (the caller
        closes them): a duplicate of the log's, the index files' own or freshly opened."""
        fds = [os.dup(self.fd)]
        try:
            for index in (self.offset_index, self.time_index, self.txn_index):
                fd = index.sync_fd()
                if fd is not None:
                    fds.append(fd)
        except BaseException:
            for fd in fds:
                os.close(fd)
            raise
        return fds

    def rename_suffix(self, suffix: str) -> None:
        """Rename the segment's files to ``<base>.log<suffix>`` etc. (open fds stay valid).

        The index files go first and the log last: the log file's name is what recovery
        acts on (``.cleaned`` → discarded, ``.swap`` → swapped in, ``.deleted`` → removed).
        """
        directory = self.log_path.parent
        for index in (self.offset_index, self.time_index):
            plain = index.path.name.split(".")[1]
            target = segment_path(directory, self.base_offset, f".{plain}{suffix}")
            with contextlib.suppress(FileNotFoundError):
                os.replace(index.path, target)
            index.path = target
        self.txn_index.rename(segment_path(directory, self.base_offset, TXN_INDEX_SUFFIX + suffix))
        target = segment_path(directory, self.base_offset, LOG_SUFFIX + suffix)
        os.replace(self.log_path, target)
        self.log_path = target

    def fsync(self) -> None:
        """fsync the log and both index files (a cleaned segment before its swap, a
        recovered one)."""
        for fd in self.dup_fds():
            try:
                os.fsync(fd)
            finally:
                os.close(fd)

    def close(self) -> None:
        self.offset_index.close()
        self.time_index.close()
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1

    def unlink_files(self) -> None:
        """Remove the segment's files; open descriptors keep the data readable until closed."""
        for path in (
            self.log_path,
            self.offset_index.path,
            self.time_index.path,
            self.txn_index.path,
        ):
            with contextlib.suppress(FileNotFoundError):
                path.unlink()

    def delete(self) -> None:
        self.close()
        self.unlink_files()
