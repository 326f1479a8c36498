"""Fetch never answers records past the high watermark it reports.

A cold read runs in a worker thread (``BrokerState.read_records``) while the event loop goes on
appending; the partition's high watermark in the response must cover every record the read
returned, as in Kafka, where a fetch never returns data above the high watermark.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

from bayou.broker.context import BrokerState, RequestContext
from bayou.broker.handlers.fetch import handle_fetch
from bayou.config import BrokerConfig
from bayou.protocol.kafka import RequestHeader
from bayou.protocol.kafka import messages as m
from bayou.protocol.kafka import records as R
from bayou.storage import LogManager, PartitionLog
from bayou.storage.file_records import FileRecords
from tests.unit.test_storage_log import batch


def test_high_watermark_covers_records_read_while_appends_land(tmp_path: Path) -> None:
    logs = LogManager(tmp_path / "data", {})
    logs.open()
    try:
        state = BrokerState(BrokerConfig(data_dir=tmp_path / "data"), logs)
        logs.create_topic("t", 1, {})
        state.append_now("t", 0, batch(3))
        plain_read = state.read_records

        async def read_while_appending(log_: PartitionLog, offset: int, max_bytes: int, *,
                                       min_one: bool) -> bytes | FileRecords:
            state.append_now("t", 0, batch(2))  # lands while the worker thread reads
            return await plain_read(log_, offset, max_bytes, min_one=min_one)

        state.read_records = read_while_appending  # type: ignore[method-assign]
        request = m.FetchRequest(
            max_wait_ms=0, min_bytes=1, max_bytes=1 << 20,
            topics=[m.FetchRequestFetchTopic(topic="t", partitions=[
                m.FetchRequestFetchPartition(partition=0, fetch_offset=0,
                                             partition_max_bytes=1 << 20)])],
        )
        ctx = RequestContext(state, RequestHeader(1, 12, 1, "test"), "peer")
        response = asyncio.run(handle_fetch(ctx, request))
        part = response.responses[0].partitions[0]
        assert part.error_code == 0
        records = bytes(part.records)
        last = max(h.last_offset for _, h in R.iter_batches(records))
        assert part.high_watermark > last
        assert part.last_stable_offset == part.high_watermark
    finally:
        logs.close()
