"""Metadata (key 3), v0-v12: brokers, cluster id, controller, topics and their partitions.

The brokers are the cluster's live ones (``Core.cluster``: this broker alone on an engine
no other broker shares).  Each partition names its leader and leader epoch; replicas and
ISR are every live broker, the leader first — durability is the shared engine's, so any
broker can serve as a replica.  A partition whose leader is not live (it died and no broker
claimed the partition yet) is LEADER_NOT_AVAILABLE with leader -1; clients refresh.
A null topic list (v1+) or an empty one (v0) means "all topics".  Unknown topics are created
when the request allows it (v4+, always before) and ``auto.create.topics.enable`` is on.  v10+
carry topic ids and accept lookups by id; v12 answers an unknown id with UNKNOWN_TOPIC_ID.

``__consumer_offsets`` — the group coordinator's log, one partition — is listed as an
internal topic (``is_internal``), in the all-topics answer too, as Kafka lists it; it is
never auto-created, and the broker refuses writes to it.  Authorized operations (v8+), when
asked for, are every operation that applies (no authorizer: ``authorization.py``): for each
topic, and for the cluster (v8-v10).
"""

from __future__ import annotations

import uuid

from bayou.core.types import TopicMeta
from bayou.errors import ErrorCode, KafkaError
from bayou.gateways.kafka.authorization import TOPIC_OPERATIONS, cluster_operations
from bayou.gateways.kafka.context import RequestContext
from bayou.gateways.kafka.handlers.registry import handles
from bayou.gateways.kafka.placement import live_brokers
from bayou.protocol.kafka import messages as m

ZERO_UUID = uuid.UUID(int=0)


def partition_metadata(
    ctx: RequestContext, topic: str, index: int, live: list[int], *, internal: bool
) -> m.MetadataResponsePartition:
    cluster = ctx.core.cluster
    if internal:  # a state log: every broker serves it
        leader, epoch = ctx.core.node_id, 0
    else:
        found = cluster.leadership(topic, index)
        leader, epoch = found.leader, found.epoch
    replicas = [leader, *(n for n in live if n != leader)] if leader >= 0 else list(live)
    return m.MetadataResponsePartition(
        error_code=ErrorCode.NONE if leader >= 0 else ErrorCode.LEADER_NOT_AVAILABLE,
        partition_index=index,
        leader_id=leader,
        leader_epoch=epoch,
        replica_nodes=replicas,
        isr_nodes=replicas if leader >= 0 else [],
        offline_replicas=[],
    )


def topic_metadata(
    ctx: RequestContext, topic: TopicMeta, *, internal: bool = False
) -> m.MetadataResponseTopic:
    live = [b.node_id for b in live_brokers(ctx)]
    return m.MetadataResponseTopic(
        error_code=ErrorCode.NONE,
        name=topic.name,
        topic_id=topic.topic_id,
        is_internal=internal,
        partitions=[
            partition_metadata(ctx, topic.name, index, live, internal=internal)
            for index in range(topic.partitions)
        ],
    )


@handles(3, 0, 12)
async def handle_metadata(ctx: RequestContext, request: m.MetadataRequest) -> m.MetadataResponse:
    core = ctx.core
    internal = core.internal_topics()
    wanted = request.topics
    topics: list[m.MetadataResponseTopic] = []
    if wanted is None or (ctx.version == 0 and not wanted):
        every = sorted([*core.topics().values(), *internal.values()], key=_name)
        topics = [topic_metadata(ctx, t, internal=t.name in internal) for t in every]
    else:
        allow_create = ctx.version < 4 or request.allow_auto_topic_creation
        for item in wanted:
            if item.name is None:
                found = core.topic_by_id(item.topic_id)
                if found is None:
                    topics.append(
                        m.MetadataResponseTopic(
                            error_code=ErrorCode.UNKNOWN_TOPIC_ID,
                            name=None,
                            topic_id=item.topic_id,
                        )
                    )
                else:
                    topics.append(topic_metadata(ctx, found, internal=found.name in internal))
                continue
            if item.name in internal:
                topics.append(topic_metadata(ctx, internal[item.name], internal=True))
                continue
            try:
                topic = await core.topic(item.name, create=allow_create)
            except KafkaError as exc:
                topics.append(
                    m.MetadataResponseTopic(error_code=exc.code, name=item.name, topic_id=ZERO_UUID)
                )
                continue
            topics.append(topic_metadata(ctx, topic))
    if ctx.version >= 8 and request.include_topic_authorized_operations:
        for t in topics:
            if t.error_code != ErrorCode.UNKNOWN_TOPIC_ID:
                t.topic_authorized_operations = TOPIC_OPERATIONS
    return m.MetadataResponse(
        brokers=[
            m.MetadataResponseBroker(node_id=b.node_id, host=b.host, port=b.port, rack=b.rack)
            for b in live_brokers(ctx)
        ],
        cluster_id=core.cluster_id,
        controller_id=core.cluster.controller_id,
        topics=topics,
        cluster_authorized_operations=cluster_operations(
            8 <= ctx.version <= 10 and request.include_cluster_authorized_operations
        ),
    )


def _name(topic: TopicMeta) -> str:
    return topic.name
