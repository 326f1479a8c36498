"""JWT validation for SASL/OAUTHBEARER and HTTP Bearer, with PyJWT.

The keys come from a JWKS file (``oauth_jwks_file``, reloaded on SIGHUP); a token must be
signed by one of them with an asymmetric algorithm (RS*, PS*, ES*, EdDSA: never ``none`` nor
an HMAC, so a public key cannot be used as a shared secret), unexpired, and — when configured
— from ``oauth_issuer`` for ``oauth_audience``.  The principal is ``User:`` + the claim
``oauth_principal_claim`` (``sub`` by default); the token's expiry bounds the session
(KIP-152 re-authentication).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import jwt

ASYMMETRIC = frozenset(
    {"RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "ES512", "EdDSA"}
)
MAX_TOKEN = 16 * 1024


class TokenError(Exception):
    """The token is not valid (the reason is for the broker's log, not the client)."""


@dataclass(frozen=True)
class ValidToken:
    name: str  # the principal's name (the configured claim)
    expires_ms: int


class TokenValidator:
    def __init__(
        self,
        jwks_file: Path,
        *,
        issuer: str | None = None,
        audience: str | None = None,
        principal_claim: str = "sub",
    ) -> None:
        self.jwks_file = jwks_file
        self.issuer = issuer
        self.audience = audience
        self.principal_claim = principal_claim
        self._keys: jwt.PyJWKSet = self._load()

    def _load(self) -> jwt.PyJWKSet:
        try:
            return jwt.PyJWKSet.from_json(self.jwks_file.read_text())
        except (OSError, ValueError, jwt.PyJWTError) as exc:
            raise OSError(f"cannot load the JWKS file {self.jwks_file}: {exc}") from None

    def reload(self) -> None:
        self._keys = self._load()

    def validate(self, token: str) -> ValidToken:
        if len(token) > MAX_TOKEN:
            raise TokenError("token too long")
        try:
            header = jwt.get_unverified_header(token)
        except jwt.PyJWTError as exc:
            raise TokenError(f"malformed token: {exc}") from None
        alg = header.get("alg")
        if alg not in ASYMMETRIC:
            raise TokenError(f"algorithm {alg!r} not accepted")
        kid = header.get("kid")
        keys = self._keys.keys
        candidates = [k for k in keys if kid is None or k.key_id == kid]
        if not candidates:
            raise TokenError(f"no key {kid!r} in the JWKS")
        options = {"require": ["exp", self.principal_claim]}
        last: Exception | None = None
        for key in candidates:
            try:
                claims = jwt.decode(
                    token,
                    key=key.key,
                    algorithms=[alg],
                    audience=self.audience,
                    issuer=self.issuer,
                    options=options,  # type: ignore[arg-type]
                )
            except (jwt.PyJWTError, ValueError, TypeError) as exc:
                last = exc
                continue
            name = claims.get(self.principal_claim)
            if not isinstance(name, str) or not name:
                raise TokenError(f"claim {self.principal_claim!r} is not a name")
            return ValidToken(name, int(claims["exp"]) * 1000)
        raise TokenError(f"invalid token: {last}")


def describe_claims(token: str) -> str:
    """For logs: the unverified claims' names, never their values."""
    try:
        return json.dumps(sorted(jwt.decode(token, options={"verify_signature": False})))
    except jwt.PyJWTError:
        return "[]"
