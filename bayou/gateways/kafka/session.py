"""Who is on a Kafka connection: its principal, its SASL state, its session's end.

Theory of operation
-------------------
A connection starts with the principal its listener gives it: ``User:ANONYMOUS`` when the
broker has no authorizer, the client certificate's principal on a TLS listener that
verified one, else none.  A connection without a principal may send only ApiVersions,
SaslHandshake and SaslAuthenticate (SASL_PLAINTEXT / SASL_SSL, as Kafka's
``SaslServerAuthenticator``): anything else closes it.

SaslHandshake names the mechanism (PLAIN, SCRAM-SHA-256, SCRAM-SHA-512, and OAUTHBEARER when
a JWKS file is configured); SaslAuthenticate carries its messages.  A failed exchange is
answered SASL_AUTHENTICATION_FAILED after the growing delay (``LoginDelays``) and closes the
connection; no message says whether the user exists.  Before authentication a frame may be
at most ``SASL_MAX_RECEIVE`` bytes (Kafka's ``sasl.server.max.receive.size``).

KIP-152: a successful SaslAuthenticate (v1+) tells the client how long its session lasts —
``connections.max.reauth.ms``, shortened by a token's expiry — and once it has passed, any
request but ApiVersions, SaslHandshake and SaslAuthenticate closes the connection.  The
client re-authenticates on the open connection with the same mechanism, and must come back
as the same principal.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

from bayou.core.forwarding import is_forwarded
from bayou.core.security.principal import ANONYMOUS, user_principal
from bayou.core.security.scram import ScramServer
from bayou.core.security.users import INTERNAL_USER

if TYPE_CHECKING:
    from bayou.core.security import AclOperation, ResourceType, Security

SASL_MAX_RECEIVE = 512 * 1024
API_VERSIONS, SASL_HANDSHAKE, SASL_AUTHENTICATE = 18, 17, 36
BEFORE_LOGIN = frozenset({API_VERSIONS, SASL_HANDSHAKE, SASL_AUTHENTICATE})


class ClientSession:
    """See the module docstring."""

    def __init__(self, security: Security, host: str, *, tls: bool, cert: str | None) -> None:
        self.security = security
        self.host = host
        self.tls = tls
        self.principal: str | None = cert or (None if security.enabled else ANONYMOUS)
        self.mechanism: str | None = None  # named by the last SaslHandshake
        self.scram: ScramServer | None = None  # a SCRAM exchange under way
        self.expires_at: float | None = None  # monotonic; KIP-152
        self.failed = False  # the exchange failed: close after the answer

    @property
    def authenticated(self) -> bool:
        return self.principal is not None

    def refusal(self, api_key: int) -> str | None:
        """Why this request may not be served now, or None."""
        if api_key in BEFORE_LOGIN:
            return None
        if self.principal is None:
            return f"API {api_key} sent before authentication"
        if self.expires_at is not None and time.monotonic() > self.expires_at:
            return "the SASL session expired without re-authentication"
        return None

    def from_broker(self, client_id: str | None) -> bool:
        """Whether a request is another broker's, on behalf of a client connected there:
        one of the brokers' reserved client ids and, with security on, the brokers'
        internal login — a client cannot take a broker's part by naming its client id."""
        if not is_forwarded(client_id):
            return False
        return not self.security.enabled or self.principal == user_principal(INTERNAL_USER)

    def allowed(self, operation: AclOperation, resource_type: ResourceType, name: str) -> bool:
        return self.security.allowed(
            "kafka", self.principal, self.host, operation, resource_type, name
        )
