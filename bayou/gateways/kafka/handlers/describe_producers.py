"""DescribeProducers (key 61), v0: the idempotent producers a partition knows.

Answered from each partition's producer state (``bayou/storage/producer_state.py``) — the
same state that deduplicates retried batches: per producer id its epoch, the last sequence
it wrote and the max timestamp of its last batch (-1 when unknown: that timestamp is kept in
memory, so a producer restored from a snapshot shows -1 until it writes again), the epoch of
the coordinator that wrote its last transaction marker, and the first offset of its open
transaction (-1: none).  An unknown topic or partition answers UNKNOWN_TOPIC_OR_PARTITION.
v0 is flexible.
"""

from __future__ import annotations

from bayou.errors import ErrorCode, KafkaError
from bayou.gateways.kafka.context import RequestContext
from bayou.gateways.kafka.handlers.registry import handles
from bayou.protocol.kafka import messages as m


def _partition(
    ctx: RequestContext, topic: str, index: int
) -> m.DescribeProducersResponsePartitionResponse:
    try:
        partition = ctx.core.partition(topic, index)
    except KafkaError as exc:
        return m.DescribeProducersResponsePartitionResponse(
            partition_index=index, error_code=exc.code, error_message=exc.message
        )
    return m.DescribeProducersResponsePartitionResponse(
        partition_index=index,
        error_code=ErrorCode.NONE,
        active_producers=[
            m.DescribeProducersResponseProducerState(
                producer_id=pid,
                producer_epoch=entry.epoch,
                last_sequence=entry.last_seq,
                last_timestamp=entry.last_timestamp,
                coordinator_epoch=entry.coordinator_epoch,
                current_txn_start_offset=entry.current_txn_first_offset,
            )
            for pid, entry in sorted(partition.producers().items())
        ],
    )


@handles(61, 0, 0)
async def handle_describe_producers(
    ctx: RequestContext, request: m.DescribeProducersRequest
) -> m.DescribeProducersResponse:
    return m.DescribeProducersResponse(
        topics=[
            m.DescribeProducersResponseTopicResponse(
                name=t.name, partitions=[_partition(ctx, t.name, p) for p in t.partition_indexes]
            )
            for t in request.topics
        ]
    )
