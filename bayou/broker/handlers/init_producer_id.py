"""InitProducerId (key 22), v0-v5: producer ids for idempotent producers.

Without a transactional id the broker hands out a fresh producer id (unique across restarts,
allocated by the log manager) at epoch 0.  From v3 a producer may pass its current id and
epoch to have the epoch bumped after a sequence error (KIP-360); at the epoch's ceiling a new
id is issued instead.  Transactions are not served yet: a transactional id is refused with
TRANSACTIONAL_ID_AUTHORIZATION_FAILED, a fatal error clients report plainly.
"""

from __future__ import annotations

from bayou.broker.context import RequestContext
from bayou.broker.handlers.registry import handles
from bayou.errors import ErrorCode
from bayou.protocol.kafka import messages as m

MAX_EPOCH = 32767


@handles(22, 0, 5)
async def handle_init_producer_id(
    ctx: RequestContext, request: m.InitProducerIdRequest
) -> m.InitProducerIdResponse:
    if request.transactional_id is not None:
        return m.InitProducerIdResponse(
            error_code=ErrorCode.TRANSACTIONAL_ID_AUTHORIZATION_FAILED,
            producer_id=-1,
            producer_epoch=-1,
        )
    if request.producer_id >= 0 and 0 <= request.producer_epoch < MAX_EPOCH - 1:
        return m.InitProducerIdResponse(
            error_code=ErrorCode.NONE,
            producer_id=request.producer_id,
            producer_epoch=request.producer_epoch + 1,
        )
    return m.InitProducerIdResponse(
        error_code=ErrorCode.NONE,
        producer_id=ctx.broker.logs.allocate_producer_id(),
        producer_epoch=0,
    )
