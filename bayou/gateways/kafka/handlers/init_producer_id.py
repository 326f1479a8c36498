"""InitProducerId (key 22), v0-v5: producer ids for idempotent producers.

Without a transactional id the broker hands out a fresh producer id (unique across restarts,
allocated by the log manager) at epoch 0.  From v3 a producer may pass its current id and
epoch to have the epoch bumped after a sequence error (KIP-360); at the epoch's ceiling a new
id is issued instead.

Transactions are not available yet: a transactional id is answered UNSUPPORTED_VERSION, the
error Kafka uses for a feature the broker does not offer (a disabled share-group or consumer
protocol answers the same).  The response has no message field, so the broker logs "…
transactions are not available yet" once per client host and transactional id a minute; the
client sees "Unsupported version" (librdkafka retries until ``init_transactions``' timeout,
the Java client fails at once).  It used to be TRANSACTIONAL_ID_AUTHORIZATION_FAILED, which
reads as a permissions problem.
"""

from __future__ import annotations

import logging

from bayou.errors import ErrorCode
from bayou.gateways.kafka.context import RequestContext
from bayou.gateways.kafka.handlers.registry import handles
from bayou.log_limits import RateLimitedLog
from bayou.protocol.kafka import messages as m

MAX_EPOCH = 32767

log = logging.getLogger(__name__)
refusals = RateLimitedLog(log)


@handles(22, 0, 5)
async def handle_init_producer_id(
    ctx: RequestContext, request: m.InitProducerIdRequest
) -> m.InitProducerIdResponse:
    tid = request.transactional_id
    if tid is not None:
        host = ctx.peer.rsplit(":", 1)[0]
        refusals.warning(
            (host, tid),
            "refused transactional producer %r from %s (client %r): transactions are not "
            "available yet in Bayou; answered UNSUPPORTED_VERSION",
            tid, ctx.peer, ctx.header.client_id,
        )
        return m.InitProducerIdResponse(
            error_code=ErrorCode.UNSUPPORTED_VERSION, producer_id=-1, producer_epoch=-1
        )
    if request.producer_id >= 0 and 0 <= request.producer_epoch < MAX_EPOCH - 1:
        return m.InitProducerIdResponse(
            error_code=ErrorCode.NONE,
            producer_id=request.producer_id,
            producer_epoch=request.producer_epoch + 1,
        )
    return m.InitProducerIdResponse(
        error_code=ErrorCode.NONE,
        producer_id=await ctx.core.engine.allocate_producer_id(),
        producer_epoch=0,
    )
