"""Who an HTTP request comes from, and whether it may do what its path says.

Theory of operation
-------------------
``AuthMiddleware`` wraps the ASGI application.  With an authorizer (``--authorizer acl``)
every request and WebSocket must log in: ``Authorization: Basic`` (a user of the user store —
the same as Kafka's SASL users) or ``Bearer`` (a JWT, validated as SASL/OAUTHBEARER's), or a
client certificate on the TLS listener (``HttpProtocol`` puts its principal in the scope).
None, or a wrong one, is answered ``401`` with ``WWW-Authenticate`` and a REST Proxy error
body (``40101``), after the growing delay of a failed login; a WebSocket is closed (1008).
Under a path an application protected with a login page (``sessions.py``: the console), the
session cookie logs in too, and a GET without credentials is sent to that page (303).

The principal goes into ``scope["state"]`` (``request.state.principal``); then the path
decides the first question, as Kafka would ask it: ``/topics/{t}`` GET needs DESCRIBE on the
topic, POST (produce) WRITE, its partitions' records and ``/stream`` READ; anything under
``/consumers/{group}`` READ on the group.  ``/sql`` and ``/connectors`` run as the broker
itself (its internal client), so they ask about the cluster: ALTER, or DESCRIBE for a GET.
A refusal is ``403`` with a REST Proxy body (``40301`` topic or cluster, ``40302`` group);
the topic list shows only topics the principal may describe; subscribing or assigning
checks READ on every named topic (``require``).
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import json
import re
from typing import Any
from urllib.parse import urlencode

from starlette.requests import HTTPConnection
from starlette.types import ASGIApp, Receive, Scope, Send

from bayou.core.security import Security
from bayou.core.security.acl import CLUSTER_NAME, AclOperation, ResourceType
from bayou.gateways.http.errors import RestError
from bayou.gateways.http.sessions import COOKIE, Sessions

DOOR = "http"
TOPIC_DENIED = 40301
GROUP_DENIED = 40302
UNAUTHORIZED = 40101
_TOPIC = re.compile(r"^/topics/([^/]+)(/.*)?$")
_GROUP = re.compile(r"^/consumers/([^/]+)(/.*)?$")
_AS_THE_BROKER = re.compile(r"^/(sql|connectors|connector-plugins)(/.*)?$")
OPEN_PATHS = ("/", "/docs", "/redoc", "/openapi.json")


class AuthMiddleware:
    def __init__(self, app: ASGIApp, security: Security, sessions: Sessions | None = None) -> None:
        self.app = app
        self.security = security
        self.sessions = sessions

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket") or not self.security.enabled:
            await self.app(scope, receive, send)
            return
        path: str = scope.get("path", "")
        sessions = self.sessions
        if scope["type"] == "http" and (
            scope.get("method") == "OPTIONS"
            or path in OPEN_PATHS
            or path.startswith("/docs/")
            or (sessions is not None and sessions.is_open(path))
        ):
            await self.app(scope, receive, send)
            return
        host = scope["client"][0] if scope.get("client") else "?"
        principal, delay = self._login(scope, host)
        if principal is None:
            if delay:
                await asyncio.sleep(delay)
            if sessions is not None and sessions.covers(path) and scope.get("method") == "GET":
                await _to_login_page(scope, send, sessions.login_page)
                return
            await _refuse(scope, send, 401, UNAUTHORIZED, "Authentication required.")
            return
        scope.setdefault("state", {})["principal"] = principal
        denied = self._first_question(scope, principal, host, path)
        if denied is not None:
            await _refuse(scope, send, 403, *denied)
            return
        await self.app(scope, receive, send)

    def _login(self, scope: Scope, host: str) -> tuple[str | None, float]:
        header = ""
        for name, value in scope.get("headers", []):
            if name == b"authorization":
                header = value.decode("latin-1")
                break
        kind, _, credentials = header.partition(" ")
        security = self.security
        if kind.lower() == "basic":
            try:
                raw = base64.b64decode(credentials.strip(), validate=True)
            except (binascii.Error, ValueError):
                return None, security.refuse(DOOR, host, "Basic", "", "malformed").delay_s
            user, sep, password = raw.partition(b":")
            if not sep:
                return None, security.refuse(DOOR, host, "Basic", "", "malformed").delay_s
            login = security.password_login(
                DOOR, host, user.decode("utf-8", "replace"), password, "Basic"
            )
            return login.principal, login.delay_s
        if kind.lower() == "bearer":
            login = security.token_login(DOOR, host, credentials.strip(), "Bearer")
            return login.principal, login.delay_s
        cert = (scope.get("extensions") or {}).get("bayou.principal", {}).get("principal")
        if isinstance(cert, str):
            return cert, 0.0
        sessions = self.sessions
        if sessions is not None and sessions.covers(scope.get("path", "")):
            cookie = HTTPConnection(scope).cookies.get(COOKIE)
            if cookie:
                return sessions.principal(cookie), 0.0
        return None, 0.0  # no credentials: 401 at once (a browser then asks for them)

    def _first_question(
        self, scope: Scope, principal: str, host: str, path: str
    ) -> tuple[int, str] | None:
        method = scope.get("method", "GET")
        allowed = self.security.allowed
        found = _TOPIC.match(path)
        if found:
            topic, rest = found.group(1), found.group(2) or ""
            if method == "POST":
                op = AclOperation.WRITE
            elif rest.endswith(("/records", "/stream")) or scope["type"] == "websocket":
                op = AclOperation.READ
            else:
                op = AclOperation.DESCRIBE
            if not allowed(DOOR, principal, host, op, ResourceType.TOPIC, topic):
                return TOPIC_DENIED, f"Not authorized to access topics: [{topic}]"
            return None
        if _AS_THE_BROKER.match(path):
            op = AclOperation.DESCRIBE if method == "GET" else AclOperation.ALTER
            if not allowed(DOOR, principal, host, op, ResourceType.CLUSTER, CLUSTER_NAME):
                return TOPIC_DENIED, f"Not authorized to {op.name.lower()} the cluster."
            return None
        found = _GROUP.match(path)
        if found and not allowed(
            DOOR, principal, host, AclOperation.READ, ResourceType.GROUP, found.group(1)
        ):
            return GROUP_DENIED, f"Not authorized to access group: {found.group(1)}"
        return None


async def _refuse(scope: Scope, send: Send, status: int, code: int, message: str) -> None:
    if scope["type"] == "websocket":
        await send({"type": "websocket.close", "code": 1008})
        return
    body = json.dumps({"error_code": code, "message": message}).encode()
    headers = [
        (b"content-type", b"application/vnd.kafka.v2+json"),
        (b"content-length", str(len(body)).encode()),
    ]
    if status == 401:
        headers.append((b"www-authenticate", b'Basic realm="bayou", Bearer realm="bayou"'))
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


async def _to_login_page(scope: Scope, send: Send, login_page: str) -> None:
    """A browser without a login, sent to the login page, which comes back here after."""
    here = scope.get("path", "/")
    if scope.get("query_string"):
        here += "?" + scope["query_string"].decode("latin-1")
    location = f"{login_page}?{urlencode({'next': here})}".encode("latin-1")
    headers = [(b"location", location), (b"content-length", b"0"), (b"cache-control", b"no-store")]
    await send({"type": "http.response.start", "status": 303, "headers": headers})
    await send({"type": "http.response.body", "body": b""})


def principal_of(conn: HTTPConnection) -> str | None:
    state: Any = conn.scope.get("state", {})
    value = state.get("principal") if isinstance(state, dict) else None
    return value if isinstance(value, str) else None


def may(conn: HTTPConnection, security: Security, op: AclOperation, topic: str) -> bool:
    """Without an audit line: for filtering listings."""
    if not security.enabled:
        return True
    principal = principal_of(conn)
    host = conn.client.host if conn.client else "?"
    return principal is not None and security.authorizer.authorize(
        principal, host, op, ResourceType.TOPIC, topic
    )


def require(conn: HTTPConnection, security: Security, op: AclOperation, topics: list[str]) -> None:
    """403 unless the principal may ``op`` every topic."""
    if not security.enabled:
        return
    host = conn.client.host if conn.client else "?"
    principal = principal_of(conn)
    denied = [
        t for t in topics if not security.allowed(DOOR, principal, host, op, ResourceType.TOPIC, t)
    ]
    if denied:
        raise RestError(403, TOPIC_DENIED, f"Not authorized to access topics: {denied}")
