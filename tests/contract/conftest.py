"""Every storage engine, behind one fixture: the contract suite runs unchanged on each.

``engine_factory(topic_defaults)`` opens a fresh engine of the parametrised kind with a fake
clock (``clock.now`` in ms, moved by the tests); the test body is a coroutine run on its
own event loop by ``run``.  Adding an engine means adding a branch here.  The PostgreSQL
engine runs on the session's server (``postgres_server``), a database per test; the
object-storage engine on that and the session's SeaweedFS (``seaweedfs``), a key prefix per
test, flushing every 2 ms; a second ``make`` in one test opens the same database and prefix
(a restart).
"""

from __future__ import annotations

import asyncio
import os
import uuid
from collections.abc import Awaitable, Callable, Iterator, Mapping
from pathlib import Path
from typing import Any, TypeVar

import pytest

from bayou.config import internal_log_config, parse_topic_configs
from bayou.storage.engine import LogEngine
from bayou.storage.local_engine import LocalEngine
from bayou.storage.maintenance import MaintenanceSettings
from bayou.storage.memory import MemoryEngine
from bayou.storage.postgres import PostgresEngine
from bayou.storage.s3 import ObjectEngine, ObjectEngineSettings

T = TypeVar("T")
ENGINES = ["local", "memory", "postgres", "s3"]
START_MS = 1_700_000_000_000


class FakeClock:
    def __init__(self) -> None:
        self.now = START_MS

    def __call__(self) -> int:
        return self.now


def run(coro: Awaitable[T]) -> T:
    async def main() -> T:
        return await coro

    return asyncio.run(main())


EngineFactory = Callable[..., LogEngine]


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture(params=ENGINES)
def engine_factory(
    request: pytest.FixtureRequest, tmp_path: Path, clock: FakeClock
) -> Iterator[EngineFactory]:
    kind = request.param
    database = None
    s3_url = ""
    environ: dict[str, str] = {}
    if kind in ("postgres", "s3"):
        database = request.getfixturevalue("postgres_server").create_database()
    if kind == "s3":
        s3 = request.getfixturevalue("seaweedfs")
        s3_url = s3.url(f"contract-{uuid.uuid4().hex[:12]}", metadata=database, flush_ms=2)
        environ = {**os.environ, **s3.env}

    def make(
        topic_defaults: Mapping[str, Any] | None = None, data_dir: Path | None = None
    ) -> LogEngine:
        defaults = parse_topic_configs(dict(topic_defaults or {}))
        if kind == "local":
            return LocalEngine(
                data_dir or tmp_path / "data",
                defaults,
                internal_config=internal_log_config(),
                maintenance=MaintenanceSettings(interval_ms=3_600_000),
                clock_ms=clock,
            )
        if s3_url:
            return ObjectEngine(
                ObjectEngineSettings.from_url(s3_url),
                (data_dir or tmp_path / "data") / "object-cache",
                defaults,
                internal_config=internal_log_config(),
                maintenance=MaintenanceSettings(interval_ms=3_600_000),
                clock_ms=clock,
                environ=environ,
            )
        if database is not None:
            return PostgresEngine(
                database,
                defaults,
                internal_config=internal_log_config(),
                maintenance=MaintenanceSettings(interval_ms=3_600_000),
                clock_ms=clock,
            )
        return MemoryEngine(defaults, clock_ms=clock, maintenance_interval_ms=3_600_000)

    make.kind = kind  # type: ignore[attr-defined]
    yield make


class Opened:
    """``async with Opened(make) as engine``: an opened engine, closed afterwards."""

    def __init__(self, make: EngineFactory, **kwargs: Any) -> None:
        self.engine = make(**kwargs)

    async def __aenter__(self) -> LogEngine:
        await self.engine.open()
        return self.engine

    async def __aexit__(self, *exc: object) -> None:
        await self.engine.close()
