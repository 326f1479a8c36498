"""Request durations of the HTTP door, for ``/metrics``.

``RequestTimer`` wraps the application (inside CORS and the login check, so refusals are
timed too) and observes, per request, the time until the answer *starts* — a stream (SSE,
a long-polled read) counts until its first byte, not its whole life.  The API label is the
route's method and path template (``POST /topics/{topic}``), so a topic name never
becomes a label value; a path no route serves is ``other``.  WebSocket sessions are not
timed.
"""

from __future__ import annotations

import time

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from bayou.observability import DoorTraffic


class RequestTimer:
    def __init__(self, app: ASGIApp, traffic: DoorTraffic) -> None:
        self.app = app
        self.traffic = traffic

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        timed = False

        async def timed_send(message: Message) -> None:
            nonlocal timed
            if not timed and message["type"] == "http.response.start":
                timed = True
                route = scope.get("route")
                template = getattr(route, "path", None)
                api = f"{scope.get('method', 'GET')} {template}" if template else "other"
                self.traffic.observer(api)(time.perf_counter() - start)
            await send(message)

        await self.app(scope, receive, timed_send)
