"""SyncGroup (key 14), v0-v5: the sync phase of the classic group protocol.

Members' SyncGroups are parked until the leader's arrives with every member's assignment;
then each gets its own.  In a Stable group the current assignment is returned at once.
v3+ carry ``group.instance.id`` (fenced with FENCED_INSTANCE_ID); v5+ name the protocol
type and name, checked against the group's (INCONSISTENT_GROUP_PROTOCOL).
"""

from __future__ import annotations

from bayou.core.groups import GroupCoordinatorError, SyncResponse
from bayou.gateways.kafka.context import RequestContext
from bayou.gateways.kafka.group_support import driver
from bayou.gateways.kafka.handlers.registry import handles
from bayou.protocol.kafka import messages as m


@handles(14, 0, 5)
async def handle_sync_group(
    ctx: RequestContext, request: m.SyncGroupRequest
) -> m.SyncGroupResponse:
    v = ctx.version
    assignments = {a.member_id: bytes(a.assignment) for a in request.assignments}
    try:
        groups = driver(ctx)
        resp: SyncResponse = await groups.run(
            lambda now, token: groups.coordinator.sync_group(
                now,
                token,
                group_id=request.group_id,
                generation=request.generation_id,
                member_id=request.member_id,
                instance_id=request.group_instance_id if v >= 3 else None,
                protocol_type=request.protocol_type if v >= 5 else None,
                protocol_name=request.protocol_name if v >= 5 else None,
                assignments=assignments,
            )
        )
    except GroupCoordinatorError as exc:
        resp = SyncResponse(exc.code)
    return m.SyncGroupResponse(
        error_code=resp.error,
        protocol_type=resp.protocol_type,
        protocol_name=resp.protocol_name,
        assignment=resp.assignment,
    )
