"""AlterUserScramCredentials (key 51), v0: set or remove users' SCRAM credentials.

What Kafka's tools (``kafka-configs --alter --add-config 'SCRAM-SHA-512=[password=…]'``,
AdminClient ``alterUserScramCredentials``) send: upsertions carry the salt and the *salted*
password the client computed (the password never travels), from which the broker keeps the
stored and server keys; deletions name a user and mechanism.  Checks, per user, as Kafka's
``ScramControlManager``: an empty name or a mechanism other than SCRAM-SHA-256/512 is
UNACCEPTABLE_CREDENTIAL / UNSUPPORTED_SASL_MECHANISM, iterations outside 4096..16384
UNACCEPTABLE_CREDENTIAL, the same (user, mechanism) twice DUPLICATE_RESOURCE, deleting a
credential that does not exist RESOURCE_NOT_FOUND; a user with any error changes nothing.
Changes are written (fsynced) before the answer; with an authorizer the caller needs ALTER
on the cluster.  One result per user, in first-seen order.  v0 is flexible.
"""

from __future__ import annotations

from bayou.core.security.scram import (
    BY_CODE,
    MAX_ITERATIONS,
    MIN_ITERATIONS,
    credential_from_salted,
)
from bayou.errors import ErrorCode
from bayou.gateways.kafka.context import RequestContext
from bayou.gateways.kafka.handlers.registry import handles
from bayou.protocol.kafka import messages as m

Result = m.AlterUserScramCredentialsResponseAlterUserScramCredentialsResult


@handles(51, 0, 0)
async def handle_alter_user_scram_credentials(
    ctx: RequestContext, request: m.AlterUserScramCredentialsRequest
) -> m.AlterUserScramCredentialsResponse:
    users = ctx.core.security.users
    errors: dict[str, tuple[int, str]] = {}
    seen: set[tuple[str, int]] = set()
    order: list[str] = []

    def fail(name: str, code: int, message: str) -> None:
        errors.setdefault(name, (code, message))

    items: list[tuple[str, int]] = [(d.name, d.mechanism) for d in request.deletions]
    items += [(u.name, u.mechanism) for u in request.upsertions]
    for name, mechanism in items:
        if name not in order:
            order.append(name)
        if (name, mechanism) in seen:
            fail(name, ErrorCode.DUPLICATE_RESOURCE, "A user credential cannot be altered twice "
                 "in the same request")  # fmt: skip
        seen.add((name, mechanism))
        if not name:
            fail(name, ErrorCode.UNACCEPTABLE_CREDENTIAL, "Username must not be empty")
        if mechanism not in BY_CODE:
            fail(name, ErrorCode.UNSUPPORTED_SASL_MECHANISM, "Unknown SCRAM mechanism")
    for d in request.deletions:
        mech = BY_CODE.get(d.mechanism)
        if mech is not None and users.credential(d.name, mech) is None:
            fail(
                d.name,
                ErrorCode.RESOURCE_NOT_FOUND,
                "Attempt to delete a user credential that does not exist",
            )
    for u in request.upsertions:
        if u.iterations < MIN_ITERATIONS:
            fail(u.name, ErrorCode.UNACCEPTABLE_CREDENTIAL, "Too few iterations")
        elif u.iterations > MAX_ITERATIONS:
            fail(u.name, ErrorCode.UNACCEPTABLE_CREDENTIAL, "Too many iterations")
        mech = BY_CODE.get(u.mechanism)
        if mech is not None and len(u.salted_password) != mech.digest_size:
            fail(u.name, ErrorCode.UNACCEPTABLE_CREDENTIAL, "Salted password of the wrong length")
    for d in request.deletions:
        if d.name not in errors:
            await users.delete(d.name, BY_CODE[d.mechanism])
    for u in request.upsertions:
        if u.name not in errors:
            mech = BY_CODE[u.mechanism]
            await users.upsert(
                u.name,
                credential_from_salted(mech, bytes(u.salt), bytes(u.salted_password), u.iterations),
            )
    return m.AlterUserScramCredentialsResponse(
        results=[
            Result(user=name, error_code=errors[name][0], error_message=errors[name][1])
            if name in errors
            else Result(user=name, error_code=ErrorCode.NONE, error_message=None)
            for name in order
        ]
    )
