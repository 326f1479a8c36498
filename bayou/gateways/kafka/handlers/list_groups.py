"""ListGroups (key 16), v0-v5: every group, classic and consumer (KIP-848).

v4+ filter by state (case-insensitive: Empty, PreparingRebalance, CompletingRebalance,
Stable for classic groups; Empty, Assigning, Reconciling, Stable for consumer groups) and
show each group's state; v5+ filter by type ("classic", "consumer") and show it.
"""

from __future__ import annotations

from bayou.core.groups import GroupCoordinatorError
from bayou.errors import ErrorCode
from bayou.gateways.kafka.context import RequestContext
from bayou.gateways.kafka.group_support import driver
from bayou.gateways.kafka.handlers.registry import handles
from bayou.protocol.kafka import messages as m


@handles(16, 0, 5)
async def handle_list_groups(
    ctx: RequestContext, request: m.ListGroupsRequest
) -> m.ListGroupsResponse:
    try:
        coordinator = driver(ctx).read()
    except GroupCoordinatorError as exc:
        return m.ListGroupsResponse(error_code=exc.code)
    listed = coordinator.list_groups(
        request.states_filter if ctx.version >= 4 else (),
        request.types_filter if ctx.version >= 5 else (),
    )
    return m.ListGroupsResponse(
        error_code=ErrorCode.NONE,
        groups=[
            m.ListGroupsResponseListedGroup(
                group_id=g.group_id,
                protocol_type=g.protocol_type,
                group_state=g.state,
                group_type=g.group_type,
            )
            for g in listed
        ],
    )
