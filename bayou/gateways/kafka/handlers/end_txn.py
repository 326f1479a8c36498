"""EndTxn (key 26), v0-v5: commit or abort a producer's transaction.

The coordinator writes PrepareCommit/PrepareAbort (durable: the decision survives a crash),
writes a COMMIT/ABORT marker to every partition of the transaction and completes the
consumer offsets it carried, then writes CompleteCommit/CompleteAbort.  The answer leaves once
that is done (``bayou/core/transactions/driver.py``), so a READ_COMMITTED reader sees a
committed transaction as soon as ``commit_transaction`` returns.

Errors (Kafka's): an id or producer id the coordinator does not know
INVALID_PRODUCER_ID_MAPPING; another epoch PRODUCER_FENCED (INVALID_PRODUCER_EPOCH for v0-v1
clients); ending a transaction never begun, or committing one that was aborted (a timed-out
transaction, say), INVALID_TXN_STATE; the same end retried while its markers are being
written CONCURRENT_TRANSACTIONS, and after it completed NONE.  v5 (KIP-890 part 2, which
bumps the epoch at every end) answers the producer id and epoch in force; Bayou does not
advertise ``transaction.version`` 2, so clients keep one epoch across transactions.
v3+ is flexible.
"""

from __future__ import annotations

from bayou.core.transactions import TxnCoordinatorError
from bayou.errors import ErrorCode
from bayou.gateways.kafka.context import RequestContext
from bayou.gateways.kafka.handlers.registry import handles
from bayou.gateways.kafka.txn_support import for_version, txn_driver
from bayou.protocol.kafka import messages as m


@handles(26, 0, 5)
async def handle_end_txn(ctx: RequestContext, request: m.EndTxnRequest) -> m.EndTxnResponse:
    try:
        driver = txn_driver(ctx)
        code = await driver.end_txn(
            request.transactional_id, request.producer_id, request.producer_epoch, request.committed
        )
        pid, epoch = driver.read().producer_of(request.transactional_id)
    except TxnCoordinatorError as exc:
        code, pid, epoch = exc.code, -1, -1
    if code != ErrorCode.NONE:
        pid, epoch = -1, -1
    return m.EndTxnResponse(
        error_code=for_version(code, ctx.version, 2), producer_id=pid, producer_epoch=epoch
    )
