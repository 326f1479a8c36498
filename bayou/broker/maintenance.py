"""The log-maintenance task: retention and compaction, in a worker thread, periodically.

Every ``log_retention_check_interval_ms`` (Kafka's default: 5 minutes) one round runs
``LogManager.maintain`` through ``asyncio.to_thread``: expired segments are deleted and
compacted topics that are due get a cleaning pass.  The event loop never waits for it;
appends and reads go on meanwhile (the storage takes its partition lock only to swap the
segment list).  ``wake()`` starts a round at once (tests, DeleteRecords).  Rounds never
overlap.

The broker's internal logs (the group coordinator's ``__consumer_offsets``, the MQTT
gateway's ``__mqtt_sessions`` and ``__mqtt_retained``, all ``cleanup.policy=compact``) are
not topics of the ``LogManager``; their owners ``register`` them once opened and
``unregister`` them before closing, and every round cleans them with the same cleaner as
compacted user topics.  Their owners append on the event loop thread meanwhile, exactly as
producers do to user topics.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time

from bayou.config import BrokerConfig
from bayou.storage import LogManager, PartitionLog
from bayou.storage.cleaner import MAP_ENTRY_BYTES

log = logging.getLogger(__name__)


class LogMaintenance:
    def __init__(self, logs: LogManager, config: BrokerConfig) -> None:
        self.logs = logs
        self.interval_s = max(config.log_retention_check_interval_ms, 1) / 1000
        self.map_entries = max(config.log_cleaner_dedupe_buffer_size // MAP_ENTRY_BYTES, 1)
        self.cleaner = config.log_cleaner_enable
        self._wake = asyncio.Event()
        self._internal: dict[int, PartitionLog] = {}

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
            now = time.time_ns() // 1_000_000
            try:
                report = await asyncio.to_thread(
                    self.logs.maintain, now, self.map_entries, cleaner=self.cleaner,
                    internal=self.internal_logs,
                )
            except Exception:
                log.exception("log maintenance failed")
                continue
            for partition, deleted, stats, error in report:
                name = f"{partition.topic}-{partition.index}"
                if error is not None:
                    log.error("log maintenance of %s failed: %s", name, error)
                if deleted:
                    log.info("retention deleted %d segment(s) of %s; log start offset %d",
                             deleted, name, partition.log_start_offset)
                if stats is not None:
                    log.info("cleaned %s: %d → %d bytes, %d of %d records kept%s", name,
                             stats.bytes_read, stats.bytes_written, stats.records_kept,
                             stats.records_read, " (key map full: more passes)"
                             if stats.map_full else "")
