"""OffsetForLeaderEpoch (key 23), v0-v4: the end offset of a leader epoch.

Clients ask it to validate their position after a leader change or when resuming from a
committed offset that carries a leader epoch (KIP-320).  A partition's current epoch is its
leader's (``Core.cluster``: 0 on a broker alone, the claimed epoch in a cluster).  Logs are
never truncated — a new leader takes over the very same rows of the shared engine — so no
epoch ever diverged: a requested epoch up to the current one ends at the log end offset
(answered with the requested epoch, the current one for -1); an epoch above it has no end
offset (-1, -1), as Kafka answers for an epoch it never had.  Only the leader answers
(NOT_LEADER_OR_FOLLOWER elsewhere).  v2+ carry the client's ``current_leader_epoch``: newer
than the broker's → UNKNOWN_LEADER_EPOCH (its Metadata is ahead of ours), older →
FENCED_LEADER_EPOCH (it refreshes), -1 → not checked.  v3+ carry a replica id (followers do
not exist here; answered the same).  v4 is flexible.
"""

from __future__ import annotations

from bayou.errors import ErrorCode, KafkaError, NotLeaderOrFollower
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
                if not core.leads(topic.topic, p.partition):
                    raise NotLeaderOrFollower(f"{topic.topic}-{p.partition}: not the leader")
            except KafkaError as exc:
                answer.error_code = exc.code
                continue
            current = (
                LEADER_EPOCH
                if topic.topic in core.internal_topics()
                else core.cluster.leadership(topic.topic, p.partition).epoch
            )
            if ctx.version >= 2 and p.current_leader_epoch > current:
                answer.error_code = ErrorCode.UNKNOWN_LEADER_EPOCH
                continue
            if ctx.version >= 2 and 0 <= p.current_leader_epoch < current:
                answer.error_code = ErrorCode.FENCED_LEADER_EPOCH
                continue
            if p.leader_epoch <= current:
                answer.leader_epoch = p.leader_epoch if p.leader_epoch >= 0 else current
                answer.end_offset = log.log_end_offset
    return m.OffsetForLeaderEpochResponse(topics=topics)
