"""AddPartitionsToTxn (key 24), v0-v5: partitions join a producer's transaction.

v0-v3 carry one transaction (the ``V3AndBelow*`` fields) and answer per topic; v4+ (KIP-890)
batch several transactions, each with ``verify_only``: a verify-only entry changes nothing and
answers, per partition, whether it is already in the producer's ongoing transaction
(TRANSACTION_ABORTABLE when not) — Kafka's brokers send these to the coordinator before they
append a transactional batch, and so do Bayou's when the transactional id's coordinator is
another broker of the cluster (``txn_check.py``; the group coordinator's TxnOffsetCommit asks
about ``__consumer_offsets``-0, which a verification may name).  With an authorizer they
need CLUSTER_ACTION (the brokers' internal user has it); without one a client may send them
too (they change nothing).

Kafka's checks, in its order: a partition of a topic that does not exist is
UNKNOWN_TOPIC_OR_PARTITION and one of an internal topic (``__consumer_offsets`` …) is
TOPIC_AUTHORIZATION_FAILED — the offsets partition joins through AddOffsetsToTxn only — and
then every other partition of that transaction is OPERATION_NOT_ATTEMPTED.  Otherwise the
coordinator's answer goes to every partition: unknown id or producer id
INVALID_PRODUCER_ID_MAPPING, another epoch PRODUCER_FENCED (INVALID_PRODUCER_EPOCH for v0-v1
clients), a transaction being completed CONCURRENT_TRANSACTIONS.  v3+ is flexible.
"""

from __future__ import annotations

from bayou.core.transactions import OFFSETS_PARTITION, TxnCoordinatorError
from bayou.errors import ErrorCode
from bayou.gateways.kafka.context import RequestContext
from bayou.gateways.kafka.handlers.registry import handles
from bayou.gateways.kafka.txn_support import for_version, txn_driver
from bayou.protocol.kafka import messages as m

TP = tuple[str, int]
PartitionResult = m.AddPartitionsToTxnResponseAddPartitionsToTxnPartitionResult
TopicResult = m.AddPartitionsToTxnResponseAddPartitionsToTxnTopicResult


def _results(codes: dict[TP, ErrorCode]) -> list[TopicResult]:
    by_topic: dict[str, list[PartitionResult]] = {}
    for (topic, partition), code in codes.items():
        by_topic.setdefault(topic, []).append(
            PartitionResult(partition_index=partition, partition_error_code=code)
        )
    return [TopicResult(name=t, results_by_partition=ps) for t, ps in by_topic.items()]


def _refused(
    ctx: RequestContext, wanted: list[TP], verify_only: bool
) -> dict[TP, ErrorCode] | None:
    topics, internal = ctx.core.topics(), ctx.core.internal_topics()
    refused: dict[TP, ErrorCode] = {}
    for topic, partition in wanted:
        if verify_only and (topic, partition) == OFFSETS_PARTITION:
            continue
        if topic in internal:
            refused[(topic, partition)] = ErrorCode.TOPIC_AUTHORIZATION_FAILED
        else:
            meta = topics.get(topic)
            if meta is None or not 0 <= partition < meta.partitions:
                refused[(topic, partition)] = ErrorCode.UNKNOWN_TOPIC_OR_PARTITION
    if not refused:
        return None
    return {tp: refused.get(tp, ErrorCode.OPERATION_NOT_ATTEMPTED) for tp in wanted}


async def _one(
    ctx: RequestContext,
    tid: str,
    pid: int,
    epoch: int,
    verify_only: bool,
    topics: list[m.AddPartitionsToTxnRequestAddPartitionsToTxnTopic],
) -> dict[TP, ErrorCode]:
    wanted = list(dict.fromkeys((t.name, p) for t in topics for p in t.partitions))
    refused = _refused(ctx, wanted, verify_only)
    if refused is not None:
        return refused
    try:
        driver = txn_driver(ctx)
        if verify_only:
            return driver.read().verify(tid, pid, epoch, wanted)
        code: ErrorCode = await driver.run(
            lambda now: driver.coordinator.add_partitions(now, tid, pid, epoch, wanted)
        )
    except TxnCoordinatorError as exc:
        code = exc.code
    code = for_version(code, ctx.version, 2)
    return dict.fromkeys(wanted, code)


@handles(24, 0, 5)
async def handle_add_partitions_to_txn(
    ctx: RequestContext, request: m.AddPartitionsToTxnRequest
) -> m.AddPartitionsToTxnResponse:
    if ctx.version < 4:
        codes = await _one(
            ctx,
            request.v3_and_below_transactional_id,
            request.v3_and_below_producer_id,
            request.v3_and_below_producer_epoch,
            False,
            request.v3_and_below_topics,
        )
        return m.AddPartitionsToTxnResponse(results_by_topic_v3_and_below=_results(codes))
    results = []
    for txn in request.transactions:
        codes = await _one(
            ctx,
            txn.transactional_id,
            txn.producer_id,
            txn.producer_epoch,
            txn.verify_only,
            txn.topics,
        )
        results.append(
            m.AddPartitionsToTxnResponseAddPartitionsToTxnResult(
                transactional_id=txn.transactional_id, topic_results=_results(codes)
            )
        )
    return m.AddPartitionsToTxnResponse(error_code=ErrorCode.NONE, results_by_transaction=results)
