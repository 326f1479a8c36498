"""The log cleaner's per-partition checkpoint: ``cleaner.json``.

``clean_offset`` is where the dirty part of the log begins (Kafka's cleaner-offset
checkpoint).  ``gaps_below`` is the end of the last pass *started*: segments below it may
have been rewritten by the cleaner, so recovery accepts offset gaps there.  ``passes`` lists
``(end offset, time)`` of past cleaning passes, oldest first; the first pass whose end is
above an offset is when a record at that offset was first cleaned, and a tombstone is
removed once ``delete.retention.ms`` has passed since then
(the idea of Kafka's KIP-534 delete horizon, kept here instead of in batch headers).
``tombstone_since_ms`` is the earliest first-cleaned time of the tombstones still kept, so
the cleaner knows when a pass would remove some (-1: none kept).

A pass writes the file twice: ``gaps_below`` before it swaps any segment in (so a crash
never leaves a cleaned segment where recovery expects contiguous offsets), ``clean_offset``
and the pass record after the last swap (so a crash in between makes the next pass redo the
whole dirty section).
"""

from __future__ import annotations

from bisect import bisect_right
from dataclasses import dataclass, field
from pathlib import Path

from bayou.storage.files import read_json, write_json

CLEANER_FILE = "cleaner.json"
MAX_PASSES = 64


@dataclass
class CleanerState:
    clean_offset: int = 0
    passes: list[tuple[int, int]] = field(default_factory=list)
    tombstone_since_ms: int = -1
    gaps_below: int = 0

    def first_cleaned_ms(self, offset: int) -> int | None:
        """When the record at ``offset`` was first cleaned (None: never)."""
        i = bisect_right([end for end, _ in self.passes], offset)
        return self.passes[i][1] if i < len(self.passes) else None

    def add_pass(self, end_offset: int, now_ms: int, log_start: int) -> None:
        """Record a pass; forget passes wholly below the log start; keep the list short by
        merging the oldest two (the later time wins, so tombstones only live longer)."""
        if end_offset > self.clean_offset:
            self.passes.append((end_offset, now_ms))
            self.clean_offset = end_offset
        while self.passes and self.passes[0][0] <= log_start:
            self.passes.pop(0)
        while len(self.passes) > MAX_PASSES:
            self.passes[0:2] = [self.passes[1]]


def load_cleaner_state(directory: Path) -> CleanerState:
    try:
        doc = read_json(directory / CLEANER_FILE)
        return CleanerState(
            int(doc["clean_offset"]),
            [(int(e), int(t)) for e, t in doc["passes"]],
            int(doc.get("tombstone_since_ms", -1)),
            int(doc.get("gaps_below", doc["clean_offset"])),
        )
    except (OSError, ValueError, TypeError, KeyError):
        return CleanerState()


def save_cleaner_state(directory: Path, state: CleanerState) -> None:
    write_json(
        directory / CLEANER_FILE,
        {
            "clean_offset": state.clean_offset,
            "passes": [list(p) for p in state.passes],
            "tombstone_since_ms": state.tombstone_since_ms,
            "gaps_below": state.gaps_below,
        },
    )
