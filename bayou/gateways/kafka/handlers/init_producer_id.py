"""InitProducerId (key 22), v0-v5: producer ids for idempotent and transactional producers.

Without a transactional id the broker hands out a fresh producer id (unique across restarts,
allocated by the engine) at epoch 0.  From v3 a producer may pass its current id and epoch
to have the epoch bumped after a sequence error (KIP-360); at the epoch's ceiling a new id is
issued instead.

With a transactional id the transaction coordinator answers (``bayou/core/transactions``):
the id keeps its producer id and every call bumps the epoch, fencing earlier producers of
the same id; a transaction the previous producer left ongoing is aborted first (with the
bumped epoch), then the epoch is bumped again for the caller.  ``transaction_timeout_ms``
must be in 1..``transaction.max.timeout.ms`` (INVALID_TRANSACTION_TIMEOUT); an empty id is
INVALID_REQUEST; while the id's transaction is being completed, CONCURRENT_TRANSACTIONS
(retriable).  v3+ (KIP-360) passes the producer's current id and epoch: a producer id that
is not the id's, or an epoch that is neither the current nor the last, is PRODUCER_FENCED —
INVALID_PRODUCER_EPOCH for v0-v3 clients, which predate PRODUCER_FENCED, as in Kafka.
"""

from __future__ import annotations

from bayou.core.transactions import TxnCoordinatorError
from bayou.errors import ErrorCode
from bayou.gateways.kafka.context import RequestContext
from bayou.gateways.kafka.handlers.registry import handles
from bayou.gateways.kafka.txn_support import for_version, txn_driver
from bayou.protocol.kafka import messages as m

MAX_EPOCH = 32767


@handles(22, 0, 5)
async def handle_init_producer_id(
    ctx: RequestContext, request: m.InitProducerIdRequest
) -> m.InitProducerIdResponse:
    tid = request.transactional_id
    if tid is not None:
        expected = None
        if ctx.version >= 3 and request.producer_id >= 0:
            expected = (request.producer_id, request.producer_epoch)
        try:
            answer = await txn_driver(ctx).init_producer_id(
                tid, request.transaction_timeout_ms, expected
            )
        except TxnCoordinatorError as exc:
            return m.InitProducerIdResponse(error_code=exc.code, producer_id=-1, producer_epoch=-1)
        return m.InitProducerIdResponse(
            error_code=for_version(answer.error, ctx.version, 4),
            producer_id=answer.producer_id,
            producer_epoch=answer.producer_epoch,
        )
    if request.producer_id >= 0 and 0 <= request.producer_epoch < MAX_EPOCH - 1:
        return m.InitProducerIdResponse(
            error_code=ErrorCode.NONE,
            producer_id=request.producer_id,
            producer_epoch=request.producer_epoch + 1,
        )
    return m.InitProducerIdResponse(
        error_code=ErrorCode.NONE,
        producer_id=await ctx.core.allocate_producer_id(),
        producer_epoch=0,
    )
