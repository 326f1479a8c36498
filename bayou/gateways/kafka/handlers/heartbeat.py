"""Heartbeat (key 12), v0-v4: a classic group member is alive; is a rebalance under way?

Keeps the member's session alive.  Answers REBALANCE_IN_PROGRESS during a join phase (the
client rejoins), ILLEGAL_GENERATION for a stale generation, UNKNOWN_MEMBER_ID for a member
the group does not know, FENCED_INSTANCE_ID (v3+) when another member holds its instance id.
"""

from __future__ import annotations

from bayou.core.groups import GroupCoordinatorError
from bayou.errors import ErrorCode
from bayou.gateways.kafka.context import RequestContext
from bayou.gateways.kafka.group_support import driver
from bayou.gateways.kafka.handlers.registry import handles
from bayou.protocol.kafka import messages as m


@handles(12, 0, 4)
async def handle_heartbeat(ctx: RequestContext, request: m.HeartbeatRequest) -> m.HeartbeatResponse:
    try:
        groups = driver(ctx)
        code: ErrorCode = await groups.run(
            lambda now, _token: groups.coordinator.heartbeat(
                now,
                group_id=request.group_id,
                generation=request.generation_id,
                member_id=request.member_id,
                instance_id=request.group_instance_id if ctx.version >= 3 else None,
            )
        )
    except GroupCoordinatorError as exc:
        code = exc.code
    return m.HeartbeatResponse(error_code=code)
