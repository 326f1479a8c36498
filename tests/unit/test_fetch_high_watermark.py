"""Fetch never answers records past the high watermark it reports.

A cold read runs in a worker thread (the engine's ``Partition.fetch``) while the event loop
goes on appending; the partition's high watermark in the response must cover every record
the read returned, as in Kafka, where a fetch never returns data above the high watermark.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

from bayou.config import internal_log_config
from bayou.core import Core, CoreSettings
from bayou.gateways.kafka.context import RequestContext
from bayou.gateways.kafka.handlers.fetch import handle_fetch
from bayou.gateways.kafka.server import KafkaDoor, KafkaSettings
from bayou.protocol.kafka import RequestHeader
from bayou.protocol.kafka import messages as m
from bayou.protocol.kafka import records as R
from bayou.storage.engine import Buffer, RecordSet
from bayou.storage.local_engine import LocalEngine, LocalPartition
from bayou.storage.maintenance import MaintenanceSettings
from tests.unit.test_storage_log import batch


def test_high_watermark_covers_records_read_while_appends_land(tmp_path: Path) -> None:
    engine = LocalEngine(
        tmp_path / "data",
        {},
        internal_config=internal_log_config(),
        maintenance=MaintenanceSettings(),
    )
    core = Core(engine, CoreSettings())
    door = KafkaDoor(core, KafkaSettings())

    async def scenario() -> m.FetchResponsePartitionData:
        await engine.open()
        try:
            await core.create_topic("t", 1, {})
            partition = engine.partition("t", 0)
            await partition.append(batch(3))
            plain_fetch = LocalPartition.fetch

            async def fetch_while_appending(
                self: LocalPartition,
                offset: int,
                max_bytes: int,
                *,
                min_one: bool,
                max_offset: int | None = None,
            ) -> Buffer | RecordSet:
                await self.append(batch(2))  # lands while the worker thread reads
                return await plain_fetch(
                    self, offset, max_bytes, min_one=min_one, max_offset=max_offset
                )

            LocalPartition.fetch = fetch_while_appending  # type: ignore[method-assign]
            try:
                request = m.FetchRequest(
                    max_wait_ms=0,
                    min_bytes=1,
                    max_bytes=1 << 20,
                    topics=[
                        m.FetchRequestFetchTopic(
                            topic="t",
                            partitions=[
                                m.FetchRequestFetchPartition(
                                    partition=0, fetch_offset=0, partition_max_bytes=1 << 20
                                )
                            ],
                        )
                    ],
                )
                ctx = RequestContext(door, RequestHeader(1, 12, 1, "test"), "peer")
                response = await handle_fetch(ctx, request)
            finally:
                LocalPartition.fetch = plain_fetch  # type: ignore[method-assign]
            return response.responses[0].partitions[0]
        finally:
            await engine.close()

    part = asyncio.run(scenario())
    assert part.error_code == 0
    records = bytes(part.records or b"")
    last = max(h.last_offset for _, h in R.iter_batches(records))
    assert part.high_watermark > last
    assert part.last_stable_offset == part.high_watermark
