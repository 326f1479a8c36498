"""DescribeUserScramCredentials (key 50), v0: no SCRAM credentials exist yet.

Bayou has no SASL users yet, so — as Kafka answers from an empty credential store — a
request for every user (null or empty list) gets no results, and each named user gets
RESOURCE_NOT_FOUND, "Attempt to describe a user credential that does not exist: <user>";
a user named twice gets DUPLICATE_RESOURCE once ("Cannot describe SCRAM credentials for the
same user twice in a single request: <user>").  v0 is flexible.
"""

from __future__ import annotations

from bayou.errors import ErrorCode
from bayou.gateways.kafka.context import RequestContext
from bayou.gateways.kafka.handlers.registry import handles
from bayou.protocol.kafka import messages as m

NOT_FOUND = "Attempt to describe a user credential that does not exist: "
DUPLICATE = "Cannot describe SCRAM credentials for the same user twice in a single request: "


@handles(50, 0, 0)
async def handle_describe_user_scram_credentials(
    ctx: RequestContext, request: m.DescribeUserScramCredentialsRequest
) -> m.DescribeUserScramCredentialsResponse:
    counts: dict[str, int] = {}
    for user in request.users or []:
        counts[user.name] = counts.get(user.name, 0) + 1
    return m.DescribeUserScramCredentialsResponse(
        error_code=ErrorCode.NONE,
        results=[
            m.DescribeUserScramCredentialsResponseDescribeUserScramCredentialsResult(
                user=name,
                error_code=ErrorCode.RESOURCE_NOT_FOUND if n == 1 else ErrorCode.DUPLICATE_RESOURCE,
                error_message=(NOT_FOUND if n == 1 else DUPLICATE) + name,
            )
            for name, n in counts.items()
        ],
    )
