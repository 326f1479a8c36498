"""Every storage engine, behind one fixture: the contract suite runs unchanged on each.

``engine_factory(topic_defaults)`` opens a fresh engine of the parametrised kind with a fake
clock (``clock.now`` in ms, moved by the tests); the test body is a coroutine run on its
own event loop by ``run``.  Adding an engine (S3 next) means adding a branch here.  The
PostgreSQL engine runs on the session's server (``postgres_server``), a database per test;
a second ``make`` in one test opens the same database (a restart).
"""

from __future__ import annotations

import asyncio
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

T = TypeVar("T")
ENGINES = ["local", "memory", "postgres"]
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
    if kind == "postgres":
        database = request.getfixturevalue("postgres_server").create_database()

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
