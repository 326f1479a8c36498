"""AlterShareGroupOffsets (key 91), v0: move a share group's start offsets.

Each partition named starts over at the offset given (clamped to the log): nothing in
flight any more, every record from there on Available.  Refused while the group has
members (NON_EMPTY_GROUP), as Kafka does; a group id taken by a classic or consumer group:
GROUP_ID_NOT_FOUND.  An unknown group becomes an empty share group, so offsets can be set
before the first consumer joins.  Unknown topics or partitions: UNKNOWN_TOPIC_OR_PARTITION.
"""

from __future__ import annotations

from bayou.core.shares import ShareCoordinatorError
from bayou.errors import ErrorCode
from bayou.gateways.kafka.context import RequestContext
from bayou.gateways.kafka.handlers.registry import handles
from bayou.gateways.kafka.share_support import share_driver, topic_id
from bayou.protocol.kafka import messages as m


@handles(91, 0, 0)
async def handle_alter_share_group_offsets(
    ctx: RequestContext, request: m.AlterShareGroupOffsetsRequest
) -> m.AlterShareGroupOffsetsResponse:
    wanted = {
        (t.topic_name, p.partition_index): p.start_offset
        for t in request.topics
        for p in t.partitions
    }
    try:
        shares = share_driver(ctx)
        code, per = await shares.run(
            lambda now: shares.coordinator.alter_offsets(
                now, request.group_id, wanted, shares.log_bounds, shares.topic_ids()
            )
        )
    except ShareCoordinatorError as exc:
        code, per = exc.code, {}
    if code != ErrorCode.NONE:
        return m.AlterShareGroupOffsetsResponse(error_code=code)
    return m.AlterShareGroupOffsetsResponse(
        error_code=ErrorCode.NONE,
        responses=[
            m.AlterShareGroupOffsetsResponseTopic(
                topic_name=t.topic_name,
                topic_id=topic_id(ctx, t.topic_name),
                partitions=[
                    m.AlterShareGroupOffsetsResponsePartition(
                        partition_index=p.partition_index,
                        error_code=per.get((t.topic_name, p.partition_index), ErrorCode.NONE),
                    )
                    for p in t.partitions
                ],
            )
            for t in request.topics
        ],
    )
