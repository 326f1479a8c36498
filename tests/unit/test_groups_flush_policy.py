"""The group log follows a flush policy like a topic's: by default a commit is answered once
written (no fsync); in strict mode (flush.messages = 1) only after its fsync."""

from __future__ import annotations

import asyncio
from pathlib import Path

from bayou.broker.groups import GroupDriver, GroupSettings, OffsetCommit
from bayou.config import internal_log_config
from bayou.errors import ErrorCode
from bayou.storage.flusher import GroupFlusher


async def commit_once(data_dir: Path, flush_messages: int) -> tuple[int, int]:
    """Commit one offset; return (log end offset, recovery point) as the answer arrives."""
    driver = GroupDriver(
        data_dir,
        GroupSettings(),
        lambda: 1_000,
        GroupFlusher(),
        internal_log_config(flush_messages=flush_messages),
    )
    driver.open()
    try:
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
        log = driver.store.log
        assert log is not None
        return log.log_end_offset, log.recovery_point
    finally:
        driver.close()


def test_default_policy_answers_before_any_fsync(tmp_path: Path) -> None:
    end, durable = asyncio.run(commit_once(tmp_path, flush_messages=2**63 - 1))
    assert end > 0 and durable == 0  # written to the OS, not yet fsynced


def test_strict_policy_fsyncs_before_the_answer(tmp_path: Path) -> None:
    end, durable = asyncio.run(commit_once(tmp_path, flush_messages=1))
    assert end > 0 and durable == end
