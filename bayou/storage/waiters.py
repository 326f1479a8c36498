"""Wake-ups for long-polling fetches: "data landed in this partition".

A fetch that has too little data parks one future under every partition it reads; an append
notifies the partition's futures.  The future resolves once, so a fetch wakes at most once per
wait however many appends land, and re-reads the log itself.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable

PartitionKey = tuple[str, int]


class DataWaiters:
    def __init__(self) -> None:
        self._waiting: dict[PartitionKey, set[asyncio.Future[None]]] = {}

    def notify(self, topic: str, partition: int) -> None:
        """Wake every fetch waiting on ``topic``/``partition``."""
        futures = self._waiting.pop((topic, partition), None)
        if futures:
            for future in futures:
                if not future.done():
                    future.set_result(None)

    async def wait_any(self, keys: Iterable[PartitionKey], timeout_s: float) -> bool:
        """Wait until one of ``keys`` gets data or the timeout passes; True when woken."""
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        registered = list(keys)
        for key in registered:
            self._waiting.setdefault(key, set()).add(future)
        try:
            await asyncio.wait_for(future, timeout_s)
            return True
        except TimeoutError:
            return False
        finally:
            for key in registered:
                waiting = self._waiting.get(key)
                if waiting is not None:
                    waiting.discard(future)
                    if not waiting:
                        del self._waiting[key]

    def wake_all(self) -> None:
        """Wake everything (shutdown)."""
        for key in list(self._waiting):
            self.notify(*key)
