"""``GET /metrics``: the broker's Prometheus metrics (``bayou/observability/``).

Text format 0.0.4, or OpenMetrics when the scraper's ``Accept`` asks for it.  With an
authorizer the scraper logs in like any HTTP client and needs DESCRIBE on the cluster (the
metrics name every topic and group).  Not part of the OpenAPI document: it is not REST Proxy.
"""

from __future__ import annotations

from fastapi import APIRouter, Request
from starlette.responses import Response

from bayou.core.security.acl import CLUSTER_NAME, AclOperation, ResourceType
from bayou.gateways.http import errors
from bayou.gateways.http.auth import DOOR, principal_of
from bayou.gateways.http.context import gateway

router = APIRouter()


@router.get("/metrics", include_in_schema=False)
async def metrics(request: Request) -> Response:
    core = gateway(request).core
    security = core.security
    if security.enabled:
        host = request.client.host if request.client else "?"
        if not security.allowed(
            DOOR,
            principal_of(request),
            host,
            AclOperation.DESCRIBE,
            ResourceType.CLUSTER,
            CLUSTER_NAME,
        ):
            raise errors.RestError(403, 40301, "Not authorized to describe the cluster.")
    body, content_type = core.metrics.exposition(request.headers.get("accept"))
    return Response(body, media_type=content_type)
