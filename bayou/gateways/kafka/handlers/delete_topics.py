"""DeleteTopics (key 20), v0-v6: delete topics by name (v0-v6) or by id (v6).

Deleting detaches the topic at once (files closed, its folder renamed into ``deleted/``) and
removes the files in a worker thread; fetches waiting on it are woken so they answer
UNKNOWN_TOPIC_OR_PARTITION instead of sleeping out their wait.
"""

from __future__ import annotations

import uuid

from bayou.errors import ErrorCode, KafkaError
from bayou.gateways.kafka.context import RequestContext
from bayou.gateways.kafka.handlers.registry import handles
from bayou.protocol.kafka import messages as m

ZERO_UUID = uuid.UUID(int=0)


@handles(20, 0, 6)
async def handle_delete_topics(
    ctx: RequestContext, request: m.DeleteTopicsRequest
) -> m.DeleteTopicsResponse:
    core = ctx.core
    wanted: list[tuple[str | None, uuid.UUID]]
    if ctx.version >= 6:
        wanted = [(t.name, t.topic_id) for t in request.topics]
    else:
        wanted = [(name, ZERO_UUID) for name in request.topic_names]
    results: list[m.DeleteTopicsResponseDeletableTopicResult] = []
    for name, topic_id in wanted:
        if name is None:
            meta = core.topic_by_id(topic_id)
            if meta is None:
                results.append(
                    m.DeleteTopicsResponseDeletableTopicResult(
                        name=None,
                        topic_id=topic_id,
                        error_code=ErrorCode.UNKNOWN_TOPIC_ID,
                        error_message=f"No topic with id {topic_id}",
                    )
                )
                continue
            name = meta.name
        try:
            meta = core.topics().get(name)
            found_id = meta.topic_id if meta is not None else topic_id
            await core.delete_topic(name)  # files renamed away, then removed, off the loop
        except KafkaError as exc:
            results.append(
                m.DeleteTopicsResponseDeletableTopicResult(
                    name=name, topic_id=topic_id, error_code=exc.code, error_message=exc.message
                )
            )
            continue
        results.append(
            m.DeleteTopicsResponseDeletableTopicResult(
                name=name, topic_id=found_id, error_code=ErrorCode.NONE
            )
        )
    return m.DeleteTopicsResponse(responses=results)
