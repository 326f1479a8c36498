"""CreateAcls (key 30), v0-v3: SECURITY_DISABLED for every creation, as Kafka without an
authorizer answers.

One result per ACL in the request, in order, each SECURITY_DISABLED with Kafka's message "No
Authorizer is configured."; nothing is stored (``bayou/gateways/kafka/authorization.py``).  v1 adds
the resource pattern type; v2+ are flexible.
"""

from __future__ import annotations

from bayou.errors import ErrorCode
from bayou.gateways.kafka.authorization import NO_AUTHORIZER
from bayou.gateways.kafka.context import RequestContext
from bayou.gateways.kafka.handlers.registry import handles
from bayou.protocol.kafka import messages as m


@handles(30, 0, 3)
async def handle_create_acls(
    ctx: RequestContext, request: m.CreateAclsRequest
) -> m.CreateAclsResponse:
    return m.CreateAclsResponse(
        results=[
            m.CreateAclsResponseAclCreationResult(
                error_code=ErrorCode.SECURITY_DISABLED, error_message=NO_AUTHORIZER
            )
            for _ in request.creations
        ]
    )
