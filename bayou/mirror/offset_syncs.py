"""Offset syncs: how a source partition's offsets map onto its mirror's offsets.

Theory of operation
-------------------
The mirror copies a partition's records in order, one produced record per source record.
As long as the source offsets have no gaps and nobody else writes to the target partition,
source offset ``x`` lands at target offset ``x`` (or ``x`` plus a constant).  A *sync*
``(s, t)`` says "from source offset ``s`` on, source offset ``x`` is target offset
``t + (x - s)``", up to the next sync.  With no sync at all the mapping is the identity
(the implicit sync ``(0, 0)``).

A new sync is needed exactly when the next record breaks that line: the source skipped
offsets (compaction removed records, transaction markers or aborted records occupy
offsets that are not copied, retention deleted the start before the mirror first ran) or
someone else wrote to the target.  Syncs are stored in the target (``state.py``), so the
mapping survives the mirror; for a mirror-only topic a sync is stored *before* the record
that needs it is produced, so the target's log end offset plus the syncs always tells
where the copy stands (``resume``).

``translate`` turns a consumer group's committed source offset into the target offset
where the same next record is (or will be): inside a gap it is the target offset of the
record after the gap, and it is never beyond the copied end, so a consumer that fails over
re-reads rather than skips.
"""

from __future__ import annotations

import bisect
from dataclasses import dataclass, field


@dataclass(frozen=True, order=True)
class Sync:
    source: int
    target: int


@dataclass
class OffsetMap:
    """The syncs of one partition, ordered by source offset (and so by target offset)."""

    syncs: list[Sync] = field(default_factory=list)

    def add(self, sync: Sync) -> None:
        """Record a sync; one replayed twice, or superseded by a later one, is harmless."""
        i = bisect.bisect_left(self.syncs, sync)
        if i < len(self.syncs) and self.syncs[i] == sync:
            return
        self.syncs.insert(i, sync)
        # A sync at or past this one's target with a smaller source offset is stale (a
        # restart re-synced a stretch): drop syncs that are not increasing in both offsets.
        kept: list[Sync] = []
        for s in self.syncs:
            while kept and (kept[-1].target >= s.target or kept[-1].source >= s.source):
                kept.pop()
            kept.append(s)
        self.syncs = kept

    def last(self) -> Sync:
        return self.syncs[-1] if self.syncs else Sync(0, 0)

    def expected_target(self, source: int) -> int:
        """Where ``source`` lands if the line of the last sync continues."""
        last = self.last()
        return last.target + (source - last.source)

    def needs_sync(self, source: int, target: int) -> bool:
        """Whether copying ``source`` to ``target`` breaks the line of the last sync."""
        return self.expected_target(source) != target

    def resume(self, target_end: int) -> int:
        """The next source offset to copy when the target partition ends at ``target_end``
        and only the mirror writes it."""
        base = Sync(0, 0)
        for s in self.syncs:
            if s.target <= target_end:
                base = s
        return base.source + (target_end - base.target)

    def translate(self, source: int, target_end: int) -> int:
        """The target offset of source offset ``source``'s record (or of the first record
        after it, when ``source`` is in a gap), at most ``target_end``."""
        base, following = Sync(0, 0), None
        for s in self.syncs:
            if s.source <= source:
                base = s
            else:
                following = s
                break
        out = base.target + (source - base.source)
        if following is not None:
            out = min(out, following.target)
        return max(0, min(out, target_end))
