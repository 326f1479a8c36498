"""Following the shared state logs: what another broker writes takes effect here too.

Theory of operation
-------------------
Users, ACLs, quotas, MQTT retained messages and sessions and the AMQP topology are state
logs (compacted key-value logs of the engine's ``StateStore``) that each store replays into
memory at start.  On a shared engine (``postgres://``, ``s3://``) every broker of the cluster
writes the same logs, so each broker also **follows** them: a ``FollowedLog`` wraps the
engine's log and, once its store has loaded, a task tails it with a ``Cursor`` and hands every
entry another broker wrote to the store's own ``apply`` — the function its start-up replay
uses, so there is one way a record becomes state.

- **Position.** ``read_all`` (the replay at start) reads through the same cursor, so the
  follower starts exactly after the last record the store loaded: nothing is missed,
  nothing is applied twice.
- **Waiting.** The cursor waits for the engine's "data landed" wake-up of the log (on
  PostgreSQL, the NOTIFY another broker's commit sends), not a polling loop; ``WAIT_S`` only
  bounds each wait.  An entry written on another broker is applied here within the NOTIFY's
  delivery and one read — milliseconds; the cluster documents at most 2 s.
- **Own writes are applied once, and win over what they follow.**  A store applies its own
  change in memory when it writes it (read-your-writes for the client that asked).  ``put``
  returns the offset of the batch's last entry, and the follower notes, per key, the offset
  of this broker's latest write; it skips a record at or below that offset — its own, or
  another broker's that this broker's later write already replaced in the log (applying it
  would leave memory on the older value while the log holds ours).  A record it reads may
  be older than one of our writes still in flight (the commit woke the follower first, or
  the store changed its memory and has not written yet): before deciding on a key, the
  follower waits for this broker's puts of that key in flight at that moment (one commit
  each; a put counts as in flight from its call, before its coroutine first runs).  A put
  that failed leaves no note, so if its record did land after all, the follower applies it
  like anyone else's — the state then matches the log, which is the truth.  A log nobody
  follows keeps no notes; a store's writes between its load and ``follow`` (the AMQP
  registry rewriting what it could not read) are applied again, the same values.
- **Order.** Entries are applied in log order; a store's ``apply`` is last-writer-wins per
  key, as its replay is, so every broker ends on what the log ends on.
- Errors in ``apply`` are logged and the entries skipped: a follower never stops, and one
  bad record never stalls the others.

On an engine only one broker opens (``local``, ``memory://``) nothing else writes the logs:
``FollowingStateStore`` hands out the engine's logs as they are and ``follow`` does nothing.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import logging
from collections.abc import Awaitable, Callable, Coroutine, Sequence
from typing import Any

from bayou.core.cursor import Cursor
from bayou.errors import KafkaError
from bayou.log_limits import RateLimitedLog
from bayou.storage.engine import LogEngine, Partition, StateEntry, StateLog

log = logging.getLogger("bayou.state_follow")

WAIT_S = 5.0  # one wait for new records (they wake it at once; this only bounds it)
READ_BYTES = 1024 * 1024
RETRY_S = 0.5  # after a failed read (the engine unreachable)
CATCH_UP_S = 2.0
SETTLE_S = 30.0  # the longest a follower waits for this broker's own writes in flight

Apply = Callable[[list[StateEntry]], Awaitable[None] | None]


class StateLogCursor(Cursor):
    """A ``Cursor`` over a state log (never a topic, so not found by name)."""

    __slots__ = ("_log",)

    def __init__(self, engine: LogEngine, state_log: StateLog) -> None:
        handle = state_log.partition
        super().__init__(engine, state_log.name, 0, handle.log_start_offset)
        self._log = state_log

    def handle(self) -> Partition:
        return self._log.partition


class FollowedLog:
    """A ``StateLog`` that can be followed (see the module docstring)."""

    def __init__(self, engine: LogEngine, inner: StateLog) -> None:
        self.inner = inner
        self.cursor = StateLogCursor(engine, inner)
        self.task: asyncio.Task[None] | None = None
        self._written: dict[bytes, int] = {}  # key → offset of our latest write, not passed
        self._own: set[int] = set()  # offsets of our writes, not passed (``own_wins`` off)
        self.own_wins = True
        self._inflight: dict[asyncio.Future[None], frozenset[bytes]] = {}  # puts → their keys
        self._advanced = asyncio.Event()  # set (and replaced) each time the follower moves
        self._limited = RateLimitedLog(log)

    @property
    def name(self) -> str:
        return self.inner.name

    @property
    def partition(self) -> Partition:
        return self.inner.partition

    async def read_all(self) -> list[StateEntry]:
        """Every entry from the log start (call before following): the cursor ends where
        the replay ends, and the follower starts there."""
        cursor = self.cursor
        cursor.position = cursor.handle().log_start_offset
        out: list[StateEntry] = []
        end = cursor.end()
        while cursor.position < end:
            was = cursor.position
            records = await cursor.read(READ_BYTES)
            out.extend(
                StateEntry(r.key, r.value, tuple(r.headers)) for r in records if r.key is not None
            )
            if not records and cursor.position == was:
                break  # nothing more to read now (as the engines' own replays stop)
        self._written.clear()
        self._own.clear()
        return out

    def put(
        self, entries: Sequence[StateEntry], *, durable: bool = False
    ) -> Coroutine[Any, Any, int]:
        """The engine's ``put``, in flight from this call on (see the module docstring)."""
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._inflight[done] = frozenset(e.key for e in entries)
        return self._put(list(entries), durable, done)

    async def _put(
        self, entries: list[StateEntry], durable: bool, done: asyncio.Future[None]
    ) -> int:
        try:
            last = await self.inner.put(entries, durable=durable)
            if last >= 0 and self.task is not None:  # else nothing follows: nothing to skip
                written = self._written
                for offset, entry in enumerate(entries, last - len(entries) + 1):
                    written[entry.key] = max(offset, written.get(entry.key, -1))
                    self._own.add(offset)
            return last
        finally:
            self._inflight.pop(done, None)
            done.set_result(None)

    async def sync(self) -> None:
        await self.inner.sync()

    async def close(self) -> None:
        await self.inner.close()

    def follow(self, apply: Apply, *, own_wins: bool = True) -> None:
        """Hand every entry another broker appends from now on to ``apply``.  With
        ``own_wins`` off only this broker's own records are skipped: ``apply`` decides
        between its latest write of a key and another broker's later one (MQTT sessions,
        whose documents say which holder is newer)."""
        self.own_wins = own_wins
        if self.task is None:
            self.task = asyncio.create_task(self._run(apply), name=f"follow {self.name}")

    async def caught_up(self, timeout_s: float = CATCH_UP_S) -> bool:
        """Until the follower has applied everything the log holds now — its end read from
        the engine (``StateLog.sync``), not waited for from a notification — bounded; True
        when it has.  For a decision that must see another broker's last write."""
        if self.task is None:
            return True
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        # the end, from the engine (else what notifications told us is the best known)
        with contextlib.suppress(TimeoutError, KafkaError):
            await asyncio.wait_for(self.inner.sync(), timeout_s)
        target = self.cursor.end()
        while self.cursor.position < target:
            left = deadline - loop.time()
            if left <= 0:
                return False
            try:
                await asyncio.wait_for(self._advanced.wait(), left)
            except TimeoutError:
                return False
        return True

    def _moved(self) -> None:
        self._advanced.set()
        self._advanced = asyncio.Event()

    def stop(self) -> None:
        if self.task is not None:
            self.task.cancel()

    async def _run(self, apply: Apply) -> None:
        cursor = self.cursor
        while True:
            try:
                if not await cursor.wait(WAIT_S):
                    continue
                start = cursor.position
                records = await cursor.read(READ_BYTES)
                await self._settle({r.key for r in records if r.key is not None})
                written, own = self._written, self._own
                theirs = [
                    StateEntry(r.key, r.value, tuple(r.headers))
                    for r in records
                    if r.key is not None
                    and r.offset not in own
                    and not (self.own_wins and written.get(r.key, -1) >= r.offset)
                ]
                if written:
                    passed = cursor.position
                    self._written = {k: o for k, o in written.items() if o >= passed}
                    self._own = {o for o in own if o >= passed}
                if theirs:
                    try:
                        result = apply(theirs)
                        if inspect.isawaitable(result):
                            await result
                    except Exception:
                        log.exception("applying %d entries of %s failed", len(theirs), self.name)
                self._moved()
                if cursor.position == start and not records:
                    await asyncio.sleep(RETRY_S)  # woken with nothing to read: never spin
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                self._limited.warning(self.name, "following the state log %s: %s", self.name, exc)
                await asyncio.sleep(RETRY_S)

    async def _settle(self, keys: set[bytes]) -> None:
        """Until none of this broker's puts of ``keys`` is in flight (bounded: a put whose
        coroutine was never run would hold the follower; it is forgotten after a while)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + SETTLE_S
        while True:
            waiting = [f for f, ks in self._inflight.items() if not ks.isdisjoint(keys)]
            if not waiting:
                return
            left = deadline - loop.time()
            if left > 0:
                await asyncio.wait(waiting, timeout=left)
                continue
            log.warning(
                "%s: %d write(s) never finished; deciding without them", self.name, len(waiting)
            )
            for future in waiting:
                self._inflight.pop(future, None)
            return


class FollowingStateStore:
    """The engine's ``StateStore``, with its logs followed when ``shared``."""

    def __init__(self, engine: LogEngine, *, shared: bool) -> None:
        self.engine = engine
        self.shared = shared
        self._logs: dict[str, FollowedLog] = {}

    async def open_log(self, name: str, *, public: bool = False) -> StateLog:
        inner = await self.engine.state.open_log(name, public=public)
        if not self.shared:
            return inner
        found = self._logs.get(name)
        if found is None or found.inner is not inner:
            found = self._logs[name] = FollowedLog(self.engine, inner)
        return found

    def close(self) -> None:
        for followed in self._logs.values():
            followed.stop()


def follow(state_log: StateLog | None, apply: Apply, *, own_wins: bool = True) -> None:
    """Follow ``state_log`` with ``apply`` when it is shared with other brokers."""
    if isinstance(state_log, FollowedLog):
        state_log.follow(apply, own_wins=own_wins)


async def caught_up(state_log: StateLog | None, timeout_s: float = CATCH_UP_S) -> bool:
    """Until what other brokers wrote to ``state_log`` so far is applied here (bounded)."""
    if isinstance(state_log, FollowedLog):
        return await state_log.caught_up(timeout_s)
    return True
