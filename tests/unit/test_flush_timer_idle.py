"""The flush.ms timer sleeps while no partition waits for it.

With the default ``flush.ms`` (unlimited) no partition ever joins the local engine's dirty
set, so a timer that woke every ``FLUSH_CHECK_INTERVAL_S`` regardless would fire 20 times a
second for nothing, on an idle broker and between the requests of a busy one.  It must stay
asleep until a partition with a ``flush.ms`` has data, and then still fsync it when due.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from bayou.config import internal_log_config
from bayou.storage import local_engine
from bayou.storage.local_engine import LocalEngine
from bayou.storage.maintenance import MaintenanceSettings
from tests.unit.test_storage_log import batch


def test_the_timer_waits_for_a_dirty_partition_then_flushes_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(local_engine, "FLUSH_CHECK_INTERVAL_S", 0.01)
    engine = LocalEngine(
        tmp_path / "data",
        {},
        internal_config=internal_log_config(),
        maintenance=MaintenanceSettings(),
    )

    async def scenario() -> None:
        await engine.open()
        await engine.start()
        try:
            await engine.create_topic("plain", 1, {})  # flush.ms unlimited
            await engine.partition("plain", 0).append(batch(3))
            await asyncio.sleep(0.3)  # 30 timer periods of doing nothing
            assert engine.flush_checks == 0

            await engine.create_topic("timed", 1, {"flush.ms": "50"})
            log_ = engine.partition("timed", 0).log
            await engine.partition("timed", 0).append(batch(3))
            for _ in range(300):
                if log_.recovery_point == log_.log_end_offset:
                    break
                await asyncio.sleep(0.01)
            assert log_.recovery_point == log_.log_end_offset == 3
            assert engine.flush_checks > 0
        finally:
            await engine.close()

    asyncio.run(scenario())
