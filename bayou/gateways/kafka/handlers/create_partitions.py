"""CreatePartitions (key 37), v0-v3: grow a topic's partition count (never shrink).

Manual assignments may only name this node.  ``validate_only`` checks without changing.
"""

from __future__ import annotations

from bayou.errors import ErrorCode, KafkaError
from bayou.gateways.kafka.context import RequestContext
from bayou.gateways.kafka.handlers.registry import handles
from bayou.protocol.kafka import messages as m


@handles(37, 0, 3)
async def handle_create_partitions(
    ctx: RequestContext, request: m.CreatePartitionsRequest
) -> m.CreatePartitionsResponse:
    node = ctx.core.node_id
    results: list[m.CreatePartitionsResponseCreatePartitionsTopicResult] = []
    for topic in request.topics:
        try:
            if topic.assignments and any(a.broker_ids != [node] for a in topic.assignments):
                raise KafkaError(
                    f"Replica assignments may only name this broker ({node})",
                    ErrorCode.INVALID_REPLICA_ASSIGNMENT,
                )
            await ctx.core.create_partitions(
                topic.name, topic.count, validate_only=request.validate_only
            )
        except KafkaError as exc:
            results.append(
                m.CreatePartitionsResponseCreatePartitionsTopicResult(
                    name=topic.name, error_code=exc.code, error_message=exc.message
                )
            )
            continue
        results.append(
            m.CreatePartitionsResponseCreatePartitionsTopicResult(
                name=topic.name, error_code=ErrorCode.NONE
            )
        )
    return m.CreatePartitionsResponse(results=results)
