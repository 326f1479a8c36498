"""ShareGroupDescribe (key 77), v1: share groups in detail (KIP-932).

Per group: state (Empty, Stable), group and assignment epochs, the assignor (``simple``),
and each member's epoch, client, subscription and assignment.  A group that is not a share
group, or unknown: GROUP_ID_NOT_FOUND, as Kafka answers.  Authorized operations, when asked
for, are every operation that applies to a group (no authorizer:
``bayou/gateways/kafka/authorization.py``).
"""

from __future__ import annotations

from bayou.core.shares import ShareCoordinatorError
from bayou.core.shares.coordinator import ASSIGNOR
from bayou.core.shares.model import Partitions
from bayou.errors import ErrorCode
from bayou.gateways.kafka.authorization import group_operations
from bayou.gateways.kafka.context import RequestContext
from bayou.gateways.kafka.handlers.registry import handles
from bayou.gateways.kafka.share_support import share_driver
from bayou.protocol.kafka import messages as m


def _assignment(ctx: RequestContext, parts: Partitions) -> m.ShareGroupDescribeResponseAssignment:
    topics = ctx.core.topics()
    return m.ShareGroupDescribeResponseAssignment(
        topic_partitions=[
            m.ShareGroupDescribeResponseTopicPartitions(
                topic_id=topics[name].topic_id, topic_name=name, partitions=sorted(ps)
            )
            for name, ps in sorted(parts.items())
            if name in topics
        ]
    )


@handles(77, 1, 1)
async def handle_share_group_describe(
    ctx: RequestContext, request: m.ShareGroupDescribeRequest
) -> m.ShareGroupDescribeResponse:
    try:
        coordinator = share_driver(ctx).read()
    except ShareCoordinatorError as exc:
        return m.ShareGroupDescribeResponse(
            groups=[
                m.ShareGroupDescribeResponseDescribedGroup(error_code=exc.code, group_id=g)
                for g in request.group_ids
            ]
        )
    described = []
    for group_id in request.group_ids:
        group = coordinator.group(group_id)
        if group is None:
            described.append(
                m.ShareGroupDescribeResponseDescribedGroup(
                    error_code=ErrorCode.GROUP_ID_NOT_FOUND,
                    error_message=f"Group {group_id} not found.",
                    group_id=group_id,
                    group_state="Dead",
                )
            )
            continue
        described.append(
            m.ShareGroupDescribeResponseDescribedGroup(
                error_code=ErrorCode.NONE,
                group_id=group_id,
                group_state=group.state,
                group_epoch=group.epoch,
                assignment_epoch=group.assignment_epoch,
                assignor_name=ASSIGNOR,
                authorized_operations=group_operations(request.include_authorized_operations),
                members=[
                    m.ShareGroupDescribeResponseMember(
                        member_id=mem.member_id,
                        rack_id=mem.rack_id,
                        member_epoch=mem.epoch,
                        client_id=mem.client_id,
                        client_host=mem.client_host,
                        subscribed_topic_names=list(mem.subscribed),
                        assignment=_assignment(ctx, mem.assigned),
                    )
                    for _id, mem in sorted(group.members.items())
                ],
            )
        )
    return m.ShareGroupDescribeResponse(groups=described)
