"""DescribeClientQuotas (key 48), v0-v1: the quotas set, by Kafka's entity filter.

Entries come from the core's quota store (``bayou/core/quotas``), each entity with all its
quota values.  The filter is checked and matched as Kafka's ``ClientQuotasImage.describe``:
components match an exact name (0), the ``<default>`` entity (1, a null name on the wire) or
any name of the type (2); non-strict filters also return entities with further types, a
strict one only entities with exactly the types named; no component and not strict returns
everything.  A problem fails the whole request with its message and null entries: an empty
entity type or one named twice, a wrong match string (INVALID_REQUEST), an entity type other
than ``user``, ``client-id`` and ``ip`` (UNSUPPORTED_VERSION), ``ip`` with ``user`` or
``client-id`` (INVALID_REQUEST).  The ACL check (DESCRIBE_CONFIGS on the cluster) is in
``acl_checks.py``.  v1 is flexible.
"""

from __future__ import annotations

from bayou.core.quotas import DescribeFilter, QuotaRequestError
from bayou.errors import ErrorCode
from bayou.gateways.kafka.context import RequestContext
from bayou.gateways.kafka.handlers.registry import handles
from bayou.protocol.kafka import messages as m


@handles(48, 0, 1)
async def handle_describe_client_quotas(
    ctx: RequestContext, request: m.DescribeClientQuotasRequest
) -> m.DescribeClientQuotasResponse:
    try:
        flt = DescribeFilter.parse(
            [(c.entity_type, c.match_type, c.match) for c in request.components],
            request.strict,
        )
    except QuotaRequestError as exc:
        return m.DescribeClientQuotasResponse(
            error_code=ErrorCode[exc.code], error_message=exc.message, entries=None
        )
    return m.DescribeClientQuotasResponse(
        error_code=ErrorCode.NONE,
        error_message=None,
        entries=[
            m.DescribeClientQuotasResponse.EntryData(
                entity=[
                    m.DescribeClientQuotasResponse.EntityData(entity_type=t, entity_name=n)
                    for t, n in entity
                ],
                values=[
                    m.DescribeClientQuotasResponse.ValueData(key=k, value=v)
                    for k, v in sorted(values.items())
                ],
            )
            for entity, values in ctx.core.quotas.describe(flt)
        ],
    )
