"""The message browser's bounded scan: its cursors, its progress, and how it is cancelled.

Theory of operation
-------------------
A scan reads a topic's chosen partitions through core ``Cursor``s (the read path every door
uses), one partition after another, keeping the records a filter matches.  It is bounded
three ways and says which bound stopped it: the records it keeps (``limit``), the bytes of
keys and values it reads (``SCAN_BYTES``) and its time (``SCAN_S``).

``open_cursors`` places the cursors first (a time start is an index lookup), so a bad start
is refused before the page is sent; ``scan`` then reads at most ``READ_RECORDS`` records
(``READ_BYTES``) at a time and gives the event loop a turn between reads, so a long scan
neither stalls the broker's other clients nor the page's progress and cancel.  While it
runs, the ``Scan`` it fills is its progress: the offsets covered of those in range (per
partition and in total), the records and bytes read of the bound, the time spent.

The browser page of a scan streams (``messages.py``): it holds the scan's id, and its Cancel
button posts to ``/console/scans/{id}/cancel``; ``Scans`` finds the scan by that id — only
for the user who started it — and marks it, and the scan stops at its next read with
``stopped = "cancelled"``, keeping what it found.  A page that goes away cancels the task
outright.  The id is random and lives only as long as its scan.
"""

from __future__ import annotations

import asyncio
import secrets
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from bayou.console.filters import Predicate
from bayou.console.web import human_bytes
from bayou.core import Core
from bayou.core.cursor import Cursor, StartSpec
from bayou.protocol.kafka.records import DecodedRecord

SCAN_BYTES = 64 * 1024 * 1024
SCAN_S = 5.0
READ_BYTES = 1024 * 1024
READ_RECORDS = 5_000
NEWEST_WINDOW = 10_000


@dataclass
class Scan:
    """A scan's result, and while it runs its progress."""

    records: list[tuple[int, DecodedRecord]] = field(default_factory=list)
    scanned: int = 0
    scanned_bytes: int = 0
    stopped: str = ""  # "", "bytes", "time", "gone" (the browser went away), "cancelled"
    #: (partition, first offset, end offset) of each partition's range, in scan order
    spans: list[tuple[int, int, int]] = field(default_factory=list)
    current: int = 0  # index into spans of the partition being read
    position: int = 0  # the next offset to read there
    matched: int = 0
    started: float = field(default_factory=time.monotonic)
    cancelled: bool = False  # asked to stop (the Cancel button)

    def progress(self) -> dict[str, Any]:
        """How far the scan got: offsets covered of those in range, in total and in the
        partition being read; records and bytes read of the bound; seconds of the bound."""
        total = sum(max(0, end - first) for _, first, end in self.spans)
        covered = sum(max(0, end - first) for _, first, end in self.spans[: self.current])
        partition, first, end = self.spans[self.current] if self.spans else (0, 0, 0)
        here = min(max(0, self.position - first), max(0, end - first))
        elapsed = time.monotonic() - self.started
        text = (
            f"Scanning partition {partition} ({self.current + 1} of {len(self.spans)}): "
            f"offset {here:,} of {max(0, end - first):,} here, {covered + here:,} of "
            f"{total:,} in all · {self.scanned:,} record(s), "
            f"{human_bytes(self.scanned_bytes)} of the {human_bytes(SCAN_BYTES)} bound · "
            f"{elapsed:.1f} s of {SCAN_S:g} s · {self.matched:,} match(es)"
        )
        return {
            "partition": partition,
            "done": covered + here,
            "total": total,
            "partition_done": here,
            "partition_total": max(0, end - first),
            "scanned": self.scanned,
            "bytes": self.scanned_bytes,
            "bytes_bound": SCAN_BYTES,
            "seconds": round(elapsed, 3),
            "seconds_bound": SCAN_S,
            "matched": self.matched,
            "text": text,
        }


async def open_cursors(
    core: Core,
    topic: str,
    partitions: list[int],
    start: StartSpec | None,
    predicate: Predicate | None,
    limit: int,
) -> list[Cursor]:
    """A cursor per partition at ``start`` (None: the newest ``limit`` records, or the last
    ``NEWEST_WINDOW`` when filtering)."""
    cursors: list[Cursor] = []
    for index in partitions:
        if start is None:
            p = core.partition(topic, index)
            window = NEWEST_WINDOW if predicate is not None else limit
            position = max(p.log_start_offset, p.log_end_offset - window)
            cursors.append(core.cursor(topic, index, position))
        else:
            cursors.append(await core.cursor_at(topic, index, start))
    return cursors


async def scan(
    cursors: list[Cursor],
    newest: bool,
    predicate: Predicate | None,
    limit: int,
    gone: Callable[[], Awaitable[bool]] | None = None,
    result: Scan | None = None,
) -> Scan:
    """Matching records from ``cursors``, bounded (newest first when ``newest``, else the
    earliest, merged by timestamp); ``gone`` is asked between reads whether the browser
    went away; ``result`` (the progress a page shows) is filled as the scan goes."""
    result = Scan() if result is None else result
    result.started = time.monotonic()
    deadline = result.started + SCAN_S
    result.spans = [(c.partition, c.position, c.end()) for c in cursors]
    for n, cursor in enumerate(cursors):
        result.current, result.position = n, cursor.position
        found: list[tuple[int, DecodedRecord]] = []
        while cursor.position < cursor.end():
            if result.cancelled:
                result.stopped = "cancelled"
            elif result.scanned_bytes >= SCAN_BYTES:
                result.stopped = "bytes"
            elif time.monotonic() > deadline:
                result.stopped = "time"
            elif gone is not None and await gone():
                result.stopped = "gone"
            if result.stopped:
                break
            records = await cursor.read(READ_BYTES, READ_RECORDS)
            if not records:
                break
            for record in records:
                result.scanned += 1
                result.scanned_bytes += len(record.key or b"") + len(record.value or b"")
                if predicate is None or predicate(record):
                    found.append((cursor.partition, record))
            result.position = cursor.position
            result.matched = len(result.records) + len(found)
            if not newest and len(found) >= limit:
                break
            await asyncio.sleep(0)  # a turn for the page's progress, a cancel, other clients
        result.records.extend(found[-limit:] if newest else found[:limit])
        if result.stopped:
            break
    if newest:
        result.records.sort(key=lambda r: (r[1].timestamp, r[0], r[1].offset), reverse=True)
    else:
        result.records.sort(key=lambda r: (r[1].timestamp, r[0], r[1].offset))
    del result.records[limit:]
    return result


class Scans:
    """The scans running now, by an id their page holds, so its Cancel button can stop one
    (only for the user who started it)."""

    def __init__(self) -> None:
        self._running: dict[str, tuple[str | None, Scan]] = {}

    def begin(self, principal: str | None) -> tuple[str, Scan]:
        scan_id = secrets.token_urlsafe(16)
        progress = Scan()
        self._running[scan_id] = (principal, progress)
        return scan_id, progress

    def cancel(self, scan_id: str, principal: str | None) -> bool:
        entry = self._running.get(scan_id)
        if entry is None or entry[0] != principal:
            return False
        entry[1].cancelled = True
        return True

    def end(self, scan_id: str) -> None:
        self._running.pop(scan_id, None)

    def __len__(self) -> int:
        return len(self._running)
