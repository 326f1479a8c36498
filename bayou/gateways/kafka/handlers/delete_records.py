"""DeleteRecords (key 21), v0-v2: move partitions' log start offset (the low watermark).

Each partition's ``offset`` becomes its new log start offset (-1 means the high watermark);
records below it can no longer be fetched (OFFSET_OUT_OF_RANGE), and whole segments below it
are deleted before the answer, which carries the new low watermark.  An offset beyond the
high watermark is OFFSET_OUT_OF_RANGE; one below the current start changes nothing.  As in
Kafka, a topic whose cleanup.policy lacks ``delete`` refuses with POLICY_VIOLATION, and an
internal topic (``__consumer_offsets``) with INVALID_TOPIC_EXCEPTION.  The request's timeout
is not needed: there are no replicas to wait for.  v2 is flexible.
"""

from __future__ import annotations

from bayou.errors import ErrorCode, KafkaError
from bayou.gateways.kafka.context import RequestContext
from bayou.gateways.kafka.handlers.registry import handles
from bayou.protocol.kafka import messages as m


@handles(21, 0, 2)
async def handle_delete_records(
    ctx: RequestContext, request: m.DeleteRecordsRequest
) -> m.DeleteRecordsResponse:
    core = ctx.core
    results: list[m.DeleteRecordsResponseDeleteRecordsTopicResult] = []
    for topic in request.topics:
        partitions: list[m.DeleteRecordsResponseDeleteRecordsPartitionResult] = []
        results.append(
            m.DeleteRecordsResponseDeleteRecordsTopicResult(name=topic.name, partitions=partitions)
        )
        for p in topic.partitions:
            answer = m.DeleteRecordsResponseDeleteRecordsPartitionResult(
                partition_index=p.partition_index, low_watermark=-1
            )
            partitions.append(answer)
            try:
                if topic.name in core.internal_topics():
                    raise KafkaError(
                        f"Cannot delete records of internal topic {topic.name}",
                        ErrorCode.INVALID_TOPIC_EXCEPTION,
                    )
                partition = core.partition(topic.name, p.partition_index)
                answer.low_watermark = await partition.delete_records(p.offset)
            except KafkaError as exc:
                answer.error_code = exc.code
            except OSError:
                answer.error_code = ErrorCode.KAFKA_STORAGE_ERROR
    return m.DeleteRecordsResponse(topics=results)
