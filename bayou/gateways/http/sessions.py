"""Browser sessions on the HTTP door: a login form's cookie, signed by the broker.

Theory of operation
-------------------
An application served beside REST Proxy (the console) may ask for a login page instead of
the browser's Basic prompt: ``protect(prefix, login_page, open_paths)``.  Then a request
under ``prefix`` with no credentials (no ``Authorization`` header, no client certificate)
may log in with the session cookie, and a GET without one is sent to the login page (303,
``?next=`` the page asked for) rather than answered ``401``.

The login page checks the user's password as every door does (``Security.password_login``:
the user store, the growing delay after a failure, the audit line) and ``issue``s a cookie:
a JWT (PyJWT, HS256) naming the principal, a random session id and an expiry
(``SESSION_S``), signed with a key the broker draws at start — so a restart logs everyone
out, and nothing secret is stored.  ``principal`` checks the signature and expiry, that the
session was not logged out (``revoke`` keeps the id until its expiry) and that the user still
exists; the ACLs are asked on every request as for any other login.

The cookie is ``HttpOnly``, ``SameSite=Strict`` (another site's page cannot make the
browser send it: no cross-site request forgery of the console's forms), ``Secure`` over
HTTPS, and its path is the prefix: it logs in to the console only, never to REST Proxy.
"""

from __future__ import annotations

import secrets
import time

import jwt

from bayou.core.security import Security
from bayou.core.security.principal import user_principal

COOKIE = "bayou_session"
SESSION_S = 8 * 3600
_ALGORITHM = "HS256"


class Sessions:
    """See the module docstring."""

    def __init__(self, security: Security) -> None:
        self.security = security
        self._key = secrets.token_bytes(32)
        self._revoked: dict[str, float] = {}  # session id → its expiry (epoch s)
        self.prefix: str | None = None
        self.login_page = ""
        self.open_paths: tuple[str, ...] = ()

    def protect(self, prefix: str, login_page: str, open_paths: tuple[str, ...]) -> None:
        """Paths under ``prefix`` log in with the cookie and send a browser without one to
        ``login_page``; ``open_paths`` (the page itself, its styles) need no login."""
        self.prefix, self.login_page, self.open_paths = prefix, login_page, open_paths

    def covers(self, path: str) -> bool:
        return self.prefix is not None and (
            path == self.prefix or path.startswith(self.prefix + "/")
        )

    def is_open(self, path: str) -> bool:
        return self.covers(path) and any(
            path == p or (p.endswith("/") and path.startswith(p)) for p in self.open_paths
        )

    def issue(self, user: str) -> str:
        now = int(time.time())
        claims = {"sub": user, "sid": secrets.token_urlsafe(16), "iat": now, "exp": now + SESSION_S}
        return jwt.encode(claims, self._key, _ALGORITHM)

    def _claims(self, token: str) -> dict[str, object] | None:
        try:
            claims: dict[str, object] = jwt.decode(
                token, self._key, [_ALGORITHM], options={"require": ["sub", "sid", "exp"]}
            )
        except jwt.PyJWTError:
            return None
        return claims

    def principal(self, token: str) -> str | None:
        """``User:NAME`` of a valid session cookie, or None."""
        claims = self._claims(token)
        if claims is None or str(claims["sid"]) in self._revoked:
            return None
        user = str(claims["sub"])
        if not self.security.users.credentials(user):
            return None  # the user was deleted since
        return user_principal(user)

    def revoke(self, token: str) -> None:
        """Log a session out: its cookie is refused from now on, even if kept."""
        claims = self._claims(token)
        if claims is None:
            return
        now = time.time()
        for sid, expiry in list(self._revoked.items()):
            if expiry < now:
                del self._revoked[sid]
        exp = claims["exp"]
        self._revoked[str(claims["sid"])] = float(exp) if isinstance(exp, int | float) else now
