"""The SQL views page: every view of the catalog, its query and columns, and a chart of any
column in one click.

The catalog is the compacted topic ``_bayou_views`` (``bayou/streams/views.py``), read here to
its end with core cursors each time the page is shown (a handful of records).  A view's
results are records of the topic of its name, so its chart is a dashboard
(``dashboards.py``) of that topic and the column's field, a line per group key: "Chart" posts
the dashboard form already filled in and the page opens on it, plotting each new result as it
is written.

A pull query typed in the page's box (``?sql=SELECT … FROM view WHERE …``) runs as ``POST
/sql`` runs it (``SqlSession`` with the views of this broker: an aggregating view answers from
its state, ``bayou/streams/pull.py``), and its rows are shown as a table.  Only pull queries
run here (a GET changes nothing), on a view the user may read.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

from fastapi import APIRouter, Request
from starlette.responses import Response

from bayou.console.web import Access, render
from bayou.core import Core
from bayou.core.security.acl import AclOperation, ResourceType
from bayou.errors import KafkaError
from bayou.gateways.http.context import gateway
from bayou.streams.sql.errors import SqlError
from bayou.streams.sql.planner import WINDOW_COLUMNS
from bayou.streams.sql.statements import CreateView, PullQuery, parse_statement
from bayou.streams.views import CATALOG_TOPIC, SqlSession, ViewRecord, apply_catalog_record

READ_BYTES = 1024 * 1024
MAX_CATALOG_RECORDS = 100_000


async def read_catalog(core: Core) -> dict[str, ViewRecord]:
    views: dict[str, ViewRecord] = {}
    if CATALOG_TOPIC not in core.topics():
        return views
    cursor = core.cursor(CATALOG_TOPIC, 0, 0)
    seen = 0
    try:
        while cursor.position < cursor.end() and seen < MAX_CATALOG_RECORDS:
            records = await cursor.read(READ_BYTES)
            if not records:
                break
            seen += len(records)
            for record in records:
                apply_catalog_record(views, record.key, record.value)
    except KafkaError:
        return views
    return views


def describe(view: ViewRecord) -> dict[str, Any]:
    """What the page shows of a view: its source, shape, columns and the chartable ones
    (the SELECT columns but the group keys and the window bounds)."""
    out: dict[str, Any] = {"name": view.name, "sql": view.sql, "charts": []}
    try:
        statement = parse_statement(view.sql)
    except SqlError as exc:
        out["error"] = exc.message
        return out
    assert isinstance(statement, CreateView)
    plan = statement.plan
    out.update(source=plan.source, shape=plan.shape, columns=plan.columns, key=plan.group_by)
    out["charts"] = [
        c for c in plan.columns if c not in plan.group_by and c not in (*WINDOW_COLUMNS, "*")
    ]
    return out


async def pull(
    request: Request, access: Access, catalog: dict[str, ViewRecord], sql: str
) -> dict[str, Any]:
    """A pull query's rows as a table (``columns``, ``rows`` of cell texts), or ``error``."""
    try:
        statement = parse_statement(sql, set(catalog))
    except SqlError as exc:
        return {"error": exc.render(sql)}
    if not isinstance(statement, PullQuery):
        return {"error": "Only pull queries run here (SELECT … FROM view WHERE …)"}
    if not access.may(AclOperation.READ, ResourceType.TOPIC, statement.view):
        return {"error": f"Not allowed to read the view {statement.view!r}"}
    gw = gateway(request)
    if gw.sql_client_config is None:
        return {"error": "The broker is starting"}
    session = SqlSession(dict(gw.sql_client_config), views=gw.views)
    try:
        outcome = await asyncio.to_thread(session.execute, sql)
    except SqlError as exc:
        return {"error": exc.render(sql)}
    rows: list[dict[str, Any]] = outcome.data
    columns: list[str] = []
    for row in rows:
        columns += [c for c in row if c not in columns]
    cells = [
        [
            "" if c not in row else v if isinstance(v := row[c], str) else json.dumps(v)
            for c in columns
        ]
        for row in rows
    ]
    return {"columns": columns, "rows": cells}


def add_routes(router: APIRouter, core: Core) -> None:
    @router.get("/views")
    async def views_page(request: Request, sql: str = "") -> Response:
        access = Access(core.security, request)
        catalog = await read_catalog(core)
        views = [
            describe(view)
            for name, view in sorted(catalog.items())
            if access.may(AclOperation.READ, ResourceType.TOPIC, name)
        ]
        answer = await pull(request, access, catalog, sql) if sql.strip() else None
        context = {"page": "views", "views": views, "sql": sql, "answer": answer}
        return render(request, "views.html", context)
