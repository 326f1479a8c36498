"""ElectLeaders (key 43), v0-v2: nothing to elect on one node — ELECTION_NOT_NEEDED.

Bayou is its only replica, so every partition already has its preferred leader and a leader
at all: a preferred (0) or unclean (1) election of a named partition answers
ELECTION_NOT_NEEDED, an unknown topic or partition UNKNOWN_TOPIC_OR_PARTITION ("No such
topic as …", as Kafka's controller words it).  A null partition list means every partition;
Kafka then leaves out the partitions that need no election, so each topic is answered with
an empty list.  An unknown election type fails the request with INVALID_REQUEST, every named
partition carrying it.  v0 has no election type (preferred) and no top-level error code; v2
is flexible.
"""

from __future__ import annotations

from bayou.errors import ErrorCode
from bayou.gateways.kafka.context import RequestContext
from bayou.gateways.kafka.handlers.registry import handles
from bayou.protocol.kafka import messages as m

PREFERRED, UNCLEAN = 0, 1


def _result(
    ctx: RequestContext, topic: str, partition: int
) -> m.ElectLeadersResponsePartitionResult:
    core = ctx.core
    meta = core.topics().get(topic) or core.internal_topics().get(topic)
    if meta is None:
        code, message = ErrorCode.UNKNOWN_TOPIC_OR_PARTITION, f"No such topic as {topic}"
    elif not 0 <= partition < meta.partitions:
        code = ErrorCode.UNKNOWN_TOPIC_OR_PARTITION
        message = f"No such partition as {topic}-{partition}"
    else:
        code, message = ErrorCode.ELECTION_NOT_NEEDED, None
    return m.ElectLeadersResponsePartitionResult(
        partition_id=partition, error_code=code, error_message=message
    )


@handles(43, 0, 2)
async def handle_elect_leaders(
    ctx: RequestContext, request: m.ElectLeadersRequest
) -> m.ElectLeadersResponse:
    wanted = request.topic_partitions
    if request.election_type not in (PREFERRED, UNCLEAN):
        message = f"Unknown election type {request.election_type}"
        return m.ElectLeadersResponse(
            error_code=ErrorCode.INVALID_REQUEST,
            replica_election_results=[
                m.ElectLeadersResponseReplicaElectionResult(
                    topic=t.topic,
                    partition_result=[
                        m.ElectLeadersResponsePartitionResult(
                            partition_id=p,
                            error_code=ErrorCode.INVALID_REQUEST,
                            error_message=message,
                        )
                        for p in t.partitions
                    ],
                )
                for t in wanted or []
            ],
        )
    if wanted is None:
        core = ctx.core
        names = sorted([*core.topics(), *core.internal_topics()])
        return m.ElectLeadersResponse(
            error_code=ErrorCode.NONE,
            replica_election_results=[
                m.ElectLeadersResponseReplicaElectionResult(topic=name, partition_result=[])
                for name in names
            ],
        )
    return m.ElectLeadersResponse(
        error_code=ErrorCode.NONE,
        replica_election_results=[
            m.ElectLeadersResponseReplicaElectionResult(
                topic=t.topic, partition_result=[_result(ctx, t.topic, p) for p in t.partitions]
            )
            for t in wanted
        ],
    )
