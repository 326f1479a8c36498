"""The aborted-transaction index of one segment: ``<base offset>.txnindex`` (Kafka's format).

Theory of operation
-------------------
Every ABORT marker appended to a segment adds one 34-byte entry to that segment's index:
version (int16, 0), producer id, first offset of the aborted transaction, last offset (the
marker's), and the partition's last stable offset once the transaction completed — all
big-endian int64.  A READ_COMMITTED fetch from offset ``start`` up to ``end`` answers the
aborted transactions with data in ``[start, end)`` by walking the indexes from the segment
holding ``start``: an entry qualifies when its last offset ≥ ``start`` and its first offset
< ``end``, and the walk stops at the first entry whose last stable offset reaches ``end`` —
no later transaction can have started before it (Kafka's ``collectAbortedTxns``).

Entries are few (one per aborted transaction), so a segment keeps them in memory and the
file is written through: ``append`` adds to the file at once, the segment's flush fsyncs it
(``sync_fd``), and a torn or truncated log cuts the index back (``truncate_to``).
Recovery keeps the entries of trusted segments and re-adds those of replayed markers
(``append`` ignores an entry it already has).  Retention deletes the file with its segment;
the cleaner writes the entries that still matter into the cleaned segment's index.
"""

from __future__ import annotations

import contextlib
import os
import struct
from collections.abc import Iterable, Sequence
from pathlib import Path

from bayou.storage.engine import AbortedTxn

ENTRY = struct.Struct(">hqqqq")
VERSION = 0


class TxnIndex:
    def __init__(self, path: Path, *, new: bool = False) -> None:
        """``new``: a segment just created (no file to read: nothing is looked up on disk)."""
        self.path = path
        self._entries: list[AbortedTxn] | None = [] if new else None
        self._dirty = False

    def entries(self) -> list[AbortedTxn]:
        if self._entries is None:
            self._entries = self._load()
        return self._entries

    def _load(self) -> list[AbortedTxn]:
        try:
            data = self.path.read_bytes()
        except FileNotFoundError:
            return []
        out: list[AbortedTxn] = []
        for pos in range(0, len(data) - len(data) % ENTRY.size, ENTRY.size):
            version, pid, first, last, lso = ENTRY.unpack_from(data, pos)
            if version != VERSION or first > last:
                break  # not what we write: the rest is not trusted
            out.append(AbortedTxn(pid, first, last, lso))
        return out

    def append(self, txn: AbortedTxn) -> None:
        """Add ``txn`` (written to the file at once); an entry already there is skipped."""
        entries = self.entries()
        if any(
            e.last_offset == txn.last_offset and e.producer_id == txn.producer_id for e in entries
        ):
            return
        data = ENTRY.pack(
            VERSION, txn.producer_id, txn.first_offset, txn.last_offset, txn.last_stable_offset
        )
        fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        try:
            os.write(fd, data)
        finally:
            os.close(fd)
        entries.append(txn)
        self._dirty = True

    def sync_fd(self) -> int | None:
        """A descriptor to fsync when entries were written since the last one (the caller
        fsyncs and closes it), else None."""
        if not self._dirty:
            return None
        self._dirty = False
        try:
            return os.open(self.path, os.O_RDONLY)
        except FileNotFoundError:
            return None

    def truncate_to(self, next_offset: int) -> None:
        """Forget entries of markers at or past ``next_offset`` (a log cut back)."""
        entries = self.entries()
        kept = [e for e in entries if e.last_offset < next_offset]
        if len(kept) != len(entries):
            self.rewrite(kept)

    def rewrite(self, entries: list[AbortedTxn]) -> None:
        """Replace the whole index (a cleaned segment's, a truncation)."""
        self._entries = list(entries)
        if not entries:
            with contextlib.suppress(FileNotFoundError):
                self.path.unlink()
            return
        data = b"".join(
            ENTRY.pack(VERSION, e.producer_id, e.first_offset, e.last_offset, e.last_stable_offset)
            for e in entries
        )
        fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        try:
            os.write(fd, data)
        finally:
            os.close(fd)
        self._dirty = True

    def rename(self, target: Path) -> None:
        with contextlib.suppress(FileNotFoundError):
            os.replace(self.path, target)
        self.path = target

    def unlink(self) -> None:
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()


def collect_aborted(
    indexes: Iterable[Sequence[AbortedTxn]], start: int, end: int
) -> list[AbortedTxn]:
    """The aborted transactions with data in ``[start, end)``, walking ``indexes`` (the
    entries of the segments from the one holding ``start`` on, in order)."""
    out: list[AbortedTxn] = []
    for index in indexes:
        for txn in index:
            if txn.last_offset >= start and txn.first_offset < end:
                out.append(txn)
            if txn.last_stable_offset >= end:
                return out
    return out
