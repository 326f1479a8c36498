"""DeleteAcls (key 31), v0-v3: remove the ACL bindings matching each filter.

With an authorizer, each filter (Kafka's semantics, ``AclFilter``) removes what it matches
from the ACL store and answers those bindings; the removal is written (fsynced) before the
answer and applies to open connections at their next request.  A filter with an UNKNOWN or
out-of-range code is INVALID_REQUEST.  The caller needs ALTER on the cluster
(``acl_checks.py``).  Without an authorizer every filter is answered SECURITY_DISABLED "No
Authorizer is configured." with no matching ACLs.  v1 adds the pattern type filter; v2+ are
flexible.
"""

from __future__ import annotations

from bayou.core.security.acl import PatternType
from bayou.errors import ErrorCode
from bayou.gateways.kafka.acl_wire import BadAcl, acl_filter
from bayou.gateways.kafka.authorization import NO_AUTHORIZER
from bayou.gateways.kafka.context import RequestContext
from bayou.gateways.kafka.handlers.registry import handles
from bayou.protocol.kafka import messages as m


@handles(31, 0, 3)
async def handle_delete_acls(
    ctx: RequestContext, request: m.DeleteAclsRequest
) -> m.DeleteAclsResponse:
    security = ctx.core.security
    if not security.enabled:
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
    results: list[m.DeleteAclsResponseDeleteAclsFilterResult] = []
    for f in request.filters:
        try:
            flt = acl_filter(
                f.resource_type_filter,
                f.resource_name_filter,
                f.pattern_type_filter if ctx.version >= 1 else PatternType.LITERAL,
                f.principal_filter,
                f.host_filter,
                f.operation,
                f.permission_type,
            )
        except BadAcl as exc:
            results.append(
                m.DeleteAclsResponseDeleteAclsFilterResult(
                    error_code=ErrorCode.INVALID_REQUEST, error_message=str(exc), matching_acls=[]
                )
            )
            continue
        gone = await security.acls.remove(flt)
        results.append(
            m.DeleteAclsResponseDeleteAclsFilterResult(
                error_code=ErrorCode.NONE,
                error_message=None,
                matching_acls=[
                    m.DeleteAclsResponseDeleteAclsMatchingAcl(
                        error_code=ErrorCode.NONE,
                        error_message=None,
                        resource_type=int(b.resource_type),
                        resource_name=b.resource_name,
                        pattern_type=int(b.pattern_type),
                        principal=b.principal,
                        host=b.host,
                        operation=int(b.operation),
                        permission_type=int(b.permission),
                    )
                    for b in gone
                ],
            )
        )
    return m.DeleteAclsResponse(filter_results=results)
