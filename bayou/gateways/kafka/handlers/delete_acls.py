"""DeleteAcls (key 31), v0-v3: SECURITY_DISABLED for every filter, as Kafka without an
authorizer answers.

One result per filter in the request, in order, each SECURITY_DISABLED with Kafka's message
"No Authorizer is configured." and no matching ACLs (``bayou/gateways/kafka/authorization.py``).
v1 adds the pattern type filter; v2+ are flexible.
"""

from __future__ import annotations

from bayou.errors import ErrorCode
from bayou.gateways.kafka.authorization import NO_AUTHORIZER
from bayou.gateways.kafka.context import RequestContext
from bayou.gateways.kafka.handlers.registry import handles
from bayou.protocol.kafka import messages as m


@handles(31, 0, 3)
async def handle_delete_acls(
    ctx: RequestContext, request: m.DeleteAclsRequest
) -> m.DeleteAclsResponse:
    return m.DeleteAclsResponse(
        filter_results=[
            m.DeleteAclsResponseDeleteAclsFilterResult(
                error_code=ErrorCode.SECURITY_DISABLED,
                error_message=NO_AUTHORIZER,
                matching_acls=[],
            )
            for _ in request.filters
        ]
    )
