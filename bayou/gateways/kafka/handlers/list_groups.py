"""ListGroups (key 16), v0-v5: every group, classic, consumer (KIP-848) and share (KIP-932).

v4+ filter by state (case-insensitive: Empty, PreparingRebalance, CompletingRebalance,
Stable for classic groups; Empty, Assigning, Reconciling, Stable for consumer groups; Empty,
Stable for share groups) and show each group's state; v5+ filter by type ("classic",
"consumer", "share") and show it.  Share groups show protocol type "share", as Kafka does.
"""

from __future__ import annotations

from bayou.core.groups import GroupCoordinatorError
from bayou.errors import ErrorCode
from bayou.gateways.kafka.context import RequestContext
from bayou.gateways.kafka.group_support import driver
from bayou.gateways.kafka.handlers.registry import handles
from bayou.protocol.kafka import messages as m

SHARE = "share"


@handles(16, 0, 5)
async def handle_list_groups(
    ctx: RequestContext, request: m.ListGroupsRequest
) -> m.ListGroupsResponse:
    try:
        coordinator = driver(ctx).read()
    except GroupCoordinatorError as exc:
        return m.ListGroupsResponse(error_code=exc.code)
    states = request.states_filter if ctx.version >= 4 else []
    types = request.types_filter if ctx.version >= 5 else []
    listed = [
        (g.group_id, g.protocol_type, g.state, g.group_type)
        for g in coordinator.list_groups(states, types)
    ]
    shares = ctx.core.shares
    wanted_states = {s.lower() for s in states}
    if shares is not None and (not types or SHARE in {t.lower() for t in types}):
        listed.extend(
            (g.group_id, SHARE, g.state, SHARE)
            for g in shares.coordinator.list_groups()
            if not wanted_states or g.state.lower() in wanted_states
        )
    return m.ListGroupsResponse(
        error_code=ErrorCode.NONE,
        groups=[
            m.ListGroupsResponseListedGroup(
                group_id=group_id,
                protocol_type=protocol_type,
                group_state=state,
                group_type=group_type,
            )
            for group_id, protocol_type, state, group_type in sorted(listed)
        ],
    )
