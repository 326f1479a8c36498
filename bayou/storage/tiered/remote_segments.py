"""A partition's remote segments and their durable record, ``remote.json`` in its directory.

Theory of operation
-------------------
Kafka's tiered storage (KIP-405) keeps, per partition, which segments are in remote storage
and in which state of their life: copy started, copy finished, delete started.  Bayou keeps
the same three states in the partition's own directory — the one place that is always
consistent with the local log — in ``remote.json``, replaced atomically (``write_json``:
written, fsynced, renamed, directory fsynced) on every change:

- ``copying``: an upload of a closed segment began; its objects may be partly written.  A
  ``copying`` entry found when the partition is loaded is an *orphan* (the broker died
  mid-upload): it is turned into ``deleting`` at once, never read;
- ``copied``: every object of the segment is in the store (the manifest last) — only now
  may a reader use it, and only now may ``local.retention.*`` delete the local copy;
- ``deleting``: retention (or an abandoned upload) decided the objects go; they are
  deleted in the background and the entry forgotten afterwards.

So an upload is recorded as complete only once complete, a local copy is deleted only
after the record that its remote copy is complete, and a crash at any step leaves either a
``copying`` entry (whose objects are removed) or a ``deleting`` one (whose removal is
finished) — never a reader pointed at a missing object.

Each upload gets a fresh random id, part of its object keys (KIP-405's
``RemoteLogSegmentId``): a segment copied again after a crash never meets the partial
objects of the first try.  Entries also carry what reads and retention need without
touching the store: offsets, size, max timestamp, the sizes of its index objects and its
aborted transactions (few, and READ_COMMITTED fetches need them at once).

The list is replaced, never modified in place (copy-on-write under ``_lock``), so the event
loop reads ``entries`` without locking while a worker thread records a change.
"""

from __future__ import annotations

import threading
from bisect import bisect_right
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

from bayou.errors import BayouError
from bayou.storage.engine import AbortedTxn
from bayou.storage.files import read_json, write_json

REMOTE_FILE = "remote.json"
COPYING = "copying"
COPIED = "copied"
DELETING = "deleting"
#: the objects of one remote segment, by suffix of its key
SUFFIXES = (".log", ".index", ".timeindex", ".txnindex", ".manifest.json")


class OffsetNotLocal(BayouError):
    """The offset is above the log start but below the first local segment: only the
    remote copy has it (the engine reads it from tiered storage)."""


@dataclass(frozen=True)
class RemoteSegment:
    id: str
    base_offset: int
    next_offset: int
    size: int
    max_timestamp: int
    offset_of_max_timestamp: int
    file_time_ms: int  # the local file's time, which retention uses when max_timestamp is -1
    index_size: int
    time_index_size: int
    txn_index_size: int
    aborted: tuple[AbortedTxn, ...] = ()
    state: str = COPYING

    @property
    def empty(self) -> bool:
        return self.size == 0

    def largest_timestamp(self) -> int:
        """What retention judges the segment by, as for a local one."""
        return self.max_timestamp if self.max_timestamp >= 0 else self.file_time_ms

    def key(self, suffix: str) -> str:
        """The object name of one of its files, relative to the partition's prefix."""
        return f"{self.base_offset:020d}-{self.id}{suffix}"

    def to_json(self) -> dict[str, Any]:
        doc = asdict(self)
        doc["aborted"] = [asdict(a) for a in self.aborted]
        return doc

    @classmethod
    def from_json(cls, doc: dict[str, Any]) -> RemoteSegment:
        aborted = tuple(AbortedTxn(**a) for a in doc.get("aborted", ()))
        return cls(**{**doc, "aborted": aborted})


class RemoteSegments:
    """The remote segments of one partition (see the module docstring)."""

    def __init__(self, directory: Path) -> None:
        self.path = directory / REMOTE_FILE
        self._lock = threading.Lock()
        self.entries: tuple[RemoteSegment, ...] = ()
        self._copied: tuple[tuple[RemoteSegment, ...], list[int]] = ((), [])
        self._publish(self._load())

    def _publish(self, entries: tuple[RemoteSegment, ...]) -> None:
        """Make ``entries`` the current list (with the copied ones indexed for lookups);
        readers on other threads see one consistent snapshot or the previous one."""
        copied = tuple(e for e in entries if e.state == COPIED)
        self._copied = (copied, [e.base_offset for e in copied])  # one store: one snapshot
        self.entries = entries

    def _load(self) -> tuple[RemoteSegment, ...]:
        try:
            doc = read_json(self.path)
        except FileNotFoundError:
            return ()
        except (OSError, ValueError) as exc:
            raise BayouError(f"cannot read {self.path}: {exc}") from exc
        entries = [RemoteSegment.from_json(e) for e in doc.get("segments", [])]
        # an upload that was running when the broker stopped: its objects must go
        entries = [replace(e, state=DELETING) if e.state == COPYING else e for e in entries]
        return tuple(sorted(entries, key=lambda e: (e.base_offset, e.id)))

    def _save(self, entries: Iterable[RemoteSegment]) -> None:
        """Under ``_lock``: persist, then publish."""
        new = tuple(sorted(entries, key=lambda e: (e.base_offset, e.id)))
        if new == self.entries:
            return
        if new or self.path.exists():
            write_json(self.path, {"version": 1, "segments": [e.to_json() for e in new]})
        self._publish(new)

    # ------------------------------------------------------------------ views (any thread)

    def copied(self) -> tuple[RemoteSegment, ...]:
        return self._copied[0]

    def deleting(self) -> list[RemoteSegment]:
        return [e for e in self.entries if e.state == DELETING]

    def copied_end(self) -> int | None:
        """The end of the copied segments (local copies below it may go), None if none."""
        copied = self._copied[0]
        return max(e.next_offset for e in copied) if copied else None

    def upload_end(self) -> int | None:
        """Where the next upload continues: the end of what is copied or being copied."""
        ends = [e.next_offset for e in self.entries if e.state in (COPIED, COPYING)]
        return max(ends) if ends else None

    def remote_only(self, local_start: int) -> list[RemoteSegment]:
        """The copied segments below the first local one, as far as they reach it without a
        gap (in offset order): the part of the log only the store has."""
        chain: list[RemoteSegment] = []
        start = local_start
        for entry in reversed(self.copied()):
            if entry.base_offset >= start:
                continue
            if entry.next_offset < start:
                break  # a gap: nothing below it is part of the log
            chain.append(entry)
            start = entry.base_offset
        chain.reverse()
        return chain

    def start_before(self, local_start: int) -> int | None:
        """The first offset the remote copies add below ``local_start``, None if none."""
        chain = self.remote_only(local_start)
        return chain[0].base_offset if chain else None

    def find(self, offset: int) -> RemoteSegment | None:
        """The copied segment holding ``offset``."""
        copied, bases = self._copied
        i = bisect_right(bases, offset) - 1
        while i >= 0:  # copies may overlap after a crash: the latest base at or below wins
            if copied[i].base_offset <= offset < copied[i].next_offset:
                return copied[i]
            i -= 1
            if i >= 0 and copied[i].next_offset <= offset:
                break
        return None

    def aborted_lists(self, start: int, local_start: int) -> list[list[AbortedTxn]]:
        """The aborted transactions of the remote-only segments from the one holding
        ``start`` on, one list per segment (READ_COMMITTED, before the local ones)."""
        return [list(e.aborted) for e in self.remote_only(local_start) if e.next_offset > start]

    # ------------------------------------------------------------------ changes (worker threads)

    def add(self, entry: RemoteSegment) -> None:
        """Record an upload as started (durably, before its first object is written)."""
        with self._lock:
            self._save([*self.entries, replace(entry, state=COPYING)])

    def finish(self, segment_id: str) -> bool:
        """Record an upload as complete; False when it is no longer ``copying`` (retention
        or an abort marked it ``deleting`` meanwhile)."""
        with self._lock:
            found = [e for e in self.entries if e.id == segment_id and e.state == COPYING]
            if not found:
                return False
            self._save(replace(e, state=COPIED) if e.id == segment_id else e for e in self.entries)
            return True

    def mark_deleting(self, doomed: Callable[[RemoteSegment], bool]) -> list[RemoteSegment]:
        """Mark the entries ``doomed`` says for deletion (durably); returns them."""
        with self._lock:
            marked = [e for e in self.entries if e.state != DELETING and doomed(e)]
            if marked:
                ids = {e.id for e in marked}
                self._save(replace(e, state=DELETING) if e.id in ids else e for e in self.entries)
            return marked

    def forget(self, ids: Sequence[str]) -> None:
        """Drop entries whose objects are deleted."""
        with self._lock:
            gone = set(ids)
            self._save(e for e in self.entries if e.id not in gone)
