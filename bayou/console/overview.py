"""The overview page and its live stream: the broker's totals once a second over SSE.

Each stream keeps the previous second's counters of its own connection and sends the
differences as rates, so the broker keeps no history: a browser that opens the page starts
its charts then.  The stream ends when the browser goes away (Starlette cancels it on the
disconnect) or the broker stops.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from typing import Any

from fastapi import APIRouter, Request
from starlette.responses import Response, StreamingResponse

from bayou.console.web import Access, render
from bayou.core import Core
from bayou.core.lag import group_lags
from bayou.core.security.acl import AclOperation
from bayou.errors import KafkaError

TICK_S = 1.0


def snapshot(core: Core) -> dict[str, Any]:
    """The broker's totals now: per-door counters and connections, topics, partitions,
    bytes on disk, groups with their lag."""
    doors: dict[str, dict[str, int]] = {}
    for name, door in core.metrics.doors.items():
        mi, bi, mo, bo = door.totals()
        doors[name] = {
            "messages_in": mi,
            "bytes_in": bi,
            "messages_out": mo,
            "bytes_out": bo,
            "connections": door.connections(),
        }
    partitions = size = 0
    for name, meta in core.topics().items():
        for index in range(meta.partitions):
            try:
                size += core.partition(name, index).size_bytes
            except KafkaError:
                continue
            partitions += 1
    lag: dict[str, int] = {}
    for row in group_lags(core):
        lag[row.group] = lag.get(row.group, 0) + row.lag
    members: dict[str, int] = {}
    if core.groups is not None:
        members = {g: len(live.members) for g, live in core.groups.read().groups.items()}
    groups = [
        {"group": g, "lag": lag.get(g, 0), "members": members.get(g, 0)}
        for g in sorted(set(lag) | set(members))
    ]
    return {
        "time": time.time(),
        "topics": len(core.topics()),
        "partitions": partitions,
        "bytes": size,
        "doors": doors,
        "groups": groups,
    }


def rates(before: dict[str, Any], now: dict[str, Any]) -> dict[str, Any]:
    """Per-second rates of the counters between two snapshots, and the gauges of ``now``."""
    seconds = max(1e-3, now["time"] - before["time"])
    doors = {}
    for name, counts in now["doors"].items():
        old = before["doors"].get(name, counts)
        doors[name] = {
            key: max(0.0, (counts[key] - old[key]) / seconds)
            for key in ("messages_in", "bytes_in", "messages_out", "bytes_out")
        }
        doors[name]["connections"] = counts["connections"]
    return {**now, "doors": doors}


def add_routes(router: APIRouter, core: Core) -> None:
    @router.get("")
    async def overview_page(request: Request) -> Response:
        if not Access(core.security, request).cluster(AclOperation.DESCRIBE):
            return render(request, "denied.html", {"what": "the cluster overview"}, 403)
        return render(
            request, "overview.html", {"page": "overview", "now": snapshot(core), "tick": TICK_S}
        )

    @router.get("/live")
    async def live(request: Request) -> Response:
        if not Access(core.security, request).cluster(AclOperation.DESCRIBE):
            return Response("Not authorized to describe the cluster.", 403)
        return StreamingResponse(
            _stream(core),
            media_type="text/event-stream",
            headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
        )


async def _stream(core: Core) -> AsyncIterator[str]:
    before = snapshot(core)
    yield "retry: 2000\n\n"
    while not core.stopping:  # Starlette cancels the stream when the browser goes away
        await asyncio.sleep(TICK_S)
        now = snapshot(core)
        yield f"data: {json.dumps(rates(before, now))}\n\n"
        before = now
