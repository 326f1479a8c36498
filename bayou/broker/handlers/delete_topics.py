"""DeleteTopics (key 20), v0-v6: delete topics by name (v0-v6) or by id (v6).

Deleting detaches the topic at once (files closed, its folder renamed into ``deleted/``) and
removes the files in a worker thread; fetches waiting on it are woken so they answer
UNKNOWN_TOPIC_OR_PARTITION instead of sleeping out their wait.
"""

from __future__ import annotations

import asyncio
import shutil
import uuid

from bayou.broker.context import RequestContext
from bayou.broker.handlers.registry import handles
from bayou.errors import ErrorCode, KafkaError
from bayou.protocol.kafka import messages as m

ZERO_UUID = uuid.UUID(int=0)


@handles(20, 0, 6)
async def handle_delete_topics(
    ctx: RequestContext, request: m.DeleteTopicsRequest
) -> m.DeleteTopicsResponse:
    broker = ctx.broker
    logs = broker.logs
    wanted: list[tuple[str | None, uuid.UUID]]
    if ctx.version >= 6:
        wanted = [(t.name, t.topic_id) for t in request.topics]
    else:
        wanted = [(name, ZERO_UUID) for name in request.topic_names]
    results: list[m.DeleteTopicsResponseDeletableTopicResult] = []
    for name, topic_id in wanted:
        if name is None:
            meta = logs.topic_by_id(topic_id)
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
            meta = logs.topics().get(name)
            partitions = meta.partitions if meta is not None else 0
            found_id = meta.topic_id if meta is not None else topic_id
            detached = logs.detach_topic(name)
        except KafkaError as exc:
            results.append(
                m.DeleteTopicsResponseDeletableTopicResult(
                    name=name, topic_id=topic_id, error_code=exc.code, error_message=exc.message
                )
            )
            continue
        for index in range(partitions):
            broker.waiters.notify(name, index)
        # the files go in a worker thread: a large topic's rmtree must not stall the loop
        await asyncio.to_thread(shutil.rmtree, detached, True)
        results.append(
            m.DeleteTopicsResponseDeletableTopicResult(
                name=name, topic_id=found_id, error_code=ErrorCode.NONE
            )
        )
    return m.DeleteTopicsResponse(responses=results)
