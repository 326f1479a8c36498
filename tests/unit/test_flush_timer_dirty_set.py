"""The flush.ms timer forgets partitions with nothing left to flush.

The local engine's dirty set holds the partitions the timer watches.  A partition that the
produce path already fsynced (flush.messages reached) has nothing unflushed, so
``needs_flush`` never turns true for it again: the timer must drop it, or every such
partition — including closed ones of deleted topics — stays referenced and is re-checked
forever.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest

from bayou.config import internal_log_config
from bayou.storage import local_engine
from bayou.storage.local_engine import LocalEngine
from bayou.storage.maintenance import MaintenanceSettings
from tests.unit.test_storage_log import batch


class RecordingSet(set[object]):
    """A set that remembers everything ever added (the timer may drop a member before the
    test looks)."""

    def __init__(self) -> None:
        super().__init__()
        self.ever: set[object] = set()

    def add(self, item: object) -> None:
        self.ever.add(item)
        super().add(item)


def test_a_partition_flushed_by_produce_leaves_the_dirty_set(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(local_engine, "FLUSH_CHECK_INTERVAL_S", 0.01)
    engine = LocalEngine(
        tmp_path / "data",
        {},
        internal_config=internal_log_config(),
        maintenance=MaintenanceSettings(),
    )
    dirty = RecordingSet()
    engine._dirty = dirty  # type: ignore[assignment]  # before the flush timer takes it

    async def scenario() -> None:
        await engine.open()
        await engine.start()
        try:
            await engine.create_topic("t", 1, {"flush.messages": "1", "flush.ms": "3600000"})
            partition = engine.partition("t", 0)
            await partition.append(batch(3))  # fsynced before the ack (flush.messages=1)
            log_ = partition.log
            assert log_.recovery_point == log_.log_end_offset
            assert log_ in dirty.ever  # the timer watched it …
            deadline = time.monotonic() + 20  # the timer runs every 10 ms: a loaded machine
            while log_ in engine._dirty and time.monotonic() < deadline:
                await asyncio.sleep(0.01)
            assert log_ not in engine._dirty  # … and let it go
        finally:
            await engine.close()

    asyncio.run(scenario())
