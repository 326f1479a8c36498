"""FindCoordinator (key 10), v0-v6: where a group's (or transaction's) coordinator is.

The owner is the live broker the key hashes to (``Core.cluster``; this broker alone on an
engine no other broker shares), answered by any broker.  v0-v3 ask for one key; v4+ batch
several (``CoordinatorKeys``) and answer one entry per key.  Key type 0 is a consumer group,
1 a transactional id (the transaction coordinator is this broker too), 2 a share
group — not served: INVALID_REQUEST.  An empty group id is INVALID_REQUEST, as in Kafka.
"""

from __future__ import annotations

from bayou.core.types import BrokerAddress
from bayou.errors import ErrorCode
from bayou.gateways.kafka.context import RequestContext
from bayou.gateways.kafka.handlers.registry import handles
from bayou.gateways.kafka.placement import coordinator_address
from bayou.protocol.kafka import messages as m

GROUP, TRANSACTION = 0, 1


def _lookup(
    ctx: RequestContext, key: str, key_type: int
) -> tuple[ErrorCode, str | None, BrokerAddress | None]:
    if key_type not in (GROUP, TRANSACTION):
        return ErrorCode.INVALID_REQUEST, f"Unsupported key type {key_type}.", None
    if not key:
        return ErrorCode.INVALID_REQUEST, "The key must not be empty.", None
    running = ctx.core.groups if key_type == GROUP else ctx.core.transactions
    unavailable = ErrorCode.COORDINATOR_NOT_AVAILABLE, "The coordinator is not available.", None
    if running is None or ctx.core.stopping:
        return unavailable
    owner = coordinator_address(ctx, key_type, key)
    if owner is None:
        return unavailable
    return ErrorCode.NONE, None, owner


@handles(10, 0, 6)
async def handle_find_coordinator(
    ctx: RequestContext, request: m.FindCoordinatorRequest
) -> m.FindCoordinatorResponse:
    if ctx.version < 4:
        error, message, owner = _lookup(ctx, request.key, request.key_type)
        return m.FindCoordinatorResponse(
            error_code=error,
            error_message=message,
            node_id=owner.node_id if owner else -1,
            host=owner.host if owner else "",
            port=owner.port if owner else -1,
        )
    coordinators = []
    for key in request.coordinator_keys:
        error, message, owner = _lookup(ctx, key, request.key_type)
        coordinators.append(
            m.FindCoordinatorResponseCoordinator(
                key=key,
                node_id=owner.node_id if owner else -1,
                host=owner.host if owner else "",
                port=owner.port if owner else -1,
                error_code=error,
                error_message=message,
            )
        )
    return m.FindCoordinatorResponse(coordinators=coordinators)
