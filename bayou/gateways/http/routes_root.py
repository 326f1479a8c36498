"""``GET /``: where to go from the root of the HTTP door.

A browser (``Accept`` naming ``text/html``) is sent to the API's browsable documentation,
``/docs``; any other client gets a small JSON index of the same places, so ``curl`` on the
root says where things are instead of answering 404.
"""

from __future__ import annotations

from fastapi import APIRouter, Request
from starlette.responses import RedirectResponse, Response

from bayou.gateways.http.context import KafkaJSON, answer_doc, gateway

router = APIRouter(tags=["root"], default_response_class=KafkaJSON)

DOCS = "/docs"
INDEX = {
    "docs": DOCS,
    "redoc": "/redoc",
    "openapi": "/openapi.json",
    "topics": "/topics",
}
_INDEX_SCHEMA = {
    "type": "object",
    "properties": {k: {"type": "string"} for k in INDEX},
    "required": list(INDEX),
}


@router.get(
    "/",
    summary="Where things are (a browser is sent to the docs)",
    responses={
        **answer_doc("Links to the docs, the OpenAPI document and the topics", _INDEX_SCHEMA),
        307: {"description": "To /docs (when Accept names text/html)"},
    },
)
async def root(request: Request) -> Response:
    if "text/html" in request.headers.get("accept", ""):
        return RedirectResponse(DOCS, status_code=307)
    return KafkaJSON({**INDEX, **gateway(request).links})
