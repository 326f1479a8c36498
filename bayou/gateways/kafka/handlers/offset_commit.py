"""OffsetCommit (key 8), v0-v9: store a group's consumed positions, durably.

The answer leaves only after the commit is fsynced (group-committed with other writers).
Classic groups check member, generation and instance id (v7+); a commit with generation -1
and no member (v0, admin tools, ``assign()`` consumers) is accepted only while the group has
no members, and creates the group if needed.  Consumer (KIP-848) groups check the member
epoch (STALE_MEMBER_EPOCH / FENCED_MEMBER_EPOCH); from v9 an unknown group with a generation
is GROUP_ID_NOT_FOUND (ILLEGAL_GENERATION before).  v1's per-partition commit timestamp is
ignored (the broker's time is used); v2-v4's retention time sets the offset's expiry.
Unknown topics or partitions → UNKNOWN_TOPIC_OR_PARTITION; metadata over 4096 bytes →
OFFSET_METADATA_TOO_LARGE.  Topic ids (v10) are not served.
"""

from __future__ import annotations

from bayou.core.groups import GroupCoordinatorError, OffsetCommit
from bayou.errors import ErrorCode
from bayou.gateways.kafka.context import RequestContext
from bayou.gateways.kafka.group_support import driver, known_partition
from bayou.gateways.kafka.handlers.registry import handles
from bayou.protocol.kafka import messages as m


@handles(8, 0, 9)
async def handle_offset_commit(
    ctx: RequestContext, request: m.OffsetCommitRequest
) -> m.OffsetCommitResponse:
    v = ctx.version
    codes: dict[tuple[str, int], ErrorCode] = {}
    commits: list[OffsetCommit] = []
    for topic in request.topics:
        for p in topic.partitions:
            if not known_partition(ctx, topic.name, p.partition_index):
                codes[(topic.name, p.partition_index)] = ErrorCode.UNKNOWN_TOPIC_OR_PARTITION
                continue
            commits.append(
                OffsetCommit(
                    topic.name,
                    p.partition_index,
                    p.committed_offset,
                    p.committed_leader_epoch if v >= 6 else -1,
                    p.committed_metadata,
                )
            )
    try:
        groups = driver(ctx)
        results: list[ErrorCode] = await groups.run(
            lambda now, _token: groups.coordinator.commit_offsets(
                now,
                group_id=request.group_id,
                generation=request.generation_id_or_member_epoch if v >= 1 else -1,
                member_id=request.member_id if v >= 1 else "",
                instance_id=request.group_instance_id if v >= 7 else None,
                offsets=commits,
                retention_ms=request.retention_time_ms if 2 <= v <= 4 else -1,
                version=v,
            )
        )
    except GroupCoordinatorError as exc:
        results = [exc.code] * len(commits)
    for c, code in zip(commits, results, strict=True):
        codes[(c.topic, c.partition)] = code
    return m.OffsetCommitResponse(
        topics=[
            m.OffsetCommitResponseTopic(
                name=topic.name,
                partitions=[
                    m.OffsetCommitResponsePartition(
                        partition_index=p.partition_index,
                        error_code=codes[(topic.name, p.partition_index)],
                    )
                    for p in topic.partitions
                ],
            )
            for topic in request.topics
        ]
    )
