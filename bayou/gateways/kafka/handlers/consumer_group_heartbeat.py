"""ConsumerGroupHeartbeat (key 68), v0-v1: the consumer group protocol (KIP-848).

Joins (epoch 0), heartbeats, and leaves (epoch -1; -2 for a static member's temporary
leave) a consumer group; the answer carries the member's epoch and, when it changed, its
assignment computed by a server-side assignor (``uniform`` default, or ``range``; anything
else → UNSUPPORTED_ASSIGNOR).  See ``bayou/core/groups/consumer.py``.  Topics are named
in the subscription and identified by topic id in assignments.  v1 adds a regular-expression
subscription (Python ``re`` full match against topic names, re-evaluated on each heartbeat;
Kafka uses RE2, whose common syntax is the same) and requires the client to generate its
member id (KIP-1082).  Kafka's 3.9 JSON still marks v1 unstable; Kafka 4.0 made it stable and
librdkafka 2.16 will not speak the protocol without it, so it is served.  Rack-aware
placement of partitions is not done.
"""

from __future__ import annotations

from bayou.core.groups import ConsumerHeartbeatResponse, GroupCoordinatorError
from bayou.errors import ErrorCode
from bayou.gateways.kafka.context import RequestContext
from bayou.gateways.kafka.group_support import client_host, driver, topic_sizes
from bayou.gateways.kafka.handlers.registry import handles
from bayou.protocol.kafka import messages as m


@handles(68, 0, 1)
async def handle_consumer_group_heartbeat(
    ctx: RequestContext, request: m.ConsumerGroupHeartbeatRequest
) -> m.ConsumerGroupHeartbeatResponse:
    core = ctx.core
    owned: dict[str, frozenset[int]] | None = None
    if request.topic_partitions is not None:
        owned = {}
        for tp in request.topic_partitions:
            meta = core.topic_by_id(tp.topic_id)
            if meta is not None and tp.partitions:
                owned[meta.name] = frozenset(tp.partitions)
    try:
        if ctx.version >= 1 and not request.member_id:
            raise GroupCoordinatorError(ErrorCode.INVALID_REQUEST, "MemberId can't be empty.")
        groups = driver(ctx)
        resp: ConsumerHeartbeatResponse = await groups.run(
            lambda now, _token: groups.coordinator.consumer_heartbeat(
                now,
                group_id=request.group_id,
                member_id=request.member_id,
                member_epoch=request.member_epoch,
                instance_id=request.instance_id,
                rack_id=request.rack_id,
                rebalance_timeout_ms=request.rebalance_timeout_ms,
                subscribed=request.subscribed_topic_names,
                server_assignor=request.server_assignor,
                owned=owned,
                client_id=ctx.header.client_id or "",
                client_host=client_host(ctx),
                topic_sizes=topic_sizes(ctx),
                subscribed_regex=request.subscribed_topic_regex if ctx.version >= 1 else None,
            )
        )
    except GroupCoordinatorError as exc:
        resp = ConsumerHeartbeatResponse(exc.code, str(exc))
    assignment = None
    if resp.assignment is not None:
        topics = core.topics()
        parts = []
        for name, ps in sorted(resp.assignment.items()):
            meta = topics.get(name)
            if meta is not None:
                parts.append(
                    m.ConsumerGroupHeartbeatResponseTopicPartitions(
                        topic_id=meta.topic_id, partitions=sorted(ps)
                    )
                )
        assignment = m.ConsumerGroupHeartbeatResponseAssignment(topic_partitions=parts)
    return m.ConsumerGroupHeartbeatResponse(
        error_code=resp.error,
        error_message=resp.message if resp.error else None,
        member_id=resp.member_id,
        member_epoch=resp.member_epoch,
        heartbeat_interval_ms=resp.heartbeat_interval_ms,
        assignment=assignment,
    )
