"""AddOffsetsToTxn (key 25), v0-v4: a group's offsets join a producer's transaction.

Kafka adds the group's ``__consumer_offsets`` partition to the transaction; Bayou's offsets
log has one partition, so the transaction gains ``__consumer_offsets``-0 (DescribeTransactions
shows it, as Kafka's does).  Its commit or abort then completes the offsets the producer
commits with TxnOffsetCommit.  Errors as AddPartitionsToTxn: INVALID_PRODUCER_ID_MAPPING,
PRODUCER_FENCED (INVALID_PRODUCER_EPOCH for v0-v1), CONCURRENT_TRANSACTIONS; an empty group id
INVALID_GROUP_ID.  v3+ is flexible.
"""

from __future__ import annotations

from bayou.core.transactions import TxnCoordinatorError
from bayou.errors import ErrorCode
from bayou.gateways.kafka.context import RequestContext
from bayou.gateways.kafka.handlers.registry import handles
from bayou.gateways.kafka.txn_support import for_version, txn_driver
from bayou.protocol.kafka import messages as m


@handles(25, 0, 4)
async def handle_add_offsets_to_txn(
    ctx: RequestContext, request: m.AddOffsetsToTxnRequest
) -> m.AddOffsetsToTxnResponse:
    if not request.group_id:
        return m.AddOffsetsToTxnResponse(error_code=ErrorCode.INVALID_GROUP_ID)
    try:
        driver = txn_driver(ctx)
        code: ErrorCode = await driver.run(
            lambda now: driver.coordinator.add_offsets(
                now,
                request.transactional_id,
                request.producer_id,
                request.producer_epoch,
                request.group_id,
            )
        )
    except TxnCoordinatorError as exc:
        code = exc.code
    return m.AddOffsetsToTxnResponse(error_code=for_version(code, ctx.version, 2))
