"""The thin asyncio driver around the deterministic TransactionCoordinator.

Theory of operation
-------------------
``run(op)`` calls one coordinator operation with the current time, writes its records to
``__transaction_state`` (one batch, durable per the internal logs' policy) and only then
answers and starts the operation's marker jobs — so a transaction's PrepareCommit or
PrepareAbort is in the log before any partition sees a marker, and a crash at any point
is completed by ``start`` after the restart (``pending_markers``).

A marker job writes the markers (``markers.MarkerWriter``: on each partition's leader, this
broker or another), then runs ``complete`` (CompleteCommit/CompleteAbort).  One job per
transactional id at a time; partitions whose marker failed (a leader that died, a group
coordinator still loading) are retried every second until done — Kafka's PrepareCommit →
CompleteCommit — for as long as this broker coordinates the id; a coordinator that takes
the id over replays it in Prepare* and writes them all again.  EndTxn answers once its job's first
attempt ended — normally with every marker written, so a READ_COMMITTED reader sees the
transaction as soon as the producer's ``commit_transaction`` returns (Kafka answers right
after PrepareCommit and writes markers afterwards; both are correct, this one is also
read-your-writes).  InitProducerId that fences an ongoing transaction waits for that abort,
then runs again (Kafka answers CONCURRENT_TRANSACTIONS and lets the client retry).

Producer ids are allocated from the engine (durable, never reused) before the operation
that may need one runs, because allocation is I/O and operations are not.

A timer task sleeps until the coordinator's ``next_deadline`` (at most a second) and runs
``tick``: timed-out transactions are fenced and aborted, idle transactional ids expire.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from functools import partial
from typing import Any, TypeVar

from bayou.core.transactions.coordinator import TransactionCoordinator
from bayou.core.transactions.markers import MarkerWriter
from bayou.core.transactions.model import (
    InitPidResult,
    MarkerJob,
    Result,
    TopicPartition,
    TxnCoordinatorError,
    TxnSettings,
)
from bayou.core.transactions.store import TxnStore
from bayou.errors import ErrorCode
from bayou.storage.engine import StateLog

log = logging.getLogger(__name__)

T = TypeVar("T")
MAX_TIMER_SLEEP_S = 1.0
RETRY_INTERVAL_MS = 1000


class TxnDriver:
    def __init__(
        self,
        settings: TxnSettings,
        clock_ms: Callable[[], int],
        log: StateLog,
        allocate_producer_id: Callable[[], Awaitable[int]],
        markers: MarkerWriter,
    ) -> None:
        self.coordinator = TransactionCoordinator(settings)
        self.store = TxnStore(log)
        self.clock_ms = clock_ms
        self.allocate_producer_id = allocate_producer_id
        self.markers = markers
        self._jobs: dict[str, tuple[MarkerJob, asyncio.Task[bool]]] = {}
        self._retry: dict[str, tuple[MarkerJob, frozenset[TopicPartition], int]] = {}
        self._wake: asyncio.Event | None = None
        self._task: asyncio.Task[None] | None = None
        self._closed = False
        #: whether the timers may act: in a cluster, while this broker's own lease runs
        self.active: Callable[[], bool] = lambda: True

    # ------------------------------------------------------------------ lifecycle

    async def open(self) -> int:
        """Replay the state log; returns how many records were applied."""
        return self.coordinator.load(await self.store.records())

    async def start(self) -> None:
        """Start the timers and complete every transaction a crash left decided."""
        self._wake = asyncio.Event()
        self._task = asyncio.create_task(self._timers())
        for job in self.coordinator.pending_markers():
            log.info(
                "completing transaction %r (%s) left decided by the last run",
                job.transactional_id,
                "commit" if job.commit else "abort",
            )
            self._launch(job, job.partitions)

    async def follow(self, owns: Callable[[str], bool], *, load: bool) -> None:
        """The cluster changed: forget the transactional ids this broker no longer
        coordinates, and (``load``) replay the ones it gained from the state log, completing
        the transactions they left decided."""
        txns = self.coordinator.txns
        for tid in [tid for tid in txns if not owns(tid)]:
            del txns[tid]
        for tid in [tid for tid in self._retry if not owns(tid)]:
            del self._retry[tid]  # its new coordinator writes the markers left
        if not load:
            return
        held = set(txns)
        records = await self.store.records()
        held |= set(txns)
        gained = [r for r in records if r.transactional_id not in held and owns(r.transactional_id)]
        self.coordinator.load(gained)
        ids = {r.transactional_id for r in gained}
        for job in self.coordinator.pending_markers():
            if job.transactional_id in ids:
                self._launch(job, job.partitions)

    def shutdown(self) -> None:
        """Refuse new work and stop the timers (marker jobs in flight finish)."""
        self._closed = True
        if self._task is not None:
            self._task.cancel()

    async def drain(self, timeout_s: float) -> None:
        """Wait (bounded) for marker jobs in flight; what is left is completed on restart."""
        tasks = [task for _job, task in self._jobs.values()]
        if tasks:
            await asyncio.wait(tasks, timeout=timeout_s)

    def read(self) -> TransactionCoordinator:
        """The coordinator, for operations that only read."""
        return self.coordinator

    # ------------------------------------------------------------------ operations

    async def run(self, op: Callable[[int], Result[T]]) -> T:
        """Run ``op(now)``, make its records durable, start its markers; its answer."""
        result = await self._run(op)
        assert result.response is not None
        return result.response

    async def _run(self, op: Callable[[int], Result[T]]) -> Result[T]:
        if self._closed:
            raise TxnCoordinatorError(ErrorCode.COORDINATOR_NOT_AVAILABLE)
        result = op(self.clock_ms())
        await self._settle(result)
        return result

    async def init_producer_id(
        self, transactional_id: str, timeout_ms: int, expected: tuple[int, int] | None
    ) -> InitPidResult:
        coordinator = self.coordinator
        answer = InitPidResult(ErrorCode.CONCURRENT_TRANSACTIONS)
        for _attempt in range(2):
            fresh = None
            if coordinator.valid_timeout(timeout_ms) and coordinator.wants_producer_id(
                transactional_id
            ):
                fresh = await self.allocate_producer_id()
            result = await self._run(
                partial(self._init_op, transactional_id, timeout_ms, expected, fresh)
            )
            assert result.response is not None
            answer = result.response
            if not answer.fenced:
                return answer
            await self._wait_jobs(result.markers)
        return InitPidResult(answer.error)

    def _init_op(
        self,
        transactional_id: str,
        timeout_ms: int,
        expected: tuple[int, int] | None,
        fresh: int | None,
        now: int,
    ) -> Result[InitPidResult]:
        return self.coordinator.init_producer_id(now, transactional_id, timeout_ms, expected, fresh)

    async def end_txn(
        self, transactional_id: str, producer_id: int, producer_epoch: int, commit: bool
    ) -> ErrorCode:
        def op(now: int) -> Result[ErrorCode]:
            return self.coordinator.end_txn(
                now, transactional_id, producer_id, producer_epoch, commit
            )

        result = await self._run(op)
        await self._wait_jobs(result.markers)
        assert result.response is not None
        return result.response

    async def _wait_jobs(self, jobs: list[MarkerJob]) -> None:
        for job in jobs:
            running = self._jobs.get(job.transactional_id)
            if running is not None:
                with contextlib.suppress(Exception):
                    await asyncio.shield(running[1])

    async def _settle(self, result: Result[Any]) -> None:
        if result.records:
            await self.store.append(result.records)
        for job in result.markers:
            self._launch(job, job.partitions)
        if self._wake is not None:
            self._wake.set()

    # ------------------------------------------------------------------ markers

    def _launch(self, job: MarkerJob, partitions: frozenset[TopicPartition]) -> None:
        running = self._jobs.get(job.transactional_id)
        if running is not None and not running[1].done() and running[0] == job:
            return
        self._retry.pop(job.transactional_id, None)
        task = asyncio.ensure_future(self._finish(job, partitions))
        self._jobs[job.transactional_id] = (job, task)
        task.add_done_callback(partial(self._forget, job.transactional_id))

    def _forget(self, transactional_id: str, task: asyncio.Task[bool]) -> None:
        running = self._jobs.get(transactional_id)
        if running is not None and running[1] is task:
            del self._jobs[transactional_id]

    async def _finish(self, job: MarkerJob, partitions: frozenset[TopicPartition]) -> bool:
        try:
            done = await self.markers.write(job, partitions)
        except Exception:
            log.exception("transaction %r: writing markers failed", job.transactional_id)
            done = set()
        left = partitions - done
        if left:
            due = self.clock_ms() + RETRY_INTERVAL_MS
            self._retry[job.transactional_id] = (job, frozenset(left), due)
            return False
        await self._settle(self.coordinator.complete(self.clock_ms(), job))
        return True

    # ------------------------------------------------------------------ timers

    async def _timers(self) -> None:
        assert self._wake is not None
        coordinator = self.coordinator
        await self._settle(coordinator.tick(self.clock_ms()))
        # not ``while True``: Python 3.11's wait_for may swallow a cancellation that arrives
        # as the event is set, so the flag ends the loop
        while not self._closed:
            now = self.clock_ms()
            deadlines = [
                d
                for d in (
                    coordinator.next_deadline(),
                    *(due for _j, _p, due in self._retry.values()),
                )
                if d is not None
            ]
            sleep_s = (min(deadlines) - now) / 1000 if deadlines else MAX_TIMER_SLEEP_S
            self._wake.clear()
            if sleep_s > 0:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), min(sleep_s, MAX_TIMER_SLEEP_S))
            now = self.clock_ms()
            if not self.active():  # a cluster member that lost its lease: hands off
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), MAX_TIMER_SLEEP_S)
                continue
            try:
                deadline = coordinator.next_deadline()
                if deadline is not None and deadline <= now:
                    await self._settle(coordinator.tick(now))
                for tid, (job, left, due) in list(self._retry.items()):
                    if due <= now:
                        self._launch(job, left)
                        if self._retry.get(tid, (None, None, None))[0] is job:
                            del self._retry[tid]
            except Exception:
                log.exception("transaction coordinator timers failed")
