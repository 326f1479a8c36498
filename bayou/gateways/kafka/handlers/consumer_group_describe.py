"""ConsumerGroupDescribe (key 69), v0: consumer (KIP-848) groups in detail.

Per group: state (Empty, Assigning, Reconciling, Stable), group and assignment epochs, the
assignor, and each member's epoch, subscription, current and target assignment.  A classic
group or an unknown one → GROUP_ID_NOT_FOUND (admin clients then fall back to DescribeGroups
for classic groups).  Authorized operations, when asked for, are every operation that
applies to a group (no authorizer: ``bayou/gateways/kafka/authorization.py``).
"""

from __future__ import annotations

from bayou.core.groups import ConsumerGroup, GroupCoordinatorError
from bayou.core.groups.model import Partitions
from bayou.errors import ErrorCode
from bayou.gateways.kafka.authorization import group_operations
from bayou.gateways.kafka.context import RequestContext
from bayou.gateways.kafka.group_support import driver
from bayou.gateways.kafka.handlers.registry import handles
from bayou.protocol.kafka import messages as m


def _assignment(
    ctx: RequestContext, parts: Partitions
) -> m.ConsumerGroupDescribeResponseAssignment:
    topics = ctx.core.topics()
    out = []
    for name, ps in sorted(parts.items()):
        meta = topics.get(name)
        if meta is not None:
            out.append(
                m.ConsumerGroupDescribeResponseTopicPartitions(
                    topic_id=meta.topic_id, topic_name=name, partitions=sorted(ps)
                )
            )
    return m.ConsumerGroupDescribeResponseAssignment(topic_partitions=out)


@handles(69, 0, 0)
async def handle_consumer_group_describe(
    ctx: RequestContext, request: m.ConsumerGroupDescribeRequest
) -> m.ConsumerGroupDescribeResponse:
    try:
        coordinator = driver(ctx).read()
    except GroupCoordinatorError as exc:
        return m.ConsumerGroupDescribeResponse(
            groups=[
                m.ConsumerGroupDescribeResponseDescribedGroup(error_code=exc.code, group_id=g)
                for g in request.group_ids
            ]
        )
    described = []
    for group_id in request.group_ids:
        group = coordinator.group(group_id)
        if not isinstance(group, ConsumerGroup):
            described.append(
                m.ConsumerGroupDescribeResponseDescribedGroup(
                    error_code=ErrorCode.GROUP_ID_NOT_FOUND,
                    error_message=f"Group {group_id} not found.",
                    group_id=group_id,
                    group_state="Dead",
                )
            )
            continue
        votes = [mem.server_assignor for mem in group.members.values() if mem.server_assignor]
        described.append(
            m.ConsumerGroupDescribeResponseDescribedGroup(
                error_code=ErrorCode.NONE,
                group_id=group_id,
                group_state=str(group.state),
                authorized_operations=group_operations(request.include_authorized_operations),
                group_epoch=group.epoch,
                assignment_epoch=group.assignment_epoch,
                assignor_name=max(set(votes), key=votes.count)
                if votes
                else coordinator.settings.consumer_assignors[0],
                members=[
                    m.ConsumerGroupDescribeResponseMember(
                        member_id=mem.member_id,
                        instance_id=mem.instance_id,
                        rack_id=mem.rack_id,
                        member_epoch=mem.epoch,
                        client_id=mem.client_id,
                        client_host=mem.client_host,
                        subscribed_topic_names=list(mem.subscribed),
                        assignment=_assignment(ctx, mem.assigned),
                        target_assignment=_assignment(ctx, group.target.get(mem.member_id, {})),
                    )
                    for mem in group.members.values()
                ],
            )
        )
    return m.ConsumerGroupDescribeResponse(groups=described)
