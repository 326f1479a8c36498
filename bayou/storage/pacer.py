"""Pacing background work in a worker thread so that the event loop keeps its pace.

Theory of operation
-------------------
The log cleaner is pure Python in a worker thread of the broker process: while it runs it
competes with the event loop for the GIL.  Every time the loop thread makes a system call
(a ``recv``, a ``send``, the ``write`` of an append) it lets go of the GIL, the cleaner takes
it, and the loop waits until the cleaner gives it back — at the latest after the
interpreter's switch interval (5 ms).  Left alone, a cleaning pass took produce down to
64 % of its rate.

So the cleaner calls a ``Pacer`` once per batch it reads, and every ``PACE_RECORDS`` (128)
records within a batch (a producer's 1 MB batch of small records is tens of milliseconds of
Python: asked once per batch, the pacer's slices were whole batches).  The pacer lets it
work in slices of ``slice_s`` (2 ms).  After each slice it looks at ``Activity``, a counter
the loop thread bumps on every append: if the loop appended during the slice, the broker is
busy serving and the cleaner sleeps long enough to use at most ``busy_share`` (5 %) of the
time — the sleep releases the GIL, so the loop runs uncontended meanwhile; if the loop was
idle, the cleaner goes straight on at full speed.  A pass takes longer under load (as with
Kafka's ``log.cleaner.io.max.bytes.per.second``), never longer when the broker is idle.  At
a 10 % share appends kept 84-87 % of their rate while a 48 MB log was cleaned
(``bench.compaction_bench``); at 5 % they keep 85-97 % (median 93 %), and a pass under
steady load takes about twice as long.

The counter is a plain integer written by one thread and read by another: a stale read only
delays the pacer's reaction by one slice.
"""

from __future__ import annotations

import time
from collections.abc import Callable

SLICE_S = 0.002
BUSY_SHARE = 0.05


class Activity:
    """How many times the loop did work a pacer yields to (appends); bumped on the loop."""

    __slots__ = ("count",)

    def __init__(self) -> None:
        self.count = 0


class Pacer:
    """Call once per unit of work; sleeps between slices while ``activity`` moves."""

    __slots__ = (
        "_activity",
        "_clock",
        "_mark",
        "_sleep",
        "_slice",
        "_start",
        "busy_share",
        "slept_s",
    )

    def __init__(
        self,
        activity: Activity,
        *,
        slice_s: float = SLICE_S,
        busy_share: float = BUSY_SHARE,
        clock: Callable[[], float] = time.perf_counter,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self._activity = activity
        self._clock = clock
        self._sleep = sleep
        self.busy_share = busy_share
        self.slept_s = 0.0  # in all, for the pass's report
        self._mark = activity.count
        self._start = clock()
        self._slice = slice_s

    def __call__(self) -> None:
        now = self._clock()
        worked = now - self._start
        if worked < self._slice:
            return
        count = self._activity.count
        if count != self._mark:
            self._mark = count
            pause = worked * (1 - self.busy_share) / self.busy_share
            self._sleep(pause)
            self.slept_s += pause
        self._start = self._clock()


def no_pace() -> None:
    """A pacer that never waits (a pass run outside the broker: tools, tests, benchmarks)."""
