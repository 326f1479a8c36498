"""DescribeAcls (key 29), v0-v3: the ACLs matching a filter.

With an authorizer (``--authorizer acl``) the ACL store is searched with Kafka's filter
semantics (``AclFilter``: any/match/literal/prefixed patterns), the result grouped by
resource; the caller needs DESCRIBE on the cluster (``acl_checks.py``).  A filter with an
UNKNOWN or out-of-range code is INVALID_REQUEST.  Without one the whole request is answered
SECURITY_DISABLED with Kafka's message "No Authorizer is configured on the broker" and no
resources, keeping the connection (Sarama's admin client sends this request on its own).
v1 adds the pattern type filter (v0: literal); v2+ are flexible.
"""

from __future__ import annotations

from bayou.core.security.acl import PatternType
from bayou.errors import ErrorCode
from bayou.gateways.kafka.acl_wire import BadAcl, acl_filter
from bayou.gateways.kafka.authorization import NO_AUTHORIZER_DESCRIBE
from bayou.gateways.kafka.context import RequestContext
from bayou.gateways.kafka.handlers.registry import handles
from bayou.protocol.kafka import messages as m


@handles(29, 0, 3)
async def handle_describe_acls(
    ctx: RequestContext, request: m.DescribeAclsRequest
) -> m.DescribeAclsResponse:
    security = ctx.core.security
    if not security.enabled:
        return m.DescribeAclsResponse(
            error_code=ErrorCode.SECURITY_DISABLED,
            error_message=NO_AUTHORIZER_DESCRIBE,
            resources=[],
        )
    try:
        flt = acl_filter(
            request.resource_type_filter,
            request.resource_name_filter,
            request.pattern_type_filter if ctx.version >= 1 else PatternType.LITERAL,
            request.principal_filter,
            request.host_filter,
            request.operation,
            request.permission_type,
        )
    except BadAcl as exc:
        return m.DescribeAclsResponse(
            error_code=ErrorCode.INVALID_REQUEST, error_message=str(exc), resources=[]
        )
    grouped: dict[tuple[int, str, int], list[m.DescribeAclsResponseAclDescription]] = {}
    for b in security.acls.find(flt):
        grouped.setdefault((int(b.resource_type), b.resource_name, int(b.pattern_type)), []).append(
            m.DescribeAclsResponseAclDescription(
                principal=b.principal,
                host=b.host,
                operation=int(b.operation),
                permission_type=int(b.permission),
            )
        )
    return m.DescribeAclsResponse(
        error_code=ErrorCode.NONE,
        error_message=None,
        resources=[
            m.DescribeAclsResponseDescribeAclsResource(
                resource_type=rt, resource_name=name, pattern_type=pt, acls=acls
            )
            for (rt, name, pt), acls in grouped.items()
        ],
    )
