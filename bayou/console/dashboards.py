"""Dashboards: a topic's numeric JSON field plotted live, saved in the broker.

A dashboard names a topic, a field (``$.a.b``) and how to plot it: the value (one line, or
one line per record key), the count of records per second, or a moving average over a
window.  Dashboards are kept in the broker's internal state log
``__bayou_console_dashboards`` (compacted: key the dashboard's id, value its JSON; deleting
writes a tombstone), opened on first use, so they survive restarts and anyone with the URL —
and READ on the topic — sees the same one.

The live stream follows the topic's partitions from their ends with core ``Cursor``s and
sends, once a second, the records' count and the mean of the field per line for that second
(at most ``MAX_LINES`` keys; records past ``MAX_RECORDS_PER_TICK`` in one second are counted
but not read).  The moving average is computed by the page over those means.
"""

from __future__ import annotations

import asyncio
import json
import re
import time
from collections.abc import AsyncIterator
from typing import Any
from urllib.parse import quote

from fastapi import APIRouter, Request
from starlette.responses import RedirectResponse, Response, StreamingResponse

from bayou.console.web import Access, form, render
from bayou.core import Core
from bayou.core.security.acl import AclOperation, ResourceType
from bayou.errors import KafkaError
from bayou.storage.engine import StateEntry, StateLog, latest

LOG_NAME = "__bayou_console_dashboards"
MODES = ("value", "per-key", "rate", "average")
MAX_LINES = 10
MAX_RECORDS_PER_TICK = 10_000
READ_BYTES = 1024 * 1024
TICK_S = 1.0
_FIELD = re.compile(r"^\$(\.[A-Za-z0-9_\-]+)+$")
_ID = re.compile(r"[^a-z0-9]+")


class DashboardStore:
    """The saved dashboards (id → settings), over the state log."""

    def __init__(self, core: Core) -> None:
        self.core = core
        self.boards: dict[str, dict[str, Any]] = {}
        self._log: StateLog | None = None
        self._opening = asyncio.Lock()

    async def _open(self) -> StateLog:
        async with self._opening:
            if self._log is None:
                log = await self.core.engine.state.open_log(LOG_NAME)
                for key, entry in (await latest(log)).items():
                    try:
                        if entry.value is not None:
                            self.boards[key.decode()] = json.loads(entry.value)
                    except ValueError:
                        continue  # not ours to judge
                self._log = log
            return self._log

    async def all(self) -> dict[str, dict[str, Any]]:
        await self._open()
        return self.boards

    async def save(self, board: dict[str, Any]) -> str:
        log = await self._open()
        base = _ID.sub("-", board["title"].lower()).strip("-")[:40] or "dashboard"
        board_id, n = base, 1
        while board_id in self.boards:
            n += 1
            board_id = f"{base}-{n}"
        await log.put([StateEntry(board_id.encode(), json.dumps(board).encode())], durable=True)
        self.boards[board_id] = board
        return board_id

    async def delete(self, board_id: str) -> None:
        log = await self._open()
        if board_id in self.boards:
            await log.put([StateEntry(board_id.encode(), None)], durable=True)
            del self.boards[board_id]


def board_url(board_id: str) -> str:
    return f"/console/dashboards/{quote(board_id, safe='')}"


def field_value(value: bytes | None, path: list[str]) -> float | None:
    if value is None:
        return None
    try:
        node: Any = json.loads(value)
    except ValueError:
        return None
    for part in path:
        if not isinstance(node, dict) or part not in node:
            return None
        node = node[part]
    if isinstance(node, bool) or not isinstance(node, int | float):
        return None
    return float(node)


def validate(core: Core, values: dict[str, str]) -> dict[str, Any]:
    """The dashboard the form describes; ValueError explains what is wrong."""
    title = values.get("title", "").strip()
    if not title:
        raise ValueError("give the dashboard a title")
    topic = values.get("topic", "")
    if topic not in core.topics():
        raise ValueError(f"topic {topic!r} does not exist")
    path = values.get("field", "").strip()
    if not _FIELD.match(path):
        raise ValueError("the field is a JSON path such as $.temperature or $.reading.value")
    mode = values.get("mode", "value")
    if mode not in MODES:
        raise ValueError("pick what to plot")
    window = int(values.get("window", "10") or "10")
    if not 1 <= window <= 3600:
        raise ValueError("the moving-average window is 1 to 3600 seconds")
    return {"title": title, "topic": topic, "field": path, "mode": mode, "window": window}


async def follow(core: Core, board: dict[str, Any]) -> AsyncIterator[str]:
    """The dashboard's SSE stream: one event a second (see the module docstring)."""
    topic = board["topic"]
    path = board["field"].split(".")[1:]
    per_key = board["mode"] == "per-key"
    meta = core.topics().get(topic)
    if meta is None:
        return
    cursors = [
        core.cursor(topic, p, core.partition(topic, p).log_end_offset)
        for p in range(meta.partitions)
    ]
    yield "retry: 2000\n\n"
    lines: list[str] = []
    while not core.stopping:
        await asyncio.sleep(TICK_S)
        count = 0
        sums: dict[str, list[float]] = {}
        try:
            for cursor in cursors:
                while cursor.position < cursor.end() and count < MAX_RECORDS_PER_TICK:
                    records = await cursor.read(READ_BYTES)
                    if not records:
                        break
                    count += len(records)
                    for record in records:
                        value = field_value(record.value, path)
                        if value is None:
                            continue
                        line = (
                            (record.key or b"").decode("utf-8", "replace") if per_key else "value"
                        )
                        if line not in lines:
                            if len(lines) >= MAX_LINES:
                                continue
                            lines.append(line)
                        acc = sums.setdefault(line, [0.0, 0.0])
                        acc[0] += value
                        acc[1] += 1
                skipped = cursor.end() - cursor.position
                if count >= MAX_RECORDS_PER_TICK and skipped > 0:
                    count += skipped
                    cursor.position = cursor.end()
        except KafkaError:
            return  # the topic went away
        means = {line: acc[0] / acc[1] for line, acc in sums.items()}
        event = {"time": time.time(), "count": count, "lines": lines, "means": means}
        yield f"data: {json.dumps(event)}\n\n"


def add_routes(router: APIRouter, core: Core) -> None:
    store = DashboardStore(core)

    def readable(request: Request, topic: str) -> bool:
        return Access(core.security, request).may(AclOperation.READ, ResourceType.TOPIC, topic)

    async def list_page(
        request: Request, values: dict[str, str] | None = None, error: str = "", status: int = 200
    ) -> Response:
        boards = [
            {"id": board_id, "url": board_url(board_id), **board}
            for board_id, board in sorted((await store.all()).items())
            if readable(request, board["topic"])
        ]
        topics = [t for t in sorted(core.topics()) if readable(request, t)]
        context = {
            "page": "dashboards",
            "boards": boards,
            "topics": topics,
            "values": values or {"mode": "value", "window": "10", "field": "$."},
            "modes": MODES,
            "error": error,
        }
        return render(request, "dashboards.html", context, status)

    @router.get("/dashboards")
    async def dashboards_page(request: Request) -> Response:
        return await list_page(request)

    @router.post("/dashboards")
    async def create(request: Request) -> Response:
        values = await form(request)
        try:
            board = validate(core, values)
        except ValueError as exc:
            return await list_page(request, values, f"Invalid input: {exc}", 422)
        if not Access(core.security, request).topic(AclOperation.READ, board["topic"]):
            return await list_page(request, values, "Not authorized to read that topic.", 403)
        board_id = await store.save(board)
        return RedirectResponse(board_url(board_id), status_code=303)

    async def found(request: Request, board_id: str) -> dict[str, Any] | None:
        board = (await store.all()).get(board_id)
        if board is None or not readable(request, board["topic"]):
            return None
        return board

    @router.get("/dashboards/{board_id}")
    async def board_page(request: Request, board_id: str) -> Response:
        board = await found(request, board_id)
        if board is None:
            return render(request, "missing.html", {"what": f"Dashboard {board_id!r}"}, 404)
        context = {"page": "dashboards", "id": board_id, "url": board_url(board_id), **board}
        return render(request, "dashboard.html", context)

    @router.get("/dashboards/{board_id}/live")
    async def board_live(request: Request, board_id: str) -> Response:
        board = await found(request, board_id)
        if board is None:
            return Response("No such dashboard.", 404)
        return StreamingResponse(
            follow(core, board),
            media_type="text/event-stream",
            headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
        )

    @router.post("/dashboards/{board_id}/delete")
    async def delete(request: Request, board_id: str) -> Response:
        if await found(request, board_id) is not None:
            await store.delete(board_id)
        return RedirectResponse("/console/dashboards", status_code=303)
