"""DescribeAcls (key 29), v0-v3: SECURITY_DISABLED, as Kafka answers without an authorizer.

Bayou has no ACLs yet (``bayou/gateways/kafka/authorization.py``), so the whole request is answered
with SECURITY_DISABLED and Kafka's message "No Authorizer is configured on the broker" and no
resources; the connection stays open (Sarama's admin client sends this request on its own).
v1 adds the pattern type filter; v2+ are flexible.
"""

from __future__ import annotations

from bayou.errors import ErrorCode
from bayou.gateways.kafka.authorization import NO_AUTHORIZER_DESCRIBE
from bayou.gateways.kafka.context import RequestContext
from bayou.gateways.kafka.handlers.registry import handles
from bayou.protocol.kafka import messages as m


@handles(29, 0, 3)
async def handle_describe_acls(
    ctx: RequestContext, request: m.DescribeAclsRequest
) -> m.DescribeAclsResponse:
    return m.DescribeAclsResponse(
        error_code=ErrorCode.SECURITY_DISABLED, error_message=NO_AUTHORIZER_DESCRIBE, resources=[]
    )
