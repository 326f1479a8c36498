"""The local engine with tiered storage, in process, against a real S3 (SeaweedFS): the
core's Cursor reads every record back from offset 0 once only the store has the first
segments, and starts by time and the max-timestamp lookup reach into remote segments."""

from __future__ import annotations

import asyncio
import os
import uuid
from pathlib import Path

import pytest

from bayou.config import internal_log_config, parse_topic_configs
from bayou.core import Cursor, StartSpec, resolve_start
from bayou.protocol.kafka.records import Record, build_batch
from bayou.storage.local_engine import LocalEngine
from bayou.storage.maintenance import MaintenanceSettings
from bayou.storage.tiered.storage import TieredSettings
from tests.support.seaweedfs import SeaweedFS

BASE_TS = 1_700_000_000_000


def engine_for(tmp_path: Path, s3: SeaweedFS) -> LocalEngine:
    url = s3.url(f"engine-{uuid.uuid4().hex[:8]}", chunk_bytes=4096, cache_bytes=16384)
    return LocalEngine(
        tmp_path / "data",
        parse_topic_configs({}),
        internal_config=internal_log_config(),
        maintenance=MaintenanceSettings(interval_ms=3_600_000),
        clock_ms=lambda: BASE_TS + 10_000,
        tiered=TieredSettings.from_url(url),
    )


@pytest.fixture
def aws_env(seaweedfs: SeaweedFS, monkeypatch: pytest.MonkeyPatch) -> None:
    for name, value in seaweedfs.env.items():
        monkeypatch.setenv(name, value)


@pytest.mark.usefixtures("aws_env")
def test_cursor_and_time_lookups_over_remote_segments(tmp_path: Path, seaweedfs: SeaweedFS) -> None:
    async def body() -> None:
        engine = engine_for(tmp_path, seaweedfs)
        await engine.open()
        try:
            await engine.create_topic(
                "t",
                1,
                {
                    "remote.storage.enable": "true",
                    "segment.bytes": "3000",
                    "local.retention.bytes": "0",
                },
            )
            p = engine.partition("t", 0)
            for i in range(200):  # the largest timestamp is record 17's: in the first segment
                ts = BASE_TS + (5_000 if i == 17 else i)
                await p.append(build_batch([Record(ts, b"k%d" % i, b"v%d-" % i + b"x" * 80)]))
            await engine.flusher.flush(engine.logs.partition("t", 0))
            assert await engine.tiered.round() >= 5  # type: ignore[union-attr]
            await engine.maintain()
            log = engine.logs.partition("t", 0)
            assert log.local_start_offset > 150 and p.log_start_offset == 0

            cursor = Cursor(engine, "t", 0, 0)
            got = []
            for _ in range(400):
                records = await cursor.read(max_bytes=500)
                if not records:
                    break
                got += records
            assert [(r.offset, r.key, r.value[:5]) for r in got] == [
                (i, b"k%d" % i, (b"v%d-" % i + b"xxxx")[:5]) for i in range(200)
            ]
            # the first record (in offset order) at or after the time: exact, from remote data
            assert await resolve_start(p, StartSpec("timestamp", BASE_TS + 10)) == 10
            assert await p.offset_for_timestamp(BASE_TS + 4_000) == (17, BASE_TS + 5_000)
            assert await p.offset_for_timestamp(BASE_TS + 6_000) is None
            assert await p.max_timestamp() == (17, BASE_TS + 5_000)
        finally:
            await engine.close()

    asyncio.run(body())
    assert os.listdir(tmp_path / "data" / "tiered-cache")  # reads went through the cache
