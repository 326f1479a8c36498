"""LeaveGroup (key 13), v0-v5: members leave a classic group (which then rebalances).

v0-v2 name one member; v3+ a batch of members, each by member id and/or group instance id
(an instance id held by a different member id → FENCED_INSTANCE_ID for that entry), with a
top-level error only when the whole request fails.  v5's per-member reason is not kept.
"""

from __future__ import annotations

from bayou.core.groups import GroupCoordinatorError
from bayou.errors import ErrorCode
from bayou.gateways.kafka.context import RequestContext
from bayou.gateways.kafka.group_support import driver
from bayou.gateways.kafka.handlers.registry import handles
from bayou.protocol.kafka import messages as m


@handles(13, 0, 5)
async def handle_leave_group(
    ctx: RequestContext, request: m.LeaveGroupRequest
) -> m.LeaveGroupResponse:
    if ctx.version < 3:
        members: list[tuple[str, str | None]] = [(request.member_id, None)]
    else:
        members = [(x.member_id, x.group_instance_id) for x in request.members]
    try:
        groups = driver(ctx)
        top, codes = await groups.run(
            lambda now, _token: groups.coordinator.leave_group(
                now, group_id=request.group_id, members=members
            )
        )
    except GroupCoordinatorError as exc:
        top, codes = exc.code, [exc.code] * len(members)
    if ctx.version < 3:
        return m.LeaveGroupResponse(error_code=top)
    if top != ErrorCode.NONE and len(members) == 1:
        top = ErrorCode.NONE  # v3+: per-member errors, unless the group itself failed
    return m.LeaveGroupResponse(
        error_code=top,
        members=[
            m.LeaveGroupResponseMemberResponse(
                member_id=mid, group_instance_id=iid, error_code=code
            )
            for (mid, iid), code in zip(members, codes, strict=True)
        ],
    )
