"""Consumer-group pages: every group with offsets or members and its total lag; one group's
members and per-partition committed offset, log end and lag, with a live chart of its total
lag (an SSE stream of it once a second); resetting its offsets (to the
earliest, the latest, a time, an offset, or shifted by N) with a dry run first; deleting it.

As ``kafka-consumer-groups --reset-offsets`` does, a reset or a deletion is refused while
the group has live members: their next commit would overwrite it.  The reset commits through
the group coordinator like any client commit, so a consumer that joins afterwards starts
from the new offsets.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from typing import Any
from urllib.parse import quote

from fastapi import APIRouter, Request
from starlette.responses import RedirectResponse, Response, StreamingResponse

from bayou.console.messages import parse_time
from bayou.console.web import Access, form, render
from bayou.core import Core
from bayou.core.cursor import StartSpec, resolve_start
from bayou.core.groups.model import GroupCoordinatorError
from bayou.core.lag import group_lags
from bayou.core.security.acl import AclOperation, ResourceType
from bayou.errors import ErrorCode, KafkaError

STRATEGIES = ("earliest", "latest", "time", "offset", "shift")
LAG_TICK_S = 1.0


def group_url(group: str) -> str:
    return f"/console/groups/{quote(group, safe='')}"


def members_of(core: Core, group: str) -> list[dict[str, str]]:
    if core.groups is None:
        return []
    live = core.groups.read().groups.get(group)
    if live is None:
        return []
    return [
        {
            "member_id": member_id,
            "client_id": str(getattr(member, "client_id", "")),
            "host": str(getattr(member, "client_host", "")),
        }
        for member_id, member in sorted(live.members.items())
    ]


async def planned(
    core: Core, group: str, values: dict[str, str], topic: str
) -> list[dict[str, Any]]:
    """The reset's new offset per partition of the group's (of ``topic``, when given);
    ValueError explains bad input."""
    strategy = values.get("strategy", "")
    if strategy not in STRATEGIES:
        raise ValueError("pick how to reset")
    spec: StartSpec | None = None
    shift = 0
    if strategy == "earliest":
        spec = StartSpec.earliest()
    elif strategy == "latest":
        spec = StartSpec.latest()
    elif strategy == "time":
        spec = StartSpec("timestamp", parse_time(values.get("time", "")))
    elif strategy == "offset":
        spec = StartSpec("offset", int(values.get("offset", "")))
    else:
        shift = int(values.get("shift", ""))
    rows = []
    for row in group_lags(core, [group]):
        if topic and row.topic != topic:
            continue
        p = core.partition(row.topic, row.partition)
        if spec is not None:
            new = await resolve_start(p, spec)
        else:
            new = min(max(row.committed + shift, p.log_start_offset), p.log_end_offset)
        rows.append(
            {
                "topic": row.topic,
                "partition": row.partition,
                "current": row.committed,
                "new": new,
                "end": row.log_end_offset,
            }
        )
    return rows


async def lag_stream(core: Core, group: str) -> AsyncIterator[str]:
    """The group's lag once a second (total and per partition), for the page's chart."""
    yield "retry: 2000\n\n"
    while not core.stopping:
        rows = group_lags(core, [group])
        event = {
            "time": time.time(),
            "lag": sum(r.lag for r in rows),
            "partitions": {f"{r.topic}-{r.partition}": r.lag for r in rows},
        }
        yield f"data: {json.dumps(event)}\n\n"
        await asyncio.sleep(LAG_TICK_S)


def add_routes(router: APIRouter, core: Core) -> None:
    @router.get("/groups")
    async def groups_page(request: Request) -> Response:
        access = Access(core.security, request)
        totals: dict[str, int] = {}
        for row in group_lags(core):
            totals[row.group] = totals.get(row.group, 0) + row.lag
        live = core.groups.read().groups if core.groups is not None else {}
        rows = [
            {
                "group": g,
                "url": group_url(g),
                "lag": totals.get(g, 0),
                "members": len(live[g].members) if g in live else 0,
            }
            for g in sorted(set(totals) | set(live))
            if access.may(AclOperation.DESCRIBE, ResourceType.GROUP, g)
        ]
        return render(request, "groups.html", {"page": "groups", "groups": rows})

    def group_page(
        request: Request,
        group: str,
        *,
        values: dict[str, str] | None = None,
        preview: list[dict[str, Any]] | None = None,
        error: str = "",
        notice: str = "",
        status: int = 200,
    ) -> Response:
        if not Access(core.security, request).may(AclOperation.DESCRIBE, ResourceType.GROUP, group):
            return render(request, "missing.html", {"what": f"Group {group!r}"}, 404)
        lags = group_lags(core, [group])
        members = members_of(core, group)
        if not lags and not members and not error:
            return render(request, "missing.html", {"what": f"Group {group!r}"}, 404)
        context = {
            "page": "groups",
            "group": group,
            "url": group_url(group),
            "members": members,
            "partitions": lags,
            "lag": sum(r.lag for r in lags),
            "topics": sorted({r.topic for r in lags}),
            "values": values or {"strategy": "earliest"},
            "preview": preview,
            "error": error,
            "notice": notice,
        }
        return render(request, "group.html", context, status)

    @router.get("/groups/{group}")
    async def describe(request: Request, group: str) -> Response:
        return group_page(request, group)

    @router.get("/groups/{group}/live")
    async def live(request: Request, group: str) -> Response:
        if not Access(core.security, request).may(AclOperation.DESCRIBE, ResourceType.GROUP, group):
            return Response("No such group.", 404)
        return StreamingResponse(
            lag_stream(core, group),
            media_type="text/event-stream",
            headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
        )

    @router.post("/groups/{group}/reset")
    async def reset(request: Request, group: str) -> Response:
        values = await form(request)
        if not Access(core.security, request).allowed(AclOperation.READ, ResourceType.GROUP, group):
            return group_page(
                request, group, error="Not authorized to reset this group.", status=403
            )
        try:
            rows = await planned(core, group, values, values.get("topic", ""))
        except ValueError as exc:
            return group_page(
                request, group, values=values, error=f"Invalid input: {exc}", status=422
            )
        if values.get("apply") != "yes":
            return group_page(request, group, values=values, preview=rows)
        if members_of(core, group):
            return group_page(
                request,
                group,
                values=values,
                preview=rows,
                error="The group has active members: stop them before resetting its offsets.",
                status=409,
            )
        try:
            await core.offsets(group).commit({(r["topic"], r["partition"]): r["new"] for r in rows})
        except (GroupCoordinatorError, KafkaError) as exc:
            return group_page(request, group, values=values, error=str(exc), status=409)
        return group_page(request, group, notice=f"Reset {len(rows)} partition(s).")

    @router.post("/groups/{group}/delete")
    async def delete(request: Request, group: str) -> Response:
        values = await form(request)
        if values.get("confirm") != group:
            return group_page(request, group, error="Type the group's id to delete it.", status=422)
        if not Access(core.security, request).allowed(
            AclOperation.DELETE, ResourceType.GROUP, group
        ):
            return group_page(
                request, group, error="Not authorized to delete this group.", status=403
            )
        driver = core.group_driver()
        codes = await driver.run(lambda now, _t: driver.coordinator.delete_groups(now, [group]))
        if codes and codes[0] != ErrorCode.NONE:
            return group_page(request, group, error=f"Refused: {codes[0].name}", status=409)
        return RedirectResponse("/console/groups", status_code=303)
