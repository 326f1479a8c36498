"""DescribeGroups (key 15), v0-v5: classic groups' state, protocol and members.

A Stable group shows its protocol and each member's metadata and assignment; during a
rebalance members are listed without them, as Kafka does.  Unknown groups — and consumer
(KIP-848) and share (KIP-932) groups, which ConsumerGroupDescribe and ShareGroupDescribe
serve — answer state "Dead" with no error
(v6's GROUP_ID_NOT_FOUND is not served).  v4+ show instance ids.  Authorized operations
(v3+), when asked for, are every operation that applies to a group (no authorizer:
``bayou/gateways/kafka/authorization.py``), set on the groups answered without error, as Kafka does.
"""

from __future__ import annotations

from bayou.core.groups import ClassicGroup, ClassicState, GroupCoordinatorError
from bayou.errors import ErrorCode
from bayou.gateways.kafka.authorization import GROUP_OPERATIONS
from bayou.gateways.kafka.context import RequestContext
from bayou.gateways.kafka.group_support import driver
from bayou.gateways.kafka.handlers.registry import handles
from bayou.protocol.kafka import messages as m


def describe(group_id: str, group: object) -> m.DescribeGroupsResponseDescribedGroup:
    if not isinstance(group, ClassicGroup):
        return m.DescribeGroupsResponseDescribedGroup(
            error_code=ErrorCode.NONE, group_id=group_id, group_state="Dead"
        )
    stable = group.state == ClassicState.STABLE
    return m.DescribeGroupsResponseDescribedGroup(
        error_code=ErrorCode.NONE,
        group_id=group_id,
        group_state=str(group.state),
        protocol_type=group.protocol_type or "",
        protocol_data=(group.protocol_name or "") if stable else "",
        members=[
            m.DescribeGroupsResponseDescribedGroupMember(
                member_id=mem.member_id,
                group_instance_id=mem.instance_id,
                client_id=mem.client_id,
                client_host=mem.client_host,
                member_metadata=mem.metadata(group.protocol_name) if stable else b"",
                member_assignment=mem.assignment if stable else b"",
            )
            for mem in group.members.values()
        ],
    )


@handles(15, 0, 5)
async def handle_describe_groups(
    ctx: RequestContext, request: m.DescribeGroupsRequest
) -> m.DescribeGroupsResponse:
    try:
        coordinator = driver(ctx).read()
    except GroupCoordinatorError as exc:
        return m.DescribeGroupsResponse(
            groups=[
                m.DescribeGroupsResponseDescribedGroup(error_code=exc.code, group_id=g)
                for g in request.groups
            ]
        )
    groups = [describe(g, coordinator.group(g)) for g in request.groups]
    if ctx.version >= 3 and request.include_authorized_operations:
        for g in groups:
            g.authorized_operations = GROUP_OPERATIONS
    return m.DescribeGroupsResponse(groups=groups)
