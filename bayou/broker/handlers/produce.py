"""Produce (key 0), v3-v11 served, v0-v2 advertised and refused.

Each partition's bytes go to ``PartitionLog.append`` untouched apart from the base-offset
patch (storage validates framing and CRC32C, checks idempotent sequences, appends).  Versions
0-2 are advertised as Kafka 4 does — older librdkafka turns compression off when the range
starts above 2 (KAFKA-18659) — and answered with UNSUPPORTED_VERSION.

acks: 0 sends no response; 1 and -1 (all) answer once the batches are written to the OS,
and, when the topic's ``flush.messages``/``flush.ms`` call for it, after a group-committed
fsync.  There is one replica, so acks=all waits for nothing more than acks=1.  v8+ carry an
error message per partition, and — when a compacted topic refuses records without a key
(INVALID_RECORD, the whole partition's batch) — ``record_errors`` naming each such record,
so the client fails just those and reports the others as failed with them.  Transactional
produce is not served (InitProducerId refuses transactional ids), so no transactional batch
can arrive with a valid producer epoch.
"""

from __future__ import annotations

from collections.abc import Sequence

from bayou.broker.context import RequestContext
from bayou.broker.handlers.registry import handles
from bayou.errors import CorruptMessage, ErrorCode, KafkaError, RecordErrors
from bayou.protocol.kafka import messages as m
from bayou.storage import PartitionLog


def _error(
    index: int, code: ErrorCode, message: str | None,
    record_errors: Sequence[tuple[int, str]] = (),
) -> m.ProduceResponsePartitionProduceResponse:
    return m.ProduceResponsePartitionProduceResponse(
        index=index, error_code=code, base_offset=-1, error_message=message,
        record_errors=[
            m.ProduceResponseBatchIndexAndErrorMessage(batch_index=i, batch_index_error_message=t)
            for i, t in record_errors
        ],
    )


@handles(0, 3, 11, advertised_min=0)
async def handle_produce(
    ctx: RequestContext, request: m.ProduceRequest
) -> m.ProduceResponse | None:
    broker = ctx.broker
    acks = request.acks
    refuse: tuple[ErrorCode, str] | None = None
    if ctx.version < 3:
        refuse = (ErrorCode.UNSUPPORTED_VERSION, "Produce v0-v2 are not supported")
    elif acks not in (-1, 0, 1):
        refuse = (ErrorCode.INVALID_REQUIRED_ACKS, f"acks must be -1, 0 or 1, not {acks}")
    to_flush: list[PartitionLog] = []
    topics: list[m.ProduceResponseTopicProduceResponse] = []
    for topic_data in request.topic_data:
        name = topic_data.name
        partitions: list[m.ProduceResponsePartitionProduceResponse] = []
        topics.append(
            m.ProduceResponseTopicProduceResponse(name=name, partition_responses=partitions)
        )
        if refuse is not None:
            partitions.extend(_error(p.index, *refuse) for p in topic_data.partition_data)
            continue
        for data in topic_data.partition_data:
            try:
                if data.records is None or len(data.records) == 0:
                    raise CorruptMessage("empty record set")
                result, needs_flush = broker.append_now(name, data.index, data.records)
            except RecordErrors as exc:
                partitions.append(_error(data.index, exc.code, exc.message, exc.record_errors))
                continue
            except KafkaError as exc:
                partitions.append(_error(data.index, exc.code, exc.message))
                continue
            partitions.append(
                m.ProduceResponsePartitionProduceResponse(
                    index=data.index,
                    error_code=ErrorCode.NONE,
                    base_offset=result.base_offset,
                    log_append_time_ms=result.log_append_time_ms,
                    log_start_offset=result.log_start_offset,
                )
            )
            if needs_flush is not None:
                to_flush.append(needs_flush)
    if to_flush:
        if acks == 0:
            broker.background(broker.make_durable(to_flush))
        else:
            await broker.make_durable(to_flush)
    if acks == 0:
        return None
    return m.ProduceResponse(responses=topics)
