"""The event-loop lag probe: how late a timer fires on the broker's one loop.

Every ``INTERVAL_S`` a task sleeps and measures how much later than asked it woke up; the
difference is what a request arriving at that moment would have waited before the loop
looked at it (a long synchronous step, a garbage-collection pause, a starved process).  Each
measurement goes into ``bayou_event_loop_lag_seconds``.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable

INTERVAL_S = 0.5


class LoopLagProbe:
    def __init__(self, observe: Callable[[float], None], interval_s: float = INTERVAL_S) -> None:
        self.observe = observe
        self.interval_s = interval_s
        self.last_s = 0.0
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name="loop-lag-probe")

    async def stop(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            asked = loop.time()
            await asyncio.sleep(self.interval_s)
            self.last_s = max(0.0, loop.time() - asked - self.interval_s)
            self.observe(self.last_s)
