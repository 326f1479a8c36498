"""DescribeTransactions (key 65), v0: no transaction is known — TRANSACTIONAL_ID_NOT_FOUND.

Transactions are not available yet (InitProducerId refuses transactional ids), so no
transactional id has state: each id is answered TRANSACTIONAL_ID_NOT_FOUND, as Kafka's
coordinator answers an id it has never seen, and an empty id INVALID_REQUEST.  v0 is
flexible.
"""

from __future__ import annotations

from bayou.errors import ErrorCode
from bayou.gateways.kafka.context import RequestContext
from bayou.gateways.kafka.handlers.registry import handles
from bayou.protocol.kafka import messages as m


@handles(65, 0, 0)
async def handle_describe_transactions(
    ctx: RequestContext, request: m.DescribeTransactionsRequest
) -> m.DescribeTransactionsResponse:
    return m.DescribeTransactionsResponse(
        transaction_states=[
            m.DescribeTransactionsResponseTransactionState(
                error_code=ErrorCode.TRANSACTIONAL_ID_NOT_FOUND
                if tid
                else ErrorCode.INVALID_REQUEST,
                transactional_id=tid,
                producer_id=-1,
                producer_epoch=-1,
            )
            for tid in request.transactional_ids
        ]
    )
