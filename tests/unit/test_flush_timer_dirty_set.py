"""The flush.ms timer forgets partitions with nothing left to flush.

``BrokerState.dirty`` holds the partitions the timer watches.  A partition that the produce
path already fsynced (flush.messages reached) has nothing unflushed, so ``needs_flush`` never
turns true for it again: the timer must drop it, or every such partition — including closed
ones of deleted topics — stays referenced and is re-checked forever.
"""

from __future__ import annotations

import asyncio
import contextlib
from pathlib import Path
from types import SimpleNamespace

import pytest

from bayou.broker import server
from bayou.broker.context import BrokerState
from bayou.config import BrokerConfig
from bayou.storage import LogManager
from tests.unit.test_storage_log import batch


def test_a_partition_flushed_by_produce_leaves_the_dirty_set(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(server, "FLUSH_CHECK_INTERVAL_S", 0.01)
    logs = LogManager(tmp_path / "data", {})
    logs.open()
    try:
        state = BrokerState(BrokerConfig(data_dir=tmp_path / "data"), logs)
        logs.create_topic("t", 1, {"flush.messages": "1", "flush.ms": "3600000"})

        async def scenario() -> None:
            await state.append("t", 0, batch(3))  # fsynced before the ack (flush.messages=1)
            log_ = logs.partition("t", 0)
            assert log_.recovery_point == log_.log_end_offset
            assert log_ in state.dirty
            timer = asyncio.create_task(
                server.Broker._flush_due_partitions(SimpleNamespace(state=state))  # type: ignore[arg-type]
            )
            await asyncio.sleep(0.1)
            timer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await timer
            assert log_ not in state.dirty

        asyncio.run(scenario())
    finally:
        logs.close()
