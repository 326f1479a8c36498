"""FindCoordinator (key 10), v0-v6: where a group's (or transaction's) coordinator is.

Bayou is one node, so the answer is always this broker.  v0-v3 ask for one key; v4+ batch
several (``CoordinatorKeys``) and answer one entry per key.  Key type 0 is a consumer group,
1 a transactional id (the transaction coordinator is this broker too), 2 a share
group — not served: INVALID_REQUEST.  An empty group id is INVALID_REQUEST, as in Kafka.
"""

from __future__ import annotations

from bayou.errors import ErrorCode
from bayou.gateways.kafka.context import RequestContext
from bayou.gateways.kafka.handlers.registry import handles
from bayou.protocol.kafka import messages as m

GROUP, TRANSACTION = 0, 1


def _lookup(ctx: RequestContext, key: str, key_type: int) -> tuple[ErrorCode, str | None]:
    if key_type not in (GROUP, TRANSACTION):
        return ErrorCode.INVALID_REQUEST, f"Unsupported key type {key_type}."
    if not key:
        return ErrorCode.INVALID_REQUEST, "The key must not be empty."
    running = ctx.core.groups if key_type == GROUP else ctx.core.transactions
    if running is None or ctx.core.stopping:
        return ErrorCode.COORDINATOR_NOT_AVAILABLE, "The coordinator is not available."
    return ErrorCode.NONE, None


@handles(10, 0, 6)
async def handle_find_coordinator(
    ctx: RequestContext, request: m.FindCoordinatorRequest
) -> m.FindCoordinatorResponse:
    core, door = ctx.core, ctx.door
    if ctx.version < 4:
        error, message = _lookup(ctx, request.key, request.key_type)
        ok = error == ErrorCode.NONE
        return m.FindCoordinatorResponse(
            error_code=error,
            error_message=message,
            node_id=core.node_id if ok else -1,
            host=door.advertised_host if ok else "",
            port=door.advertised_port if ok else -1,
        )
    coordinators = []
    for key in request.coordinator_keys:
        error, message = _lookup(ctx, key, request.key_type)
        ok = error == ErrorCode.NONE
        coordinators.append(
            m.FindCoordinatorResponseCoordinator(
                key=key,
                node_id=core.node_id if ok else -1,
                host=door.advertised_host if ok else "",
                port=door.advertised_port if ok else -1,
                error_code=error,
                error_message=message,
            )
        )
    return m.FindCoordinatorResponse(coordinators=coordinators)
