"""CreateTopics (key 19), v0-v7: create topics, or only validate the request (v1+).

num_partitions -1 takes the broker default; replication factor must be 1 or -1 (one node);
manual assignments may only name this node.  Configs are validated by name and value — a bad
one fails the topic with INVALID_CONFIG and a message naming it.  v5+ answer with the
resulting partitions, replication factor and effective configs; v7 with the topic id.
"""

from __future__ import annotations

from bayou.errors import ErrorCode, InvalidReplicationFactor, KafkaError
from bayou.gateways.kafka.context import RequestContext
from bayou.gateways.kafka.handlers.describe_configs import topic_config_entries
from bayou.gateways.kafka.handlers.registry import handles
from bayou.protocol.kafka import messages as m


def _partitions(ctx: RequestContext, topic: m.CreateTopicsRequestCreatableTopic) -> int:
    node = ctx.core.node_id
    if topic.assignments:
        if topic.num_partitions != -1 or topic.replication_factor != -1:
            raise KafkaError(
                "Give either assignments or partitions/replication factor, not both",
                ErrorCode.INVALID_REQUEST,
            )
        if any(a.broker_ids != [node] for a in topic.assignments):
            raise KafkaError(
                f"Replica assignments may only name this broker ({node})",
                ErrorCode.INVALID_REPLICA_ASSIGNMENT,
            )
        return len(topic.assignments)
    if topic.replication_factor not in (-1, 1):
        raise InvalidReplicationFactor(
            f"Replication factor {topic.replication_factor} is larger than the 1 broker available"
        )
    if topic.num_partitions == -1:
        return ctx.core.settings.num_partitions
    return topic.num_partitions


@handles(19, 0, 7)
async def handle_create_topics(
    ctx: RequestContext, request: m.CreateTopicsRequest
) -> m.CreateTopicsResponse:
    core = ctx.core
    validate_only = ctx.version >= 1 and request.validate_only
    results: list[m.CreateTopicsResponseCreatableTopicResult] = []
    for topic in request.topics:
        try:
            partitions = _partitions(ctx, topic)
            configs = {c.name: c.value for c in topic.configs if c.value is not None}
            meta = await core.create_topic(
                topic.name, partitions, configs, validate_only=validate_only
            )
        except KafkaError as exc:
            results.append(
                m.CreateTopicsResponseCreatableTopicResult(
                    name=topic.name,
                    error_code=exc.code,
                    error_message=exc.message,
                )
            )
            continue
        results.append(
            m.CreateTopicsResponseCreatableTopicResult(
                name=topic.name,
                topic_id=meta.topic_id,
                error_code=ErrorCode.NONE,
                error_message=None,
                num_partitions=partitions,
                replication_factor=1,
                configs=[
                    m.CreateTopicsResponseCreatableTopicConfigs(
                        name=e.name,
                        value=e.value,
                        read_only=False,
                        config_source=e.config_source,
                        is_sensitive=False,
                    )
                    for e in topic_config_entries(meta.configs, core)
                ],
            )
        )
    return m.CreateTopicsResponse(topics=results)
