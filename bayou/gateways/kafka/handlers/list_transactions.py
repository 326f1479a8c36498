"""ListTransactions (key 66), v0-v1: the transactional ids the coordinator knows.

The filters are read as Kafka's coordinator reads them: a state filter naming no transaction
state (Kafka's ``TransactionState`` names: Empty, Ongoing, PrepareCommit, PrepareAbort,
CompleteCommit, CompleteAbort, Dead, PrepareEpochFence) is returned in
``unknown_state_filters``; ids must match one of the known states asked for, one of the
producer ids asked for, and (v1) have a transaction running longer than ``duration_filter``
ms.  COORDINATOR_NOT_AVAILABLE while the broker stops.  v0 is flexible.
"""

from __future__ import annotations

from bayou.core.transactions import TxnCoordinatorError, TxnState
from bayou.errors import ErrorCode
from bayou.gateways.kafka.context import RequestContext
from bayou.gateways.kafka.handlers.registry import handles
from bayou.gateways.kafka.txn_support import txn_driver
from bayou.protocol.kafka import messages as m

STATES = {str(s): s for s in TxnState}


@handles(66, 0, 1)
async def handle_list_transactions(
    ctx: RequestContext, request: m.ListTransactionsRequest
) -> m.ListTransactionsResponse:
    unknown = list(dict.fromkeys(s for s in request.state_filters if s not in STATES))
    try:
        coordinator = txn_driver(ctx).read()
    except TxnCoordinatorError as exc:
        return m.ListTransactionsResponse(error_code=exc.code, unknown_state_filters=unknown)
    known = [STATES[s] for s in request.state_filters if s in STATES]
    listed = []
    if known or not request.state_filters:
        listed = coordinator.list_transactions(
            ctx.core.clock_ms(),
            known,
            request.producer_id_filters,
            request.duration_filter if ctx.version >= 1 else -1,
        )
    return m.ListTransactionsResponse(
        error_code=ErrorCode.NONE,
        unknown_state_filters=unknown,
        transaction_states=[
            m.ListTransactionsResponseTransactionState(
                transactional_id=t.transactional_id,
                producer_id=t.producer_id,
                transaction_state=str(t.state),
            )
            for t in listed
        ],
    )
