"""ListOffsets (key 2), v1-v8: earliest, latest, max-timestamp and by-timestamp lookups.

Special timestamps: -1 latest (the high watermark; at READ_COMMITTED the last stable
offset), -2 earliest (log start), -3 the record with the largest timestamp (v7+), -4 earliest
local (v8+; all data is local, so log start).  A timestamp >= 0 finds the first record whose
timestamp is at least that, through the time index; none → offset -1, timestamp -1.  At
READ_COMMITTED (v2+) nothing at or past the last stable offset is answered, as Kafka does.
v0's multi-offset form is not served.
"""

from __future__ import annotations

from bayou.core.types import Partition
from bayou.errors import ErrorCode, KafkaError, NotLeaderOrFollower
from bayou.gateways.kafka.context import RequestContext
from bayou.gateways.kafka.handlers.registry import handles
from bayou.protocol.kafka import messages as m

LATEST = -1
EARLIEST = -2
MAX_TIMESTAMP = -3
EARLIEST_LOCAL = -4
READ_COMMITTED = 1


async def lookup(
    partition: Partition, timestamp: int, *, committed: bool = False
) -> tuple[int, int]:
    """(offset, timestamp) for one ListOffsets query.  Lookups by time read the indexes and
    decode a batch, possibly from cold segments: the engine does them off the event loop."""
    fetchable = partition.last_stable_offset if committed else partition.log_end_offset
    if timestamp == LATEST:
        return fetchable, -1
    if timestamp in (EARLIEST, EARLIEST_LOCAL):
        return partition.log_start_offset, -1
    if timestamp == MAX_TIMESTAMP:
        found = await partition.max_timestamp()
    elif timestamp < 0:
        raise KafkaError(f"unknown special timestamp {timestamp}", ErrorCode.INVALID_REQUEST)
    else:
        found = await partition.offset_for_timestamp(timestamp)
    if found is None or found[0] >= fetchable:
        return -1, -1
    return found


@handles(2, 1, 8)
async def handle_list_offsets(
    ctx: RequestContext, request: m.ListOffsetsRequest
) -> m.ListOffsetsResponse:
    core = ctx.core
    committed = request.isolation_level == READ_COMMITTED
    topics: list[m.ListOffsetsResponseListOffsetsTopicResponse] = []
    for topic in request.topics:
        partitions: list[m.ListOffsetsResponseListOffsetsPartitionResponse] = []
        topics.append(
            m.ListOffsetsResponseListOffsetsTopicResponse(name=topic.name, partitions=partitions)
        )
        for p in topic.partitions:
            try:
                partition = core.partition(topic.name, p.partition_index)
                if not core.leads(topic.name, p.partition_index):
                    raise NotLeaderOrFollower(
                        f"{topic.name}-{p.partition_index} is led by another broker"
                    )
                offset, timestamp = await lookup(
                    partition,
                    p.timestamp,
                    committed=committed,
                )
            except KafkaError as exc:
                partitions.append(
                    m.ListOffsetsResponseListOffsetsPartitionResponse(
                        partition_index=p.partition_index, error_code=exc.code
                    )
                )
                continue
            partitions.append(
                m.ListOffsetsResponseListOffsetsPartitionResponse(
                    partition_index=p.partition_index,
                    error_code=ErrorCode.NONE,
                    timestamp=timestamp,
                    offset=offset,
                    leader_epoch=core.cluster.leadership(topic.name, p.partition_index).epoch,
                )
            )
    return m.ListOffsetsResponse(topics=topics)
