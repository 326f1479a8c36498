"""CreateAcls (key 30), v0-v3: add ACL bindings.

With an authorizer, each creation is checked as Kafka checks it (a concrete resource type,
pattern type, operation valid for the resource type and permission; a principal
``Type:name``; the cluster resource named ``kafka-cluster``) — a bad one answers
INVALID_REQUEST with the reason — and the valid ones are written to the ACL store at once
(one fsynced batch) before the answer; they apply to every connection from then on.  The
caller needs ALTER on the cluster (``acl_checks.py``).  Without an authorizer every creation
is answered SECURITY_DISABLED "No Authorizer is configured." and nothing is stored.  v1 adds
the resource pattern type (v0: literal); v2+ are flexible.
"""

from __future__ import annotations

from bayou.core.security.acl import AclBinding
from bayou.errors import ErrorCode
from bayou.gateways.kafka.acl_wire import BadAcl, creation
from bayou.gateways.kafka.authorization import NO_AUTHORIZER
from bayou.gateways.kafka.context import RequestContext
from bayou.gateways.kafka.handlers.registry import handles
from bayou.protocol.kafka import messages as m


@handles(30, 0, 3)
async def handle_create_acls(
    ctx: RequestContext, request: m.CreateAclsRequest
) -> m.CreateAclsResponse:
    security = ctx.core.security
    if not security.enabled:
        return m.CreateAclsResponse(
            results=[
                m.CreateAclsResponseAclCreationResult(
                    error_code=ErrorCode.SECURITY_DISABLED, error_message=NO_AUTHORIZER
                )
                for _ in request.creations
            ]
        )
    results: list[m.CreateAclsResponseAclCreationResult] = []
    valid: list[AclBinding] = []
    for c in request.creations:
        try:
            binding = creation(c, ctx.version)
            problem = binding.problem()
        except BadAcl as exc:
            problem = str(exc)
        if problem is not None:
            results.append(
                m.CreateAclsResponseAclCreationResult(
                    error_code=ErrorCode.INVALID_REQUEST, error_message=problem
                )
            )
        else:
            valid.append(binding)
            results.append(m.CreateAclsResponseAclCreationResult(error_code=ErrorCode.NONE))
    if valid:
        await security.acls.add(valid)
    return m.CreateAclsResponse(results=results)
