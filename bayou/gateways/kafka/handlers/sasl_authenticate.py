"""SaslAuthenticate (key 36), v0-v2: the SASL exchange of the mechanism the handshake named.

- PLAIN: one message, ``authzid NUL user NUL password`` (an authzid other than the user is
  refused); the password is checked against the user store.
- SCRAM-SHA-256/512: two messages (client-first → server-first, client-final →
  server-final), ``bayou.core.security.scram``; an unknown user fails only at the proof.
- OAUTHBEARER (RFC 7628): one message, ``n,,\\x01auth=Bearer TOKEN\\x01\\x01``; the JWT is
  validated against the JWKS file, issuer and audience.

Failure: SASL_AUTHENTICATION_FAILED with Kafka's message, which names the mechanism but
neither the user nor the reason, after the growing delay; then the connection closes.
v1+ tell the session's lifetime (KIP-152, see ``session.py``); v2 is flexible.  Without an
authorizer a connection is ``User:ANONYMOUS`` from the start and may still log in (its
principal is then the user's): other brokers do, for the calls only brokers may make.
"""

from __future__ import annotations

import asyncio
import time

from bayou.core.security import Login
from bayou.core.security.principal import ANONYMOUS
from bayou.core.security.scram import MECHANISMS, ScramError, ScramServer
from bayou.errors import ErrorCode
from bayou.gateways.kafka.context import RequestContext
from bayou.gateways.kafka.handlers.registry import handles
from bayou.protocol.kafka import messages as m

DOOR = "kafka"


def failed_message(mechanism: str) -> str:
    return (
        "Authentication failed during authentication due to invalid credentials with SASL "
        f"mechanism {mechanism}"
    )


@handles(36, 0, 2)
async def handle_sasl_authenticate(
    ctx: RequestContext, request: m.SaslAuthenticateRequest
) -> m.SaslAuthenticateResponse:
    session = ctx.session
    security = session.security
    mechanism = session.mechanism
    message = bytes(request.auth_bytes or b"")
    if mechanism is None:
        session.failed = True
        return m.SaslAuthenticateResponse(
            error_code=ErrorCode.ILLEGAL_SASL_STATE,
            error_message="SaslAuthenticate before SaslHandshake",
        )
    login: Login | None = None
    reply = b""
    if mechanism == "PLAIN":
        parts = message.split(b"\x00")
        if len(parts) != 3 or (parts[0] and parts[0] != parts[1]):
            login = security.refuse(DOOR, session.host, mechanism, "", "malformed PLAIN message")
        else:
            user = parts[1].decode("utf-8", "replace")
            login = security.password_login(DOOR, session.host, user, parts[2], mechanism)
    elif mechanism == "OAUTHBEARER":
        login = _oauthbearer(ctx, message)
    else:
        scram = session.scram
        try:
            if scram is None:
                scram = ScramServer(MECHANISMS[mechanism])
                reply = scram.first(
                    message, lambda user: security.users.credential(user, scram.mechanism)
                )
                if scram.extensions.get("tokenauth") == "true":
                    raise ScramError("delegation tokens are not supported")
                session.scram = scram
                return m.SaslAuthenticateResponse(error_code=ErrorCode.NONE, auth_bytes=reply)
            session.scram = None
            reply = scram.final(message)
            login = security.accept(session.host, scram.user)
        except ScramError as exc:
            session.scram = None
            login = security.refuse(
                DOOR, session.host, mechanism, scram.user if scram else "", str(exc)
            )
    return await _conclude(ctx, login, reply)


def _oauthbearer(ctx: RequestContext, message: bytes) -> Login:
    session = ctx.session
    security = session.security
    text = message.decode("utf-8", "replace")
    gs2, sep, rest = text.partition("\x01")
    token = None
    if sep and gs2.startswith(("n,", "y,")):
        for pair in rest.split("\x01"):
            key, _, value = pair.partition("=")
            if key == "auth" and value.startswith("Bearer "):
                token = value[len("Bearer ") :].strip()
    if not token:
        return security.refuse(DOOR, session.host, "OAUTHBEARER", "", "malformed message")
    return security.token_login(DOOR, session.host, token, "OAUTHBEARER")


async def _conclude(ctx: RequestContext, login: Login, reply: bytes) -> m.SaslAuthenticateResponse:
    session = ctx.session
    mechanism = session.mechanism or ""
    principal = login.principal
    # KIP-152: a re-authentication may not change who it is (a connection without an
    # authorizer starts as ANONYMOUS, which a first login replaces: the brokers' own
    # calls to each other log in even then)
    if principal is not None and session.principal not in (None, ANONYMOUS, principal):
        principal = None
        login = session.security.refuse(
            DOOR, session.host, mechanism, "", "re-authentication changed the principal"
        )
    if principal is None:
        session.failed = True
        if login.delay_s:
            await asyncio.sleep(login.delay_s)
        return m.SaslAuthenticateResponse(
            error_code=ErrorCode.SASL_AUTHENTICATION_FAILED, error_message=failed_message(mechanism)
        )
    session.principal = principal
    session.mechanism = None
    lifetime_ms = session.security.settings.connections_max_reauth_ms
    if ctx.version == 0:  # no way to tell the client: no session limit
        lifetime_ms = 0
    elif login.expires_ms is not None:
        left = max(1, login.expires_ms - time.time_ns() // 1_000_000)
        lifetime_ms = min(lifetime_ms, left) if lifetime_ms else left
    session.expires_at = time.monotonic() + lifetime_ms / 1000 if lifetime_ms else None
    return m.SaslAuthenticateResponse(
        error_code=ErrorCode.NONE,
        auth_bytes=reply,
        session_lifetime_ms=lifetime_ms if ctx.version >= 1 else 0,
    )
