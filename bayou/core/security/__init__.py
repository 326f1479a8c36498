"""Security for every door: who a client is, and what it may do.

Theory of operation
-------------------
One ``Security`` object, built by ``bayou.app`` and held by the ``Core``, is all a door uses:

- **who**: ``password_login`` (SASL PLAIN, HTTP Basic, MQTT CONNECT, AMQP PLAIN/AMQPLAIN —
  checked against the user store's SCRAM credentials), ``scram`` (the Kafka door's SCRAM
  exchanges, against the same store), ``token_login`` (SASL/OAUTHBEARER and HTTP Bearer:
  JWTs, ``tokens.py``), ``certificate_principal`` (a TLS client certificate, mapped by
  ``principal.py``'s rules).  A login answers a principal (``User:NAME``) or a refusal with
  the delay its answer must wait (``login_delays.py``); every refusal is audited.
- **what**: ``allowed(door, principal, host, operation, resource type, name)`` asks the
  ``Authorizer`` (Kafka's ACL semantics, ``authorizer.py``) and audits a denial.
- **state**: users (``__bayou_users``) and ACLs (``__bayou_acls``) are state logs of the
  engine's ``StateStore``, loaded by ``open`` and changed through ``users``/``acls``; a
  change applies at once to every open connection, as each request asks again.
- **TLS**: the one server context of every door's TLS listener (``tls.py``); ``reload``
  (SIGHUP) reloads it and the JWKS file.
- **the broker's own clients** (the SQL views' and connectors' supervisors reach the broker
  over its Kafka listener): with logins required they log in with SASL PLAIN as
  ``__bayou_internal``, a super user whose password is a random secret kept in the engine's
  state log ``__bayou_internal`` (made by the first broker that needs it; every broker of a
  cluster reads the same one, the first entry of the log).  No stored user of that name can
  log in (``UserStore`` ignores it), so only a process that reads the engine knows it.

With the authorizer off (the default) nothing is required: every question is answered yes,
as by a Kafka broker without ``authorizer.class.name``, but users can be managed and logins
(SASL on the Kafka door) still work.
"""

from __future__ import annotations

import hmac
import logging
import secrets
from dataclasses import dataclass
from pathlib import Path

from bayou.core.security.acl import AclOperation, ResourceType
from bayou.core.security.acl_store import ACLS_LOG, AclStore
from bayou.core.security.audit import Audit
from bayou.core.security.authorizer import Authorizer
from bayou.core.security.login_delays import LoginDelays
from bayou.core.security.principal import map_subject, parse_rules, user_principal
from bayou.core.security.tls import TlsContext, peer_subject
from bayou.core.security.tokens import TokenError, TokenValidator
from bayou.core.security.users import INTERNAL_USER, USERS_LOG, UserStore
from bayou.storage.engine import StateEntry, StateStore

log = logging.getLogger("bayou.security")
INTERNAL_SECRET_LOG = "__bayou_internal"

__all__ = [
    "ACLS_LOG",
    "INTERNAL_USER",
    "USERS_LOG",
    "AclOperation",
    "Login",
    "ResourceType",
    "Security",
    "SecuritySettings",
]


@dataclass(frozen=True)
class SecuritySettings:
    authorizer: bool = False  # --authorizer acl: logins required, ACLs enforced
    super_users: tuple[str, ...] = ()  # principals (User:NAME)
    allow_everyone_if_no_acl_found: bool = False
    principal_mapping_rules: str = "DEFAULT"
    tls_cert: Path | None = None
    tls_key: Path | None = None
    tls_client_ca: Path | None = None
    oauth_jwks_file: Path | None = None
    oauth_issuer: str | None = None
    oauth_audience: str | None = None
    oauth_principal_claim: str = "sub"
    connections_max_reauth_ms: int = 0
    failed_authentication_delay_ms: int = 100


@dataclass(frozen=True)
class Login:
    """A login's outcome: the principal, or None with the delay the refusal waits."""

    principal: str | None
    delay_s: float = 0.0
    expires_ms: int | None = None  # a token's expiry


class Security:
    """See the module docstring."""

    def __init__(self, settings: SecuritySettings | None = None) -> None:
        s = self.settings = settings or SecuritySettings()
        self.users = UserStore()
        self.acls = AclStore()
        self.authorizer = Authorizer(
            self.acls,
            enabled=s.authorizer,
            super_users=frozenset(s.super_users) | {user_principal(INTERNAL_USER)},
            allow_if_no_acl=s.allow_everyone_if_no_acl_found,
        )
        self.audit = Audit()
        self.delays = LoginDelays(s.failed_authentication_delay_ms)
        self.rules = parse_rules(s.principal_mapping_rules)
        self.tls = (
            TlsContext(s.tls_cert, s.tls_key, s.tls_client_ca)
            if s.tls_cert is not None and s.tls_key is not None
            else None
        )
        self.internal_secret = ""  # set by open() when logins are required
        self.tokens = (
            TokenValidator(
                s.oauth_jwks_file,
                issuer=s.oauth_issuer,
                audience=s.oauth_audience,
                principal_claim=s.oauth_principal_claim,
            )
            if s.oauth_jwks_file is not None
            else None
        )

    @property
    def enabled(self) -> bool:
        """Logins required and ACLs enforced (``--authorizer acl``)."""
        return self.settings.authorizer

    async def open(self, state: StateStore, *, shared: bool = False) -> None:
        """Load users and ACLs; and the internal user's secret when logins are required or
        other brokers share the engine (their transaction calls log in with it)."""
        await self.users.open(state)
        await self.acls.open(state)
        if self.enabled or shared:
            self.internal_secret = await _internal_secret(state)

    def internal_login(self) -> tuple[str, str] | None:
        """The SASL PLAIN user and password of the broker's own clients, when required."""
        return (INTERNAL_USER, self.internal_secret) if self.enabled else None

    def broker_login(self) -> tuple[str, str] | None:
        """The login of the calls only brokers may make (WriteTxnMarkers), whatever the
        authorizer: the internal user, once its secret is loaded."""
        return (INTERNAL_USER, self.internal_secret) if self.internal_secret else None

    def is_broker(self, principal: str | None) -> bool:
        """Whether ``principal`` is another broker of the cluster (or this one)."""
        return bool(self.internal_secret) and principal == user_principal(INTERNAL_USER)

    def internal_client_config(self) -> dict[str, object]:
        """librdkafka settings the broker's own clients add to reach its Kafka listener."""
        if not self.enabled:
            return {}
        return {
            "security.protocol": "SASL_PLAINTEXT",
            "sasl.mechanism": "PLAIN",
            "sasl.username": INTERNAL_USER,
            "sasl.password": self.internal_secret,
        }

    def reload(self) -> None:
        """SIGHUP: the TLS certificate and key, and the JWKS file; errors are logged and
        leave the previous ones in force."""
        for what, thing in (("TLS certificate", self.tls), ("JWKS", self.tokens)):
            if thing is None:
                continue
            try:
                thing.reload()
                log.info("%s reloaded", what)
            except OSError as exc:
                log.error("%s not reloaded, the previous one stays: %s", what, exc)

    # -- who -------------------------------------------------------------------------------

    def refuse(self, door: str, host: str, mechanism: str, user: str, reason: str) -> Login:
        self.audit.auth_failed(door, host, mechanism, user, reason)
        return Login(None, self.delays.failed(host))

    def accept(self, host: str, name: str, expires_ms: int | None = None) -> Login:
        self.delays.succeeded(host)
        return Login(user_principal(name), 0.0, expires_ms)

    def password_login(
        self, door: str, host: str, user: str, password: bytes, mechanism: str = "PLAIN"
    ) -> Login:
        if user == INTERNAL_USER:
            secret = self.internal_secret.encode()
            if not secret or not hmac.compare_digest(password, secret):
                return self.refuse(door, host, mechanism, user, "invalid credentials")
            return self.accept(host, user)
        if not user or not self.users.check_password(user, password):
            return self.refuse(door, host, mechanism, user, "invalid credentials")
        return self.accept(host, user)

    def token_login(self, door: str, host: str, token: str, mechanism: str) -> Login:
        if self.tokens is None:
            return self.refuse(door, host, mechanism, "", "no JWKS configured")
        try:
            valid = self.tokens.validate(token)
        except TokenError as exc:
            return self.refuse(door, host, mechanism, "", str(exc))
        return self.accept(host, valid.name, valid.expires_ms)

    def certificate_principal(self, ssl_object: object) -> str | None:
        """``User:NAME`` of a verified client certificate, or None."""
        subject = peer_subject(ssl_object)
        if subject is None:
            return None
        name = map_subject(self.rules, subject)
        return None if name is None else user_principal(name)

    # -- what ------------------------------------------------------------------------------

    def allowed(
        self,
        door: str,
        principal: str | None,
        host: str,
        operation: AclOperation,
        resource_type: ResourceType,
        name: str,
    ) -> bool:
        authorizer = self.authorizer
        if not authorizer.enabled:
            return True
        if principal is not None and authorizer.authorize(
            principal, host, operation, resource_type, name
        ):
            return True
        self.audit.denied(door, principal or "-", host, operation.name, resource_type.name, name)
        return False


async def _internal_secret(state: StateStore) -> str:
    """The internal user's secret: the first entry of its state log, made if there is none.

    Each writer uses its secret as the key, so compaction never drops the first one and
    brokers starting together all settle on the same (the first appended)."""
    log = await state.open_log(INTERNAL_SECRET_LOG)
    entries = await log.read_all()
    if not entries:
        await log.put([StateEntry(secrets.token_urlsafe(32).encode(), b"")], durable=True)
        entries = await log.read_all()
    return entries[0].key.decode()
