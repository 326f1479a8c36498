"""The message browser's scan (``bayou/console/messages.py``) over the memory engine: its
bounds, and a browser going away stopping it."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from typing import TypeVar

from bayou.console import messages
from bayou.console.filters import parse_filter
from bayou.console.messages import scan
from bayou.core import Core, CoreSettings
from bayou.core.cursor import StartSpec
from bayou.protocol.kafka.records import Record, build_batch
from bayou.storage.memory import MemoryEngine

T = TypeVar("T")
TOPIC = "readings"


def with_core(records: int, test: Callable[[Core], Awaitable[T]]) -> T:
    """``test(core)`` with ``TOPIC`` (2 partitions) holding ``records`` records per partition
    in batches of 100, values ``{"n": i}``."""

    async def main() -> T:
        engine = MemoryEngine({})
        await engine.open()
        core = Core(engine, CoreSettings())
        await core.start()
        try:
            await core.create_topic(TOPIC, 2, {})
            for p in range(2):
                for start in range(0, records, 100):
                    batch = [
                        Record(1000 + i, b"k", json.dumps({"n": i}).encode(), [])
                        for i in range(start, min(start + 100, records))
                    ]
                    await core.append(TOPIC, p, build_batch(batch))
            return await test(core)
        finally:
            await core.close()
            await engine.close()

    return asyncio.run(main())


def test_newest_first_and_forward_from_the_beginning() -> None:
    async def test(core: Core) -> None:
        newest = await scan(core, TOPIC, [0, 1], None, None, 4)
        assert [(p, r.offset) for p, r in newest.records] == [
            (1, 299),
            (0, 299),
            (1, 298),
            (0, 298),
        ]
        first = await scan(core, TOPIC, [0, 1], StartSpec.earliest(), None, 3)
        assert [(p, r.offset) for p, r in first.records] == [(0, 0), (1, 0), (0, 1)]
        assert first.stopped == ""

    with_core(300, test)


def test_filtered_scan_is_bounded_in_bytes() -> None:
    async def test(core: Core) -> None:
        predicate = parse_filter("$.n == -1")  # matches nothing: reads until a bound
        messages.SCAN_BYTES = 2000
        messages.READ_BYTES = 500
        try:
            found = await scan(core, TOPIC, [0, 1], StartSpec.earliest(), predicate, 10)
        finally:
            messages.SCAN_BYTES, messages.READ_BYTES = 64 * 1024 * 1024, 1024 * 1024
        assert found.stopped == "bytes" and found.records == []
        assert 2000 <= found.scanned_bytes < 4000 and found.scanned < 600

    with_core(300, test)


def test_a_browser_going_away_stops_the_scan() -> None:
    asked = 0

    async def gone() -> bool:
        nonlocal asked
        asked += 1
        return asked > 2

    async def test(core: Core) -> None:
        messages.READ_BYTES = 500
        try:
            predicate = parse_filter("$.n == -1")
            found = await scan(core, TOPIC, [0, 1], StartSpec.earliest(), predicate, 10, gone)
        finally:
            messages.READ_BYTES = 1024 * 1024
        assert found.stopped == "gone"
        assert 0 < found.scanned < 600

    with_core(300, test)
