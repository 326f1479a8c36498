"""ListTransactions (key 66), v0-v1: an empty list — there are no transactions yet.

The filters are read as Kafka's coordinator reads them: a state filter that names no
transaction state (Kafka's ``TransactionState`` names: Empty, Ongoing, PrepareCommit,
PrepareAbort, CompleteCommit, CompleteAbort, Dead, PrepareEpochFence) is returned in
``unknown_state_filters``; the producer id and duration (v1) filters match nothing, since
no transaction exists.  v0 is flexible.
"""

from __future__ import annotations

from bayou.errors import ErrorCode
from bayou.gateways.kafka.context import RequestContext
from bayou.gateways.kafka.handlers.registry import handles
from bayou.protocol.kafka import messages as m

TRANSACTION_STATES = frozenset(
    {
        "Empty",
        "Ongoing",
        "PrepareCommit",
        "PrepareAbort",
        "CompleteCommit",
        "CompleteAbort",
        "Dead",
        "PrepareEpochFence",
    }
)


@handles(66, 0, 1)
async def handle_list_transactions(
    ctx: RequestContext, request: m.ListTransactionsRequest
) -> m.ListTransactionsResponse:
    return m.ListTransactionsResponse(
        error_code=ErrorCode.NONE,
        unknown_state_filters=list(
            dict.fromkeys(s for s in request.state_filters if s not in TRANSACTION_STATES)
        ),
        transaction_states=[],
    )
