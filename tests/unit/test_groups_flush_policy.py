"""The group log follows a flush policy like a topic's: by default a commit is answered once
written (no fsync); in strict mode (flush.messages = 1) only after its fsync."""

from __future__ import annotations

import asyncio
from pathlib import Path

from bayou.config import internal_log_config
from bayou.core.groups import GroupDriver, GroupSettings, OffsetCommit
from bayou.errors import ErrorCode
from bayou.storage.local_engine import LocalEngine, LocalStateLog
from bayou.storage.maintenance import MaintenanceSettings


async def commit_once(data_dir: Path, flush_messages: int) -> tuple[int, int]:
    """Commit one offset; return (log end offset, recovery point) as the answer arrives."""
    engine = LocalEngine(
        data_dir,
        {},
        internal_config=internal_log_config(flush_messages=flush_messages),
        maintenance=MaintenanceSettings(),
    )
    await engine.open()
    try:
        state_log = await engine.state.open_log("__consumer_offsets", public=True)
        assert isinstance(state_log, LocalStateLog)
        driver = GroupDriver(GroupSettings(), lambda: 1_000, state_log)
        await driver.open()
        answer = await driver.run(
            lambda now, _token: driver.coordinator.commit_offsets(
                now,
                group_id="g",
                generation=-1,
                member_id="",
                instance_id=None,
                offsets=[OffsetCommit("t", 0, 42)],
            )
        )
        assert answer == [ErrorCode.NONE]
        return state_log.log.log_end_offset, state_log.log.recovery_point
    finally:
        await engine.close()


def test_default_policy_answers_before_any_fsync(tmp_path: Path) -> None:
    end, durable = asyncio.run(commit_once(tmp_path, flush_messages=2**63 - 1))
    assert end > 0 and durable == 0  # written to the OS, not yet fsynced


def test_strict_policy_fsyncs_before_the_answer(tmp_path: Path) -> None:
    end, durable = asyncio.run(commit_once(tmp_path, flush_messages=1))
    assert end > 0 and durable == end
