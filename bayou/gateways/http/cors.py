"""Which web pages may use the HTTP door from a browser: CORS and WebSocket origins.

Theory of operation
-------------------
A browser lets a page on one origin (``https://dash.example.com``) read answers from another
(the broker's ``http://broker:8080``) only when the answer carries
``Access-Control-Allow-Origin`` for the page's origin, and asks first (a preflight ``OPTIONS``
with ``Access-Control-Request-Method``) before a request that is not "simple" — a produce with
``Content-Type: application/vnd.kafka.json.v2+json``, a ``DELETE``.  The allow-list is
``http_cors_origins`` (``--http-cors-origin``, repeatable; ``*`` allows any origin).  With a
list, Starlette's ``CORSMiddleware`` answers preflights and marks every answer — REST and the
SSE stream alike, since an ``EventSource`` is an ordinary GET — for allowed origins; without
one, nothing is marked and other origins' pages cannot read anything.  Browsers enforce this on
their side: a refused page sees an error, the broker sees an ordinary request.

WebSocket upgrades are not covered by CORS (a browser opens a socket to any origin and sends
``Origin``), so the door checks them itself (``websocket_origin_allowed``): no ``Origin`` (a
program, not a browser page), the door's own origin (a page it serves), or an origin in the
list is accepted; any other upgrade is refused with 403 before anything is streamed.
"""

from __future__ import annotations

from collections.abc import Collection
from urllib.parse import urlsplit

from fastapi import FastAPI
from starlette.middleware.cors import CORSMiddleware

METHODS = ("GET", "POST", "DELETE")
PREFLIGHT_MAX_AGE_S = 600


def add_cors(app: FastAPI, origins: Collection[str]) -> None:
    """Answer preflights and mark answers for ``origins`` (nothing when it is empty)."""
    if not origins:
        return
    app.add_middleware(
        CORSMiddleware,
        allow_origins=list(origins),
        allow_methods=METHODS,
        allow_headers=["*"],  # Content-Type, Accept, Last-Event-ID … whatever the page sends
        allow_private_network=True,  # the operator listed the origin: let it reach us
        max_age=PREFLIGHT_MAX_AGE_S,
    )


def websocket_origin_allowed(
    origin: str | None, host: str | None, allowed: Collection[str]
) -> bool:
    """May a WebSocket upgrade with this ``Origin`` (to this ``Host``) go ahead?"""
    if origin is None:
        return True
    if "*" in allowed or origin in allowed:
        return True
    return host is not None and urlsplit(origin).netloc.lower() == host.lower()
