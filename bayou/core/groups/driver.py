"""The thin asyncio driver around the deterministic GroupCoordinator.

Theory of operation
-------------------
``run(op)`` calls one coordinator operation with the current time and a fresh token, then:

1. writes the operation's records to the coordinator's state log (one batch) and waits until
   the engine says it is as durable as the log's policy asks — written to the OS at least,
   so a kill -9 after the answer loses nothing; fsynced first when ``flush.messages`` calls
   for it (strict mode is 1), exactly as produce treats a topic's flush policy;
2. resolves the futures of earlier parked requests the operation answered;
3. returns the response, or — when the operation parked the request (JoinGroup/SyncGroup
   waiting for the rebalance) — awaits the token's future, which a later operation or timer
   resolves.

Writes apply in call order (the engine's ``put`` guarantees it), so the log's order is the
order in which operations changed the coordinator's state.  A timer task sleeps until the
coordinator's ``next_deadline()`` (woken early whenever an operation ran, as deadlines may
have moved) and runs ``tick``.  At shutdown every parked request is answered with
COORDINATOR_NOT_AVAILABLE so that connections drain.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
from collections.abc import Callable
from typing import Any, TypeVar

from bayou.core.groups.coordinator import GroupCoordinator
from bayou.core.groups.model import GroupCoordinatorError, GroupSettings, Result
from bayou.core.groups.store import GroupStore
from bayou.errors import ErrorCode
from bayou.storage.engine import StateLog

log = logging.getLogger(__name__)

T = TypeVar("T")
MAX_TIMER_SLEEP_S = 1.0


def _always() -> bool:
    return True


class GroupDriver:
    def __init__(self, settings: GroupSettings, clock_ms: Callable[[], int], log: StateLog) -> None:
        self.coordinator = GroupCoordinator(settings)
        self.store = GroupStore(log)
        self.clock_ms = clock_ms
        self._tokens = itertools.count(1)
        self._parked: dict[int, asyncio.Future[Any]] = {}
        self._wake: asyncio.Event | None = None
        self._task: asyncio.Task[None] | None = None
        self._closed = False
        #: whether the timers may act: in a cluster, while this broker's own lease runs (a
        #: broker that stalled past it must not expire sessions another broker serves now)
        self.active: Callable[[], bool] = _always

    # ------------------------------------------------------------------ lifecycle

    async def open(self) -> int:
        """Replay the state log; returns how many records were applied."""
        return self.coordinator.load(await self.store.records(), self.clock_ms())

    async def follow(self, owns: Callable[[str], bool], *, load: bool) -> None:
        """The cluster changed: forget the groups this broker no longer coordinates, and
        (``load``) replay from the state log the ones it gained — those it holds nothing
        of; a group it kept all along is already true."""
        gone = self.coordinator.drop_groups(lambda g: not owns(g))
        if gone:
            log.info("coordinator moved away for %d group(s)", len(gone))
        if not load:
            return
        held = self.coordinator.held_groups()
        records = await self.store.records()
        held |= self.coordinator.held_groups()  # created meanwhile: already true
        gained = [r for r in records if r.key.group not in held and owns(r.key.group)]
        if gained:
            self.coordinator.load(gained, self.clock_ms())
            loaded = {r.key.group for r in gained}
            log.info("took over %d group(s) from the state log", len(loaded))
        if self._wake is not None:
            self._wake.set()

    async def start(self) -> None:
        self._wake = asyncio.Event()
        self._task = asyncio.create_task(self._timers())

    def shutdown(self) -> None:
        """Stop the timers and answer every parked request (the broker is stopping)."""
        self._closed = True
        if self._task is not None:
            self._task.cancel()
        if self._wake is not None:
            self._wake.set()
        parked, self._parked = self._parked, {}
        for future in parked.values():
            if not future.done():
                future.set_exception(GroupCoordinatorError(ErrorCode.COORDINATOR_NOT_AVAILABLE))

    # ------------------------------------------------------------------ operations

    async def run(self, op: Callable[[int, int], Result[T]]) -> T:
        """Run ``op(now, token)``; see the module docstring."""
        if self._closed:
            raise GroupCoordinatorError(ErrorCode.COORDINATOR_NOT_AVAILABLE)
        token = next(self._tokens)
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._parked[token] = future
        try:
            result = op(self.clock_ms(), token)
        except BaseException:
            self._parked.pop(token, None)
            raise
        if result.response is not None:
            self._parked.pop(token, None)
        await self._settle(result)
        if result.response is not None:
            return result.response
        answer: T = await future
        return answer

    def read(self) -> GroupCoordinator:
        """The coordinator, for operations that only read."""
        return self.coordinator

    async def _settle(self, result: Result[Any]) -> None:
        if result.records:
            await self.store.append(result.records)
        for token, answer in result.completions:
            future = self._parked.pop(token, None)
            if future is not None and not future.done():
                future.set_result(answer)
        if self._wake is not None:
            self._wake.set()

    # ------------------------------------------------------------------ timers

    async def _timers(self) -> None:
        assert self._wake is not None
        coordinator = self.coordinator
        await self._settle(coordinator.tick(self.clock_ms()))
        while not self._closed:  # a flag, not only the cancel: 3.11's wait_for can swallow it
            now = self.clock_ms()
            deadline = coordinator.next_deadline()
            sleep_s = MAX_TIMER_SLEEP_S if deadline is None else (deadline - now) / 1000
            self._wake.clear()
            if sleep_s > 0:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), min(sleep_s, MAX_TIMER_SLEEP_S))
            now = self.clock_ms()
            if not self.active():  # a cluster member that lost its lease: hands off
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), MAX_TIMER_SLEEP_S)
                continue
            deadline = coordinator.next_deadline()
            if deadline is not None and deadline <= now:
                try:
                    await self._settle(coordinator.tick(now))
                except Exception:
                    log.exception("group coordinator timers failed")
