"""DescribeClientQuotas (key 48), v0-v1: no quotas are set — an empty list.

Bayou has no client quotas yet, so a valid filter matches no entity: error NONE and no
entries.  The filter is checked as Kafka checks it, each problem failing the whole request
with its message and null entries: an empty entity type or one named twice
(INVALID_REQUEST), an entity type other than ``user``, ``client-id`` and ``ip``
(UNSUPPORTED_VERSION), a match type other than exact (0), default (1) or specified (2), a
match string with default/specified or none with exact (INVALID_REQUEST), and ``ip``
combined with ``user`` or ``client-id`` (INVALID_REQUEST).  v1 is flexible.
"""

from __future__ import annotations

from bayou.errors import ErrorCode, InvalidRequest, KafkaError, UnsupportedVersion
from bayou.gateways.kafka.context import RequestContext
from bayou.gateways.kafka.handlers.registry import handles
from bayou.protocol.kafka import messages as m

ENTITY_TYPES = ("user", "client-id", "ip")
EXACT, DEFAULT, SPECIFIED = 0, 1, 2


def check_filter(components: list[m.DescribeClientQuotasRequestComponentData]) -> None:
    """Raise the KafkaError Kafka raises for this filter, if any."""
    seen: set[str] = set()
    for c in components:
        kind = c.entity_type
        if not kind:
            raise InvalidRequest("Invalid empty entity type.")
        if kind in seen:
            raise InvalidRequest(f"Entity type {kind} cannot appear more than once in the filter.")
        seen.add(kind)
        if kind not in ENTITY_TYPES:
            raise UnsupportedVersion(f"Unsupported entity type {kind}")
        if c.match_type == EXACT:
            if c.match is None:
                raise InvalidRequest(
                    "Request specified MATCH_TYPE_EXACT, but set match string to null."
                )
        elif c.match_type in (DEFAULT, SPECIFIED):
            if c.match is not None:
                name = "MATCH_TYPE_DEFAULT" if c.match_type == DEFAULT else "MATCH_TYPE_SPECIFIED"
                raise InvalidRequest(
                    f"Request specified {name}, but also specified a match string."
                )
        else:
            raise InvalidRequest(f"Unknown match type {c.match_type}")
    if "ip" in seen and seen & {"user", "client-id"}:
        raise InvalidRequest(
            "Invalid entity filter component combination. IP filter component should not be "
            "used with user or clientId filter component."
        )


@handles(48, 0, 1)
async def handle_describe_client_quotas(
    ctx: RequestContext, request: m.DescribeClientQuotasRequest
) -> m.DescribeClientQuotasResponse:
    try:
        check_filter(request.components)
    except KafkaError as exc:
        return m.DescribeClientQuotasResponse(
            error_code=exc.code, error_message=exc.message, entries=None
        )
    return m.DescribeClientQuotasResponse(error_code=ErrorCode.NONE, entries=[])
