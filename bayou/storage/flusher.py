"""Group-committed fsync: many producers waiting on one partition share one fsync.

Theory of operation
-------------------
Per partition there is at most one fsync running (in a worker thread, never on the event
loop) and at most one queued.  A producer whose append needs durability awaits the *queued*
flush, which starts only after the running one ends, so it is sure to cover that producer's
bytes.  Everyone who arrives while the queued flush waits joins it: N producers that append
during one fsync pay for one more fsync in total, not N.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from typing import Protocol

log = logging.getLogger(__name__)


class Flushable(Protocol):
    def flush(self) -> int: ...


def _timed_flush(log_: Flushable) -> float:
    """fsync in the worker thread; how long it took."""
    start = time.perf_counter()
    log_.flush()
    return time.perf_counter() - start


class _PartitionFlush:
    __slots__ = ("queued", "running")

    def __init__(self) -> None:
        self.queued: asyncio.Future[None] | None = None
        self.running = False


class GroupFlusher:
    def __init__(self) -> None:
        self._state: dict[int, _PartitionFlush] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        #: told each fsync's duration in seconds (the broker's metrics), from the loop
        self.observe: Callable[[float], None] | None = None

    async def flush(self, log_: Flushable) -> None:
        """Return once an fsync that started after this call has completed."""
        state = self._state.setdefault(id(log_), _PartitionFlush())
        if state.queued is None:
            state.queued = asyncio.get_running_loop().create_future()
            if not state.running:
                task = asyncio.create_task(self._run(log_, state))
                self._tasks.add(task)
                task.add_done_callback(self._tasks.discard)
        await asyncio.shield(state.queued)

    async def _run(self, log_: Flushable, state: _PartitionFlush) -> None:
        state.running = True
        try:
            while state.queued is not None:
                future, state.queued = state.queued, None
                try:
                    seconds = await asyncio.to_thread(_timed_flush, log_)
                    if self.observe is not None:
                        self.observe(seconds)
                except Exception as exc:  # surfaced to every waiter
                    log.error("fsync failed: %s", exc)
                    if not future.done():
                        future.set_exception(exc)
                    continue
                if not future.done():
                    future.set_result(None)
        finally:
            state.running = False
            self._state.pop(id(log_), None)

    async def drain(self) -> None:
        """Wait for every running flush (shutdown)."""
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)
