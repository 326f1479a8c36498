"""DescribeUserScramCredentials (key 50), v0: which SCRAM mechanisms each user has.

Answered from the user store (``bayou/core/security/users.py``), as Kafka answers from its
``ScramImage``: a null or empty list describes every user that has a credential; a named user
without one gets RESOURCE_NOT_FOUND, "Attempt to describe a user credential that does not
exist: <user>"; a user named twice gets DUPLICATE_RESOURCE once ("Cannot describe SCRAM
credentials for the same user twice in a single request: <user>").  Only the mechanism and
iteration count are told — never salts or keys.  With an authorizer the caller needs
DESCRIBE on the cluster.  v0 is flexible.
"""

from __future__ import annotations

from bayou.core.security.scram import MECHANISMS
from bayou.errors import ErrorCode
from bayou.gateways.kafka.context import RequestContext
from bayou.gateways.kafka.handlers.registry import handles
from bayou.protocol.kafka import messages as m

NOT_FOUND = "Attempt to describe a user credential that does not exist: "
DUPLICATE = "Cannot describe SCRAM credentials for the same user twice in a single request: "

Result = m.DescribeUserScramCredentialsResponseDescribeUserScramCredentialsResult


@handles(50, 0, 0)
async def handle_describe_user_scram_credentials(
    ctx: RequestContext, request: m.DescribeUserScramCredentialsRequest
) -> m.DescribeUserScramCredentialsResponse:
    users = ctx.core.security.users
    counts: dict[str, int] = {}
    for user in request.users or []:
        counts[user.name] = counts.get(user.name, 0) + 1
    if not counts:
        counts = dict.fromkeys(users.names(), 1)
    results: list[Result] = []
    for name, n in counts.items():
        creds = users.credentials(name)
        if n > 1:
            results.append(
                Result(
                    user=name,
                    error_code=ErrorCode.DUPLICATE_RESOURCE,
                    error_message=DUPLICATE + name,
                )
            )
        elif not creds:
            results.append(
                Result(
                    user=name,
                    error_code=ErrorCode.RESOURCE_NOT_FOUND,
                    error_message=NOT_FOUND + name,
                )
            )
        else:
            results.append(
                Result(
                    user=name,
                    error_code=ErrorCode.NONE,
                    error_message=None,
                    credential_infos=[
                        m.DescribeUserScramCredentialsResponseCredentialInfo(
                            mechanism=MECHANISMS[mech].code, iterations=cred.iterations
                        )
                        for mech, cred in sorted(creds.items())
                    ],
                )
            )
    return m.DescribeUserScramCredentialsResponse(error_code=ErrorCode.NONE, results=results)
