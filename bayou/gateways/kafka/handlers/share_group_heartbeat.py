"""ShareGroupHeartbeat (key 76), v1: join, heartbeat and leave a share group (KIP-932).

v1 is the version kafka-clients 4.1+ speak (Kafka 4.0's early-access v0 was removed).  The
client names its member id (empty: INVALID_REQUEST); epoch 0 joins (the subscription is
required then), a positive epoch heartbeats (another than the member's: FENCED_MEMBER_EPOCH),
-1 leaves and releases every record the member holds.  The answer carries the member's epoch
and, when it changed or on joining, its assignment by topic id — from the ``simple`` assignor,
which may give one partition to several members.  A group id taken by a classic or consumer
group: GROUP_ID_NOT_FOUND.  See ``bayou/core/shares/coordinator.py``.  A door's member
relayed from another broker (``bayou/core/shares/remote.py``) is a member while the
connection it joined over lasts: when it closes, the member leaves.
"""

from __future__ import annotations

from bayou.core.forwarding import SHARE_MEMBER_CLIENT_IDS
from bayou.core.shares import HeartbeatResponse, ShareCoordinatorError
from bayou.errors import ErrorCode
from bayou.gateways.kafka.context import RequestContext
from bayou.gateways.kafka.group_support import client_host
from bayou.gateways.kafka.handlers.registry import handles
from bayou.gateways.kafka.share_support import share_driver
from bayou.protocol.kafka import messages as m


@handles(76, 1, 1)
async def handle_share_group_heartbeat(
    ctx: RequestContext, request: m.ShareGroupHeartbeatRequest
) -> m.ShareGroupHeartbeatResponse:
    core = ctx.core
    try:
        shares = share_driver(ctx)
        resp: HeartbeatResponse = await shares.run(
            lambda now: shares.coordinator.heartbeat(
                now,
                group_id=request.group_id,
                member_id=request.member_id,
                member_epoch=request.member_epoch,
                rack_id=request.rack_id,
                subscribed=request.subscribed_topic_names,
                client_id=ctx.header.client_id or "",
                client_host=client_host(ctx),
                topic_sizes=shares.topic_sizes(),
                log_bounds=shares.log_bounds,
                topic_ids=shares.topic_ids(),
            )
        )
    except ShareCoordinatorError as exc:
        resp = HeartbeatResponse(exc.code, str(exc))
    if (
        ctx.header.client_id in SHARE_MEMBER_CLIENT_IDS
        and ctx.session.from_broker(ctx.header.client_id)
        and request.member_epoch == 0
        and resp.error == ErrorCode.NONE
    ):  # a door's member on another broker: a member while its connection lasts
        ctx.door.share_sessions.tie(ctx.connection, request.group_id, request.member_id)
    assignment = None
    if resp.assignment is not None:
        topics = core.topics()
        assignment = m.ShareGroupHeartbeatResponseAssignment(
            topic_partitions=[
                m.ShareGroupHeartbeatResponseTopicPartitions(
                    topic_id=topics[name].topic_id, partitions=sorted(ps)
                )
                for name, ps in sorted(resp.assignment.items())
                if name in topics
            ]
        )
    return m.ShareGroupHeartbeatResponse(
        error_code=resp.error,
        error_message=resp.message if resp.error else None,
        member_id=resp.member_id,
        member_epoch=resp.member_epoch,
        heartbeat_interval_ms=resp.heartbeat_interval_ms,
        assignment=assignment,
    )
