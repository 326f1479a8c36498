"""The message browser's scan (``bayou/console/scans.py``) over the memory engine: its
bounds, its progress, a cancel, and a browser going away stopping it."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from typing import TypeVar

from bayou.console import scans as messages
from bayou.console.filters import Predicate, parse_filter
from bayou.console.scans import Scan, Scans, open_cursors
from bayou.core import Core, CoreSettings
from bayou.core.cursor import StartSpec
from bayou.protocol.kafka.records import Record, build_batch
from bayou.storage.memory import MemoryEngine

T = TypeVar("T")
TOPIC = "readings"


async def scan(
    core: Core,
    topic: str,
    partitions: list[int],
    start: StartSpec | None,
    predicate: Predicate | None,
    limit: int,
    gone: Callable[[], Awaitable[bool]] | None = None,
    result: Scan | None = None,
) -> Scan:
    cursors = await open_cursors(core, topic, partitions, start, predicate, limit)
    return await messages.scan(cursors, start is None, predicate, limit, gone, result)


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


def test_progress_while_scanning_and_a_cancel_stops_it() -> None:
    async def test(core: Core) -> None:
        registry = Scans()
        scan_id, progress = registry.begin("alice")
        messages.READ_RECORDS = 50
        try:
            predicate = parse_filter("$.n == 7")
            task = asyncio.create_task(
                scan(core, TOPIC, [0, 1], StartSpec.earliest(), predicate, 10, result=progress)
            )
            for _ in range(1000):  # bounded: until the scan is part-way through partition 0
                await asyncio.sleep(0)
                if progress.scanned >= 100:
                    break
            seen = progress.progress()
            assert seen["total"] == 600 and 100 <= seen["done"] < 300 and seen["partition"] == 0
            assert seen["matched"] == 1 and seen["bytes_bound"] == 64 * 1024 * 1024
            assert not registry.cancel(scan_id, "mallory")  # only who started it
            assert registry.cancel(scan_id, "alice")
            found = await asyncio.wait_for(task, 5)
        finally:
            messages.READ_RECORDS = 5_000
            registry.end(scan_id)
        assert found.stopped == "cancelled"
        assert found.scanned < 300  # partition 1 never read
        assert [(p, r.offset) for p, r in found.records] == [(0, 7)]
        assert not registry.cancel(scan_id, "alice") and len(registry) == 0

    with_core(300, test)
