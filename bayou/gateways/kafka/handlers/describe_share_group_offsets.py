"""DescribeShareGroupOffsets (key 90), v0-v1: where share groups are in each partition.

Per partition: the share-partition start offset (every record below it is acknowledged or
archived; -1 while the group has no state for the partition) and, v1, the lag — records
not yet acknowledged or archived, up to the log end (-1 when unknown).  ``Topics`` null asks
for every partition the group has state for.  A group that is not a share group:
GROUP_ID_NOT_FOUND for it.  Leader epochs are 0 (one broker).
"""

from __future__ import annotations

from bayou.core.shares import ShareCoordinatorError
from bayou.errors import ErrorCode
from bayou.gateways.kafka.context import RequestContext
from bayou.gateways.kafka.handlers.registry import handles
from bayou.gateways.kafka.share_support import share_driver, topic_id
from bayou.protocol.kafka import messages as m

RG = m.DescribeShareGroupOffsetsResponseGroup
RT = m.DescribeShareGroupOffsetsResponseTopic
RP = m.DescribeShareGroupOffsetsResponsePartition


@handles(90, 0, 1)
async def handle_describe_share_group_offsets(
    ctx: RequestContext, request: m.DescribeShareGroupOffsetsRequest
) -> m.DescribeShareGroupOffsetsResponse:
    try:
        shares = share_driver(ctx)
    except ShareCoordinatorError as exc:
        return m.DescribeShareGroupOffsetsResponse(
            groups=[RG(group_id=g.group_id, error_code=exc.code) for g in request.groups]
        )
    coordinator = shares.coordinator
    groups = []
    for g in request.groups:
        if coordinator.group(g.group_id) is None:
            groups.append(
                RG(
                    group_id=g.group_id,
                    error_code=ErrorCode.GROUP_ID_NOT_FOUND,
                    error_message=f"Group {g.group_id} is not a share group.",
                )
            )
            continue
        known = {(o.topic, o.partition): o for o in coordinator.offsets(g.group_id, shares.log_end)}
        wanted: dict[str, list[int]] = {}
        if g.topics is None:
            for topic, p in sorted(known):
                wanted.setdefault(topic, []).append(p)
        else:
            for t in g.topics:
                wanted.setdefault(t.topic_name, []).extend(t.partitions)
        topics = []
        for name, parts in wanted.items():
            exists = name in ctx.core.topics()
            out = []
            for p in parts:
                o = known.get((name, p))
                out.append(
                    RP(
                        partition_index=p,
                        start_offset=-1 if o is None else o.start_offset,
                        leader_epoch=0,
                        lag=-1 if o is None else o.lag,
                        error_code=ErrorCode.NONE
                        if exists
                        else ErrorCode.UNKNOWN_TOPIC_OR_PARTITION,
                    )
                )
            topics.append(RT(topic_name=name, topic_id=topic_id(ctx, name), partitions=out))
        groups.append(RG(group_id=g.group_id, topics=topics))
    return m.DescribeShareGroupOffsetsResponse(groups=groups)
