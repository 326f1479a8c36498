"""DeleteShareGroupOffsets (key 92), v0: forget a share group's state for whole topics.

The group's share partitions of each topic named are deleted; when next assigned they start
over where ``share.auto.offset.reset`` says.  Refused while the group has members
(NON_EMPTY_GROUP); an unknown group: GROUP_ID_NOT_FOUND; a topic the group has no state for:
UNKNOWN_TOPIC_OR_PARTITION for it.
"""

from __future__ import annotations

from bayou.core.shares import ShareCoordinatorError
from bayou.errors import ErrorCode
from bayou.gateways.kafka.context import RequestContext
from bayou.gateways.kafka.handlers.registry import handles
from bayou.gateways.kafka.share_support import share_driver, topic_id
from bayou.protocol.kafka import messages as m


@handles(92, 0, 0)
async def handle_delete_share_group_offsets(
    ctx: RequestContext, request: m.DeleteShareGroupOffsetsRequest
) -> m.DeleteShareGroupOffsetsResponse:
    names = [t.topic_name for t in request.topics]
    try:
        shares = share_driver(ctx)
        code, per = await shares.run(
            lambda now: shares.coordinator.delete_offsets(now, request.group_id, names)
        )
    except ShareCoordinatorError as exc:
        code, per = exc.code, {}
    if code != ErrorCode.NONE:
        return m.DeleteShareGroupOffsetsResponse(error_code=code)
    return m.DeleteShareGroupOffsetsResponse(
        error_code=ErrorCode.NONE,
        responses=[
            m.DeleteShareGroupOffsetsResponseTopic(
                topic_name=name,
                topic_id=topic_id(ctx, name),
                error_code=per.get(name, ErrorCode.NONE),
            )
            for name in names
        ],
    )
