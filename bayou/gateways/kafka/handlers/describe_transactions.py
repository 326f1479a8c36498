"""DescribeTransactions (key 65), v0: the state of transactional ids.

Answered from the transaction coordinator: per id its state by Kafka's name (Empty,
Ongoing, PrepareCommit, PrepareAbort, CompleteCommit, CompleteAbort), producer id and
epoch, timeout, the start time of the current transaction (-1 when none began) and its
partitions by topic (``__consumer_offsets``-0 when it carries group offsets, as in Kafka).
An id the coordinator does not know is TRANSACTIONAL_ID_NOT_FOUND, an empty id
INVALID_REQUEST, and COORDINATOR_NOT_AVAILABLE while the broker stops.  v0 is flexible.
"""

from __future__ import annotations

from bayou.core.transactions import TxnCoordinatorError
from bayou.errors import ErrorCode
from bayou.gateways.kafka.context import RequestContext
from bayou.gateways.kafka.handlers.registry import handles
from bayou.gateways.kafka.txn_support import txn_driver
from bayou.protocol.kafka import messages as m

State = m.DescribeTransactionsResponseTransactionState


def _describe(ctx: RequestContext, tid: str) -> State:
    try:
        meta = txn_driver(ctx).read().describe(tid)
    except TxnCoordinatorError as exc:
        meta = exc.code
    if isinstance(meta, ErrorCode):
        return State(error_code=meta, transactional_id=tid, producer_id=-1, producer_epoch=-1)
    by_topic: dict[str, list[int]] = {}
    for topic, partition in sorted(meta.partitions):
        by_topic.setdefault(topic, []).append(partition)
    return State(
        error_code=ErrorCode.NONE,
        transactional_id=tid,
        transaction_state=str(meta.state),
        transaction_timeout_ms=meta.timeout_ms,
        transaction_start_time_ms=meta.start_ms,
        producer_id=meta.producer_id,
        producer_epoch=meta.producer_epoch,
        topics=[
            m.DescribeTransactionsResponseTopicData(topic=t, partitions=ps)
            for t, ps in by_topic.items()
        ],
    )


@handles(65, 0, 0)
async def handle_describe_transactions(
    ctx: RequestContext, request: m.DescribeTransactionsRequest
) -> m.DescribeTransactionsResponse:
    return m.DescribeTransactionsResponse(
        transaction_states=[_describe(ctx, tid) for tid in request.transactional_ids]
    )
