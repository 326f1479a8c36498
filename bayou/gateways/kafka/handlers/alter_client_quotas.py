"""AlterClientQuotas (key 49), v0-v1: set and remove client quotas (KIP-546).

Each entry names an entity — ``user``, ``client-id`` (alone or together) or ``ip``, a null
name being that type's ``<default>`` — and ops: a key with a value, or ``remove``.  Entries
are checked as Kafka's controller checks them (``bayou/core/quotas/entities.py``): an empty
or duplicated entity type, an unknown type, an empty name, ``ip`` with another type, an IP
that is not an address, a key the entity type does not take, a fractional value for a whole
key, a key named twice, an entity named twice — each INVALID_REQUEST for that entry only.
Values must be positive (a ``connection_creation_rate`` may be 0: no connection at all).
Valid entries are written to ``__bayou_quotas`` together, fsynced, before the answer, and
apply to every open connection from its next request; ``validate_only`` checks and writes
nothing.  The ACL check (ALTER_CONFIGS on the cluster) is in ``acl_checks.py``.  v1 is
flexible.
"""

from __future__ import annotations

from bayou.errors import ErrorCode
from bayou.gateways.kafka.context import RequestContext
from bayou.gateways.kafka.handlers.registry import handles
from bayou.protocol.kafka import messages as m


@handles(49, 0, 1)
async def handle_alter_client_quotas(
    ctx: RequestContext, request: m.AlterClientQuotasRequest
) -> m.AlterClientQuotasResponse:
    results = await ctx.core.quotas.alter(
        [
            (
                [(e.entity_type, e.entity_name) for e in entry.entity],
                [(op.key, None if op.remove else op.value) for op in entry.ops],
            )
            for entry in request.entries
        ],
        validate_only=request.validate_only,
    )
    return m.AlterClientQuotasResponse(
        entries=[
            m.AlterClientQuotasResponse.EntryData(
                error_code=ErrorCode.NONE if error is None else ErrorCode[error.code],
                error_message=None if error is None else error.message,
                entity=[
                    m.AlterClientQuotasResponse.EntityData(
                        entity_type=e.entity_type, entity_name=e.entity_name
                    )
                    for e in entry.entity
                ],
            )
            for entry, error in zip(request.entries, results, strict=True)
        ]
    )
