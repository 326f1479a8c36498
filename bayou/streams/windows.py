"""Window specifications and how an event time falls into windows.

Windows are half-open intervals ``[start, end)`` of event time in epoch milliseconds, as in
Flink's windowing table functions:

- ``tumbling(size)``: fixed, non-overlapping windows aligned to the epoch (plus ``offset``);
- ``hopping(size, slide)``: fixed windows starting every ``slide``; a time falls into
  ``size / slide`` of them (Flink's HOP);
- ``cumulate(step, size)``: windows that share a start (aligned to ``size``) and grow by
  ``step`` up to ``size`` (Flink's CUMULATE): a time falls into every one ending after it;
- ``session(gap)``: per key, records closer than ``gap`` share a window ``[first, last +
  gap)``; windows merge when a record bridges them (Flink's SESSION);
- ``sliding(size)``: one window per record, ``[t - size, t]`` — the record and every record
  of its key at most ``size`` older (Flink's ``OVER (… RANGE BETWEEN size PRECEDING AND
  CURRENT ROW)``), emitted once per record.

``grace`` delays closing: a window closes when the watermark (the highest event time seen,
minus the grace) reaches its end.  Late-data policy (Flink's): a record whose windows are all
closed when it arrives is dropped and counted (``StreamStats.late_dropped``); it never
reopens a window and never goes to the dead-letter topic, which is for records that cannot be
read.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

WindowKind = Literal["tumble", "hop", "cumulate", "session", "sliding", "rows"]


@dataclass(frozen=True)
class Window:
    kind: WindowKind
    size_ms: int = 0
    slide_ms: int = 0  # hop: the slide; cumulate: the step; session: the gap
    grace_ms: int = 0
    offset_ms: int = 0
    rows: int = 0  # kind "rows": the preceding rows of an OVER ROWS window

    def assign(self, ts: int) -> list[tuple[int, int]]:
        """The windows ``[start, end)`` holding event time ``ts`` (fixed-window kinds)."""
        if self.kind == "tumble":
            start = ts - (ts - self.offset_ms) % self.size_ms
            return [(start, start + self.size_ms)]
        if self.kind == "hop":
            last = ts - (ts - self.offset_ms) % self.slide_ms
            starts = range(last, ts - self.size_ms, -self.slide_ms)
            return [(s, s + self.size_ms) for s in reversed(starts)]
        if self.kind == "cumulate":
            base = ts - (ts - self.offset_ms) % self.size_ms
            first_end = base + ((ts - base) // self.slide_ms + 1) * self.slide_ms
            return [(base, end) for end in range(first_end, base + self.size_ms + 1, self.slide_ms)]
        raise ValueError(f"{self.kind} windows are not assigned by time alone")

    def describe(self) -> str:
        if self.kind == "tumble":
            return f"TUMBLE {self.size_ms} ms"
        if self.kind == "hop":
            return f"HOP {self.size_ms} ms every {self.slide_ms} ms"
        if self.kind == "cumulate":
            return f"CUMULATE {self.size_ms} ms by {self.slide_ms} ms"
        if self.kind == "session":
            return f"SESSION gap {self.slide_ms} ms"
        if self.kind == "rows":
            return f"OVER {self.rows} PRECEDING ROWS"
        return f"OVER {self.size_ms} ms PRECEDING"


def _ms(milliseconds: int = 0, seconds: float = 0, minutes: float = 0, hours: float = 0) -> int:
    total = int(milliseconds + seconds * 1000 + minutes * 60_000 + hours * 3_600_000)
    if total <= 0:
        raise ValueError("a window's duration must be positive")
    return total


def tumbling(
    *,
    milliseconds: int = 0,
    seconds: float = 0,
    minutes: float = 0,
    hours: float = 0,
    grace_ms: int = 0,
) -> Window:
    return Window("tumble", _ms(milliseconds, seconds, minutes, hours), grace_ms=grace_ms)


def hopping(*, size_ms: int, slide_ms: int, grace_ms: int = 0) -> Window:
    if slide_ms <= 0 or size_ms <= 0:
        raise ValueError("a hopping window needs a positive size and slide")
    return Window("hop", size_ms, slide_ms, grace_ms)


def cumulate(*, step_ms: int, size_ms: int, grace_ms: int = 0) -> Window:
    if step_ms <= 0 or size_ms % step_ms:
        raise ValueError("a cumulating window's size must be a multiple of its step")
    return Window("cumulate", size_ms, step_ms, grace_ms)


def session(*, gap_ms: int, grace_ms: int = 0) -> Window:
    if gap_ms <= 0:
        raise ValueError("a session gap must be positive")
    return Window("session", 0, gap_ms, grace_ms)


def sliding(
    *,
    milliseconds: int = 0,
    seconds: float = 0,
    minutes: float = 0,
    hours: float = 0,
    grace_ms: int = 0,
) -> Window:
    return Window("sliding", _ms(milliseconds, seconds, minutes, hours), grace_ms=grace_ms)
