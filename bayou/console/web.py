"""What every console page shares: templates, forms, and the authorizer's answers."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any
from urllib.parse import parse_qsl

from jinja2 import Environment, PackageLoader, select_autoescape
from starlette.requests import Request
from starlette.responses import HTMLResponse

from bayou.core.security import Security
from bayou.core.security.acl import CLUSTER_NAME, AclOperation, ResourceType
from bayou.gateways.http.auth import principal_of

DOOR = "http"
MAX_FORM_BYTES = 64 * 1024

templates = Environment(
    loader=PackageLoader("bayou.console", "templates"),
    autoescape=select_autoescape(default=True),
    trim_blocks=True,
    lstrip_blocks=True,
)


def human_bytes(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n} B"


templates.filters["bytes"] = human_bytes


def page_text(request: Request, name: str, context: Mapping[str, Any]) -> str:
    """A template rendered for ``request``'s user."""
    return templates.get_template(name).render(
        request=request, user=principal_of(request), **context
    )


def render(
    request: Request, name: str, context: Mapping[str, Any], status: int = 200
) -> HTMLResponse:
    return HTMLResponse(page_text(request, name, context), status_code=status)


async def form(request: Request) -> dict[str, str]:
    """An ``application/x-www-form-urlencoded`` body (the console's forms), capped."""
    body = b""
    async for chunk in request.stream():
        body += chunk
        if len(body) > MAX_FORM_BYTES:
            break
    return dict(parse_qsl(body[:MAX_FORM_BYTES].decode("utf-8", "replace")))


class Access:
    """What the logged-in user may do, asked of the broker's authorizer (everything when
    security is off).  ``may`` is for filtering lists (no audit line); ``allowed`` is for an
    action (audited as the doors audit)."""

    def __init__(self, security: Security, request: Request) -> None:
        self.security = security
        self.principal = principal_of(request)
        self.host = request.client.host if request.client else "?"

    def may(self, op: AclOperation, resource: ResourceType, name: str) -> bool:
        if not self.security.enabled:
            return True
        return self.principal is not None and self.security.authorizer.authorize(
            self.principal, self.host, op, resource, name
        )

    def allowed(self, op: AclOperation, resource: ResourceType, name: str) -> bool:
        if not self.security.enabled:
            return True
        return self.security.allowed(DOOR, self.principal, self.host, op, resource, name)

    def topic(self, op: AclOperation, name: str) -> bool:
        return self.allowed(op, ResourceType.TOPIC, name)

    def cluster(self, op: AclOperation) -> bool:
        return self.allowed(op, ResourceType.CLUSTER, CLUSTER_NAME)
