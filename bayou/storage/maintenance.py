"""The log-maintenance task: retention and compaction, in a worker thread, periodically.

Every ``interval_ms`` (Kafka's ``log.retention.check.interval.ms``, default 5 minutes) one
round runs ``LogManager.maintain`` through ``asyncio.to_thread``: expired segments are deleted
and compacted topics that are due get a cleaning pass.  The event loop never waits for it;
appends and reads go on meanwhile (the storage takes its partition lock only to swap the
segment list).  ``round()`` runs one at once (tests, the admin API); rounds never overlap.

The engine's internal state logs (``__consumer_offsets``, the MQTT state, …, all
``cleanup.policy=compact``) are not topics of the ``LogManager``; the local engine
``register``s each once opened and ``unregister``s it before closing, and every round cleans
them with the same cleaner as compacted user topics while their owners append on the event
loop thread, exactly as producers do to user topics.

Each round's cleaner is paced (``pacer.Pacer``): while the engine's ``Activity`` shows
appends, a pass works at most ``BUSY_SHARE`` (5 %) of the time, so that produce keeps its
rate.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from dataclasses import dataclass

from bayou.storage.cleaner import MAP_ENTRY_BYTES, CleanStats
from bayou.storage.engine import MaintenanceReport
from bayou.storage.log import PartitionLog
from bayou.storage.manager import LogManager
from bayou.storage.pacer import Activity, Pacer

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class MaintenanceSettings:
    """How often rounds run, and the cleaner's key map (Kafka's names and defaults)."""

    interval_ms: int = 5 * 60 * 1000  # log.retention.check.interval.ms
    dedupe_buffer_size: int = 128 * 1024 * 1024  # log.cleaner.dedupe.buffer.size
    cleaner_enable: bool = True  # log.cleaner.enable


def summary(stats: CleanStats) -> str:
    return (
        f"{stats.bytes_read} → {stats.bytes_written} bytes, {stats.records_kept} of "
        f"{stats.records_read} records kept"
        + (" (key map full: more passes)" if stats.map_full else "")
    )


class LogMaintenance:
    def __init__(
        self,
        logs: LogManager,
        settings: MaintenanceSettings,
        clock_ms: Callable[[], int],
        activity: Activity | None = None,
    ) -> None:
        self.logs = logs
        self.activity = activity or Activity()
        self.interval_s = max(settings.interval_ms, 1) / 1000
        self.map_entries = max(settings.dedupe_buffer_size // MAP_ENTRY_BYTES, 1)
        self.cleaner = settings.cleaner_enable
        self.clock_ms = clock_ms
        self._wake = asyncio.Event()
        self._internal: dict[int, PartitionLog] = {}
        self._running = asyncio.Lock()

    def register(self, log_: PartitionLog) -> None:
        """Have an internal log (not a LogManager topic) retained and cleaned too."""
        self._internal[id(log_)] = log_

    def unregister(self, log_: PartitionLog) -> None:
        """Before closing it (a round already running stops its pass: ``close`` aborts it)."""
        self._internal.pop(id(log_), None)

    @property
    def internal_logs(self) -> list[PartitionLog]:
        return list(self._internal.values())

    def wake(self) -> None:
        self._wake.set()

    async def run(self) -> None:
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), self.interval_s)
            self._wake.clear()
            try:
                await self.round()
            except Exception:
                log.exception("log maintenance failed")

    async def round(self, now: int | None = None) -> list[MaintenanceReport]:
        """One round over every partition and internal log; logs what it did."""
        async with self._running:
            now = self.clock_ms() if now is None else now
            report = await asyncio.to_thread(
                self.logs.maintain,
                now,
                self.map_entries,
                cleaner=self.cleaner,
                internal=self.internal_logs,
                pace=Pacer(self.activity),
            )
        out: list[MaintenanceReport] = []
        for partition, deleted, stats, error in report:
            name = f"{partition.topic}-{partition.index}"
            if error is not None:
                log.error("log maintenance of %s failed: %s", name, error)
            if deleted:
                log.info(
                    "retention deleted %d segment(s) of %s; log start offset %d",
                    deleted,
                    name,
                    partition.log_start_offset,
                )
            cleaned = summary(stats) if stats is not None else None
            if cleaned is not None:
                log.info("cleaned %s: %s", name, cleaned)
            out.append(
                MaintenanceReport(
                    partition.topic,
                    partition.index,
                    deleted,
                    partition.log_start_offset,
                    cleaned,
                    error,
                )
            )
        return out
