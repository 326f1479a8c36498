"""SaslHandshake (key 17), v0-v1: the client names its SASL mechanism.

v1: the messages then go in SaslAuthenticate.  v0 is advertised — librdkafka enables SASL
only when a broker lists SaslHandshake v0 — but a v0 handshake (raw SASL frames after it, a
framing Bayou does not serve) is answered UNSUPPORTED_SASL_MECHANISM and the connection
closes; clients that see v1 and SaslAuthenticate use them.  Served: PLAIN, SCRAM-SHA-256,
SCRAM-SHA-512, and OAUTHBEARER when a JWKS file is configured.  Another mechanism gets
UNSUPPORTED_SASL_MECHANISM with the served
list, and the connection closes (as Kafka's authenticator does).  Sent again on an
authenticated connection it starts a re-authentication (KIP-152) with the same mechanism.
"""

from __future__ import annotations

from bayou.errors import ErrorCode
from bayou.gateways.kafka.context import RequestContext
from bayou.gateways.kafka.handlers.registry import handles
from bayou.protocol.kafka import messages as m

PASSWORD_MECHANISMS = ("PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512")


def mechanisms(ctx: RequestContext) -> list[str]:
    extra = ["OAUTHBEARER"] if ctx.session.security.tokens is not None else []
    return [*PASSWORD_MECHANISMS, *extra]


@handles(17, 0, 1)
async def handle_sasl_handshake(
    ctx: RequestContext, request: m.SaslHandshakeRequest
) -> m.SaslHandshakeResponse:
    session = ctx.session
    served = mechanisms(ctx)
    wanted = request.mechanism
    changed = session.authenticated and session.mechanism not in (None, wanted)
    if ctx.version == 0 or wanted not in served or changed:
        session.failed = True
        return m.SaslHandshakeResponse(
            error_code=ErrorCode.UNSUPPORTED_SASL_MECHANISM, mechanisms=served
        )
    session.mechanism = wanted
    session.scram = None
    return m.SaslHandshakeResponse(error_code=ErrorCode.NONE, mechanisms=served)
