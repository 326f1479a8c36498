"""Produce (key 0), v3-v11 served, v0-v2 advertised and refused.

Each partition's bytes go to the engine untouched apart from the base-offset patch (the
engine validates framing and CRC32C, checks idempotent sequences, appends): one
``Core.append_many`` per request, so the partitions' fsyncs (when their flush policy asks)
run together.  Versions
0-2 are advertised as Kafka 4 does — older librdkafka turns compression off when the range
starts above 2 (KAFKA-18659) — and answered with UNSUPPORTED_VERSION.

acks: 0 sends no response; 1 and -1 (all) answer once the batches are written to the OS,
and, when the topic's ``flush.messages``/``flush.ms`` call for it, after a group-committed
fsync.  There is one replica, so acks=all waits for nothing more than acks=1.  v8+ carry an
error message per partition, and — when a compacted topic refuses records without a key
(INVALID_RECORD, the whole partition's batch) — ``record_errors`` naming each such record,
so the client fails just those and reports the others as failed with them.

Transactional batches (KIP-98) carry the request's ``transactional_id``; without one the
whole request is TRANSACTIONAL_ID_AUTHORIZATION_FAILED, as Kafka answers.  Before appending,
each partition with a transactional batch is verified with the transactional id's
coordinator (KIP-890's server-side defence; ``txn_check.py``: in process when this broker
coordinates the id, else over AddPartitionsToTxn v4 to the broker that does): a partition the
producer never added to its ongoing transaction — a "hanging transaction" in the making — is
refused (INVALID_TXN_STATE "Partition was not added to the transaction" for v3-v10,
TRANSACTION_ABORTABLE for v11), a fenced epoch INVALID_PRODUCER_EPOCH, a producer id the
coordinator does not know for the id INVALID_PRODUCER_ID_MAPPING, a transaction being
completed or a coordinator that cannot be asked NOT_ENOUGH_REPLICAS (retriable, as Kafka
answers older clients).  Nothing runs between the verification's answer and the append's
place in the engine's queue, and a marker queued during a verification with another broker
makes it ask again, so a transaction cannot end between them.
"""

from __future__ import annotations

from collections.abc import Sequence

from bayou.core.types import Buffer
from bayou.errors import ErrorCode, KafkaError, RecordErrors
from bayou.gateways.kafka.context import RequestContext
from bayou.gateways.kafka.handlers.registry import handles
from bayou.gateways.kafka.txn_check import TxnCheck
from bayou.protocol.kafka import messages as m


def _error(
    index: int,
    code: ErrorCode,
    message: str | None,
    record_errors: Sequence[tuple[int, str]] = (),
) -> m.ProduceResponsePartitionProduceResponse:
    return m.ProduceResponsePartitionProduceResponse(
        index=index,
        error_code=code,
        base_offset=-1,
        error_message=message,
        record_errors=[
            m.ProduceResponseBatchIndexAndErrorMessage(batch_index=i, batch_index_error_message=t)
            for i, t in record_errors
        ],
    )


#: the place of a partition's answer until its append returns (never sent)
_PENDING = m.ProduceResponsePartitionProduceResponse()


def not_leader(ctx: RequestContext, topic: str, index: int) -> bool:
    """A known partition another broker leads (an unknown one is the append's to answer)."""
    core = ctx.core
    meta = core.topics().get(topic)
    return meta is not None and 0 <= index < meta.partitions and not core.leads(topic, index)


@handles(0, 3, 11, advertised_min=0)
async def handle_produce(
    ctx: RequestContext, request: m.ProduceRequest
) -> m.ProduceResponse | None:
    acks = request.acks
    refuse: tuple[ErrorCode, str] | None = None
    if ctx.version < 3:
        refuse = (ErrorCode.UNSUPPORTED_VERSION, "Produce v0-v2 are not supported")
    elif acks not in (-1, 0, 1):
        refuse = (ErrorCode.INVALID_REQUIRED_ACKS, f"acks must be -1, 0 or 1, not {acks}")
    txn = TxnCheck(ctx, request.transactional_id)
    if refuse is None:
        await txn.prepare(request)
    # from here to append_many nothing suspends (see txn_check.py)
    topics: list[m.ProduceResponseTopicProduceResponse] = []
    writes: list[tuple[str, int, Buffer]] = []
    # where each write's answer goes: (its topic's partition answers, slot, partition index)
    answers: list[tuple[list[m.ProduceResponsePartitionProduceResponse], int, int]] = []
    for topic_data in request.topic_data:
        name = topic_data.name
        partitions: list[m.ProduceResponsePartitionProduceResponse] = []
        topics.append(
            m.ProduceResponseTopicProduceResponse(name=name, partition_responses=partitions)
        )
        for data in topic_data.partition_data:
            if refuse is not None:
                partitions.append(_error(data.index, *refuse))
            elif data.records is None or len(data.records) == 0:
                partitions.append(_error(data.index, ErrorCode.CORRUPT_MESSAGE, "empty record set"))
            elif not_leader(ctx, name, data.index):
                partitions.append(
                    _error(data.index, ErrorCode.NOT_LEADER_OR_FOLLOWER, "led by another broker")
                )
            elif (refused := txn.refusal(name, data.index, data.records)) is not None:
                partitions.append(_error(data.index, *refused))
            else:
                writes.append((name, data.index, data.records))
                answers.append((partitions, len(partitions), data.index))
                partitions.append(_PENDING)  # replaced below, once appended
    if writes:
        metrics = ctx.core.metrics
        metrics.purgatory.produce += 1  # waiting for its writes to be as durable as asked
        try:
            results = await ctx.core.append_many(writes, owned=True)  # views of our frame
        finally:
            metrics.purgatory.produce -= 1
        metrics.door("kafka").appended(writes, results)
        for (partitions, slot, index), result in zip(answers, results, strict=True):
            if isinstance(result, RecordErrors):
                partitions[slot] = _error(index, result.code, result.message, result.record_errors)
            elif isinstance(result, KafkaError):
                partitions[slot] = _error(index, result.code, result.message)
            else:
                partitions[slot] = m.ProduceResponsePartitionProduceResponse(
                    index=index,
                    error_code=ErrorCode.NONE,
                    base_offset=result.base_offset,
                    log_append_time_ms=result.log_append_time_ms,
                    log_start_offset=result.log_start_offset,
                )
    if acks == 0:
        return None
    return m.ProduceResponse(responses=topics)
