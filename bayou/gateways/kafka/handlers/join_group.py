"""JoinGroup (key 11), v0-v9: the join phase of the classic group protocol.

The request is parked until the rebalance's join phase ends (see
``bayou/core/groups/classic.py``); the leader's answer lists every member's metadata.
v0 has no rebalance timeout (the session timeout is used); v4+ new dynamic members first get
MEMBER_ID_REQUIRED with their id; v5+ carry ``group.instance.id`` (static membership); v7+
name the protocol type; v8+ carry a reason (logged nowhere); v9 lets a rejoining static
leader skip the assignment (SkipAssignment).
"""

from __future__ import annotations

from bayou.core.groups import GroupCoordinatorError, JoinResponse
from bayou.gateways.kafka.context import RequestContext
from bayou.gateways.kafka.group_support import client_host, driver, subscribed_topics
from bayou.gateways.kafka.handlers.registry import handles
from bayou.protocol.kafka import messages as m


@handles(11, 0, 9)
async def handle_join_group(
    ctx: RequestContext, request: m.JoinGroupRequest
) -> m.JoinGroupResponse:
    v = ctx.version
    protocols = [(p.name, bytes(p.metadata)) for p in request.protocols]
    try:
        groups = driver(ctx)
        resp: JoinResponse = await groups.run(
            lambda now, token: groups.coordinator.join_group(
                now,
                token,
                group_id=request.group_id,
                member_id=request.member_id,
                instance_id=request.group_instance_id if v >= 5 else None,
                protocol_type=request.protocol_type,
                protocols=protocols,
                session_timeout_ms=request.session_timeout_ms,
                rebalance_timeout_ms=(
                    request.rebalance_timeout_ms if v >= 1 else request.session_timeout_ms
                ),
                client_id=ctx.header.client_id or "",
                client_host=client_host(ctx),
                require_known_member_id=v >= 4,
                supports_skip_assignment=v >= 9,
                subscribed_topics=subscribed_topics(request.protocol_type, protocols),
            )
        )
    except GroupCoordinatorError as exc:
        resp = JoinResponse(exc.code, member_id=request.member_id)
    protocol_name = resp.protocol_name
    if protocol_name is None and v < 7:
        protocol_name = ""
    return m.JoinGroupResponse(
        error_code=resp.error,
        generation_id=resp.generation,
        protocol_type=resp.protocol_type,
        protocol_name=protocol_name,
        leader=resp.leader,
        skip_assignment=resp.skip_assignment,
        member_id=resp.member_id,
        members=[
            m.JoinGroupResponseMember(member_id=mid, group_instance_id=iid, metadata=meta)
            for mid, iid, meta in resp.members
        ],
    )
