"""OffsetDelete (key 47), v0: delete a group's committed offsets for some partitions.

GROUP_ID_NOT_FOUND for an unknown group; per partition GROUP_SUBSCRIBED_TO_TOPIC while a
member of the group subscribes to the topic (a non-empty classic group whose protocol type
is not "consumer" cannot be inspected: NON_EMPTY_GROUP).
"""

from __future__ import annotations

from bayou.core.groups import GroupCoordinatorError
from bayou.errors import ErrorCode
from bayou.gateways.kafka.context import RequestContext
from bayou.gateways.kafka.group_support import driver
from bayou.gateways.kafka.handlers.registry import handles
from bayou.protocol.kafka import messages as m


@handles(47, 0, 0)
async def handle_offset_delete(
    ctx: RequestContext, request: m.OffsetDeleteRequest
) -> m.OffsetDeleteResponse:
    wanted = [(t.name, p.partition_index) for t in request.topics for p in t.partitions]
    try:
        groups = driver(ctx)
        top, codes = await groups.run(
            lambda now, _token: groups.coordinator.delete_offsets(now, request.group_id, wanted)
        )
    except GroupCoordinatorError as exc:
        top, codes = exc.code, []
    if top != ErrorCode.NONE:
        return m.OffsetDeleteResponse(error_code=top)
    by_key = dict(zip(wanted, codes, strict=True))
    return m.OffsetDeleteResponse(
        error_code=ErrorCode.NONE,
        topics=[
            m.OffsetDeleteResponseTopic(
                name=t.name,
                partitions=[
                    m.OffsetDeleteResponsePartition(
                        partition_index=p.partition_index,
                        error_code=by_key[(t.name, p.partition_index)],
                    )
                    for p in t.partitions
                ],
            )
            for t in request.topics
        ],
    )
