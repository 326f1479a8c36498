"""OffsetForLeaderEpoch (key 23), v0-v4: the end offset of a leader epoch.

Clients ask it to validate their position after a leader change or when resuming from a
committed offset that carries a leader epoch (KIP-320).  Bayou is a single node that has
always led every partition in epoch 0 (Metadata and ListOffsets say so), so: a requested
epoch of 0 (or any lower) ends at the log end offset, answered as epoch 0; a requested epoch
above 0 has no end offset (-1, -1), as Kafka answers for an epoch it never had.  v2+ carry
the client's ``current_leader_epoch``: above 0 → UNKNOWN_LEADER_EPOCH, -1 → not checked.
v3+ carry a replica id (followers do not exist here; answered the same).  v4 is flexible.
"""

from __future__ import annotations

from bayou.errors import ErrorCode, KafkaError
from bayou.gateways.kafka.context import RequestContext
from bayou.gateways.kafka.handlers.registry import handles
from bayou.protocol.kafka import messages as m

LEADER_EPOCH = 0


@handles(23, 0, 4)
async def handle_offset_for_leader_epoch(
    ctx: RequestContext, request: m.OffsetForLeaderEpochRequest
) -> m.OffsetForLeaderEpochResponse:
    core = ctx.core
    topics: list[m.OffsetForLeaderEpochResponseOffsetForLeaderTopicResult] = []
    for topic in request.topics:
        partitions: list[m.OffsetForLeaderEpochResponseEpochEndOffset] = []
        topics.append(
            m.OffsetForLeaderEpochResponseOffsetForLeaderTopicResult(
                topic=topic.topic, partitions=partitions
            )
        )
        for p in topic.partitions:
            answer = m.OffsetForLeaderEpochResponseEpochEndOffset(partition=p.partition)
            partitions.append(answer)
            try:
                log = core.partition(topic.topic, p.partition)
            except KafkaError as exc:
                answer.error_code = exc.code
                continue
            if ctx.version >= 2 and p.current_leader_epoch > LEADER_EPOCH:
                answer.error_code = ErrorCode.UNKNOWN_LEADER_EPOCH
                continue
            if p.leader_epoch <= LEADER_EPOCH:
                answer.leader_epoch = LEADER_EPOCH
                answer.end_offset = log.log_end_offset
    return m.OffsetForLeaderEpochResponse(topics=topics)
