"""The ASGI application: FastAPI routing, REST Proxy errors, the OpenAPI document.

FastAPI (on Starlette) gives routing, query/path validation and ``/openapi.json``.  The
browsable ``/docs`` (Swagger UI) and ``/redoc`` pages load their JavaScript and CSS from this
process (the ``fastapi-offline`` distribution ships them), so they work without internet;
``GET /`` sends a browser to ``/docs`` and tells any other client where things are.

Request bodies are read and decoded by ``payloads`` (size cap, content type, REST Proxy's
formats) rather than by FastAPI's body handling, so their schemas are added to the document by
``_openapi`` from the same pydantic models.  Every error leaves as REST Proxy's JSON
``{"error_code", "message"}``; a client that leaves halfway through its body is a DEBUG
line, not an error.
"""

from __future__ import annotations

import importlib.metadata
import logging
import re
from typing import Any

from fastapi import FastAPI
from fastapi.exceptions import RequestValidationError
from fastapi_offline import FastAPIOffline
from pydantic import TypeAdapter
from starlette.exceptions import HTTPException
from starlette.requests import ClientDisconnect, Request
from starlette.responses import Response
from starlette.routing import Route

from bayou.gateways.http import (
    errors,
    routes_connect,
    routes_consumers,
    routes_metrics,
    routes_root,
    routes_sql,
    routes_topics,
)
from bayou.gateways.http.auth import AuthMiddleware
from bayou.gateways.http.context import Gateway, KafkaJSON
from bayou.gateways.http.cors import add_cors
from bayou.gateways.http.payloads import BODY_MODELS
from bayou.gateways.http.timing import RequestTimer

log = logging.getLogger(__name__)

DOCS_ASSETS = "/docs/assets"


def _version() -> str:
    try:
        return importlib.metadata.version("bayou")
    except importlib.metadata.PackageNotFoundError:
        return "0"


def create_app(gw: Gateway) -> FastAPI:
    app = FastAPIOffline(
        title="Bayou HTTP gateway",
        version=_version(),
        description="Confluent REST Proxy v2 API and live topic streams (SSE, WebSocket) "
        "served by the broker itself.",
        static_url=DOCS_ASSETS,
    )
    app.state.gateway = gw
    app.include_router(routes_root.router)
    app.include_router(routes_topics.router)
    app.include_router(routes_consumers.router)
    app.include_router(routes_metrics.router)
    app.include_router(routes_sql.router)
    app.include_router(routes_connect.router)
    app.add_api_route("/{path:path}", _options, methods=["OPTIONS"], include_in_schema=False)
    app.add_exception_handler(errors.RestError, _rest_error)
    app.add_exception_handler(routes_connect.ConnectApiError, routes_connect.render_error)
    app.add_exception_handler(RequestValidationError, _invalid)
    app.add_exception_handler(HTTPException, _http_error)
    app.add_exception_handler(ClientDisconnect, _client_gone)
    app.add_exception_handler(Exception, _unexpected)
    app.add_middleware(RequestTimer, traffic=gw.core.metrics.door("http"))
    app.add_middleware(AuthMiddleware, security=gw.core.security, sessions=gw.sessions)
    add_cors(app, gw.cors_origins)  # outermost: refusals carry CORS headers too
    app.openapi = lambda: _openapi(app)  # type: ignore[method-assign]
    return app


async def _rest_error(_request: Request, exc: Exception) -> Response:
    assert isinstance(exc, errors.RestError)
    return KafkaJSON(exc.body(), status_code=exc.status)


async def _invalid(_request: Request, exc: Exception) -> Response:
    assert isinstance(exc, RequestValidationError)
    parts = []
    for e in list(exc.errors())[:5]:
        where = ".".join(str(p) for p in e.get("loc", ()))
        parts.append(f"{where}: {e.get('msg', 'invalid')}")
    return KafkaJSON(
        {"error_code": 422, "message": "; ".join(parts) or "Invalid request"}, status_code=422
    )


async def _http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    headers = dict(exc.headers or {})
    if exc.status_code == 405:  # Starlette names the methods of one route; a path has several
        headers["Allow"] = ", ".join(allowed_methods(request))
    return KafkaJSON(
        {"error_code": exc.status_code, "message": str(exc.detail)},
        status_code=exc.status_code,
        headers=headers,
    )


def allowed_methods(request: Request) -> list[str]:
    """Every method served at the request's path (and OPTIONS); [] for none: the operations
    of the OpenAPI document, plus the app's own pages (``/docs`` …)."""
    path = request.url.path
    methods: set[str] = set()
    for template, served in _operations(request.app):
        if template.fullmatch(path):
            methods |= served
    for route in request.app.router.routes:
        if (
            isinstance(route, Route)
            and route.endpoint is not _options
            and route.methods
            and route.path_regex.match(path)
        ):
            methods |= route.methods
    return sorted(methods | {"OPTIONS"}) if methods else []


def _operations(app: FastAPI) -> list[tuple[re.Pattern[str], set[str]]]:
    """The document's paths as patterns (``{name}`` = one segment), with their methods."""
    found: list[tuple[re.Pattern[str], set[str]]] | None = getattr(app.state, "operations", None)
    if found is None:
        found = [
            (
                re.compile(re.sub(r"\\\{[^/]+?\\\}", "[^/]+", re.escape(path))),
                {method.upper() for method in operations},
            )
            for path, operations in app.openapi()["paths"].items()
        ]
        app.state.operations = found
    return found


async def _options(request: Request) -> Response:
    """``OPTIONS`` (not a CORS preflight, which the CORS middleware answers first): the
    methods served at this path, in ``Allow``."""
    methods = allowed_methods(request)
    if not methods:
        raise errors.RestError(404, 404, f"Nothing is served at {request.url.path}.")
    return Response(status_code=204, headers={"Allow": ", ".join(methods)})


async def _client_gone(request: Request, _exc: Exception) -> Response:
    """The client closed the connection before its whole body came: nothing to answer, and
    nothing wrong with the broker (one DEBUG line, no traceback)."""
    client = request.client
    log.debug(
        "HTTP %s %s: the client%s went away before sending its whole body",
        request.method,
        request.url.path,
        f" {client.host}:{client.port}" if client else "",
    )
    return Response(status_code=400)  # never delivered: the connection is gone


async def _unexpected(request: Request, exc: Exception) -> Response:
    log.exception("HTTP %s %s failed", request.method, request.url.path, exc_info=exc)
    return KafkaJSON(
        {"error_code": errors.INTERNAL, "message": "Internal server error"}, status_code=500
    )


def _openapi(app: FastAPI) -> dict[str, Any]:
    if app.openapi_schema is not None:
        return app.openapi_schema
    from fastapi.openapi.utils import get_openapi

    doc = get_openapi(
        title=app.title, version=app.version, description=app.description, routes=app.routes
    )
    schemas = doc.setdefault("components", {}).setdefault("schemas", {})
    for model in BODY_MODELS:
        schema = TypeAdapter(model).json_schema(
            ref_template="#/components/schemas/{model}", by_alias=True
        )
        schemas.update(schema.pop("$defs", {}))
        schemas[model.__name__] = schema
    schemas["Error"] = {
        "type": "object",
        "required": ["error_code", "message"],
        "properties": {"error_code": {"type": "integer"}, "message": {"type": "string"}},
    }
    app.openapi_schema = doc
    return doc
