"""``POST /sql``: run one SQL view statement (``docs/design/streams.md``).

The body is the statement: ``text/plain`` (or ``application/sql``), or JSON
``{"sql": "…"}``.  The answer is JSON ``{"kind", "result", "text"}``: ``kind`` says what the
statement did (``created``, ``dropped``, ``views``, ``view``, ``rows``), ``result`` holds its
data (the view names, the view's description, the rows of a pull query) and ``text`` what
``bayou sql`` prints; a pull query's answer says where its rows came from (``answered_from``:
``state``, the view's tasks in this broker; ``changelog``; ``state+changelog``; ``topic``).
A statement that does not parse or type-check is a 400 with
``line``, ``column`` and ``caret`` beside the message, pointing at the token.

The statement runs as ``bayou sql`` does, over the broker's own Kafka listener (the views
catalog and the views' topics are Kafka topics), in a worker thread; a pull query on a view
running in this broker reads the view's state in place (``bayou/streams/pull.py``).
"""

from __future__ import annotations

import asyncio
import json

from fastapi import APIRouter, Request
from starlette.responses import Response

from bayou.gateways.http import errors
from bayou.gateways.http.context import KafkaJSON, answer_doc, gateway
from bayou.gateways.http.payloads import read_body

router = APIRouter(tags=["sql"], default_response_class=KafkaJSON)
MAX_STATEMENT_BYTES = 1 << 20
_STATEMENT = {"type": "string", "minLength": 1, "description": "One SQL statement"}
_BODY = {
    "requestBody": {
        "required": True,
        "content": {
            "text/plain": {"schema": _STATEMENT},
            "application/json": {
                "schema": {
                    "type": "object",
                    "required": ["sql"],
                    "properties": {"sql": _STATEMENT},
                }
            },
        },
    }
}
_ANSWER = {
    "type": "object",
    "required": ["kind", "result", "text"],
    "properties": {
        "kind": {"type": "string", "enum": ["created", "dropped", "views", "view", "rows"]},
        "result": {},
        "text": {"type": "string"},
        "answered_from": {
            "type": "string",
            "enum": ["state", "changelog", "state+changelog", "topic"],
            "description": "A pull query: the view's state here, its changelog, or its topic",
        },
    },
}
_SQL_ERROR = {
    "type": "object",
    "required": ["error_code", "message"],
    "properties": {
        "error_code": {"type": "integer"},
        "message": {"type": "string"},
        "line": {"type": "integer"},
        "column": {"type": "integer"},
        "caret": {"type": "string"},
    },
}


@router.post(
    "/sql",
    summary="Run one SQL view statement",
    openapi_extra=_BODY,
    responses={
        **answer_doc("What the statement did", _ANSWER, 200, 413, 503),
        400: {
            "description": "The statement does not parse or type-check (line, column and a "
            "caret point at the token), or cannot be done",
            "content": {"application/vnd.kafka.v2+json": {"schema": _SQL_ERROR}},
        },
    },
)
async def run_sql(request: Request) -> Response:
    from bayou.streams.sql.errors import SqlError
    from bayou.streams.views import SqlSession

    gw = gateway(request)
    body = await read_body(
        request, min(MAX_STATEMENT_BYTES, gw.max_body_bytes), gw.core.request_budget
    )
    text = body.decode("utf-8", "replace")
    if "json" in request.headers.get("content-type", ""):
        try:
            doc = json.loads(body)
        except ValueError:
            raise errors.bad_request("Malformed JSON") from None
        if not isinstance(doc, dict) or not isinstance(doc.get("sql"), str):
            raise errors.bad_request('Expected {"sql": "STATEMENT"}')
        text = doc["sql"]
    if not text.strip():
        raise errors.bad_request("An empty statement")
    if gw.sql_client_config is None:
        raise errors.RestError(503, 50301, "The broker is starting")
    session = SqlSession(dict(gw.sql_client_config), views=gw.views)
    try:
        outcome = await asyncio.to_thread(session.execute, text)
    except SqlError as exc:
        return KafkaJSON({"error_code": 400, **exc.as_dict(text)}, status_code=400)
    answer = {"kind": outcome.kind, "result": outcome.data, "text": outcome.text}
    if outcome.source is not None:
        answer["answered_from"] = outcome.source
    return KafkaJSON(answer)
