"""The Kafka door's read side of transactions: Fetch at READ_COMMITTED stops at the last
stable offset and names the aborted transactions in what it returns; READ_UNCOMMITTED
returns everything; ListOffsets LATEST at READ_COMMITTED is the last stable offset."""

from __future__ import annotations

import asyncio
from pathlib import Path

from bayou.config import internal_log_config
from bayou.core import Core, CoreSettings
from bayou.gateways.kafka.context import RequestContext
from bayou.gateways.kafka.handlers.fetch import handle_fetch
from bayou.gateways.kafka.handlers.list_offsets import handle_list_offsets
from bayou.gateways.kafka.server import KafkaDoor, KafkaSettings
from bayou.protocol.kafka import RequestHeader
from bayou.protocol.kafka import messages as m
from bayou.protocol.kafka import records as R
from bayou.storage.local_engine import LocalEngine
from bayou.storage.maintenance import MaintenanceSettings
from tests.support.kafka_raw import fetch_request


def txn(pid: int, value: bytes) -> bytes:
    return R.build_batch(
        [R.Record(1000, b"k", value)],
        producer_id=pid,
        producer_epoch=0,
        base_sequence=0,
        is_transactional=True,
    )


def fetch(isolation: int) -> m.FetchRequest:
    return fetch_request("t", isolation=isolation)


def test_read_committed_fetch_and_list_offsets(tmp_path: Path) -> None:
    engine = LocalEngine(
        tmp_path / "data",
        {},
        internal_config=internal_log_config(),
        maintenance=MaintenanceSettings(),
    )
    door = KafkaDoor(Core(engine, CoreSettings()), KafkaSettings())

    async def scenario() -> None:
        await engine.open()
        try:
            await door.core.create_topic("t", 1, {})
            p = engine.partition("t", 0)
            await p.append(txn(1, b"aborted"))  # 0
            await p.write_marker(1, 0, False, 0)  # 1
            await p.append(R.build_batch([R.Record(1000, None, b"plain")]))  # 2
            await p.append(txn(2, b"open"))  # 3: still open
            ctx = RequestContext(door, RequestHeader(1, 12, 1, "t"), "peer")
            committed = (await handle_fetch(ctx, fetch(1))).responses[0].partitions[0]
            assert committed.last_stable_offset == 3 and committed.high_watermark == 4
            assert [
                (a.producer_id, a.first_offset) for a in committed.aborted_transactions or []
            ] == [(1, 0)]
            offsets = [h.base_offset for _p, h in R.iter_batches(bytes(committed.records or b""))]
            assert offsets == [0, 1, 2]  # nothing from the open transaction on
            everything = (await handle_fetch(ctx, fetch(0))).responses[0].partitions[0]
            assert everything.aborted_transactions is None
            assert everything.last_stable_offset == 3
            assert [
                h.base_offset for _p, h in R.iter_batches(bytes(everything.records or b""))
            ] == [0, 1, 2, 3]
            for isolation, latest in ((0, 4), (1, 3)):
                answer = await handle_list_offsets(
                    RequestContext(door, RequestHeader(2, 8, 1, "t"), "peer"),
                    m.ListOffsetsRequest(
                        isolation_level=isolation,
                        topics=[
                            m.ListOffsetsRequestListOffsetsTopic(
                                name="t",
                                partitions=[
                                    m.ListOffsetsRequestListOffsetsPartition(
                                        partition_index=0, timestamp=-1
                                    )
                                ],
                            )
                        ],
                    ),
                )
                assert answer.topics[0].partitions[0].offset == latest
        finally:
            await engine.close()

    asyncio.run(scenario())
