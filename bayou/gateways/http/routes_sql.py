"""``POST /sql``: run one SQL view statement (``docs/design/streams.md``).

The body is the statement: ``text/plain`` (or ``application/sql``), or JSON
``{"sql": "…"}``.  The answer is JSON ``{"kind", "result", "text"}``: ``kind`` says what the
statement did (``created``, ``dropped``, ``views``, ``view``, ``rows``), ``result`` holds its
data (the view names, the view's description, the rows of a pull query) and ``text`` what
``bayou sql`` prints.  A statement that does not parse or type-check is a 400 with
``line``, ``column`` and ``caret`` beside the message, pointing at the token.

The statement runs as ``bayou sql`` does, over the broker's own Kafka listener (the views
catalog and the views' topics are Kafka topics), in a worker thread.
"""

from __future__ import annotations

import asyncio
import json

from fastapi import APIRouter, Request
from starlette.responses import Response

from bayou.gateways.http import errors
from bayou.gateways.http.context import KafkaJSON, gateway

router = APIRouter(tags=["sql"], default_response_class=KafkaJSON)
MAX_STATEMENT_BYTES = 1 << 20


@router.post("/sql", summary="Run one SQL view statement")
async def run_sql(request: Request) -> Response:
    from bayou.streams.sql.errors import SqlError
    from bayou.streams.views import SqlSession

    gw = gateway(request)
    body = await request.body()
    if len(body) > MAX_STATEMENT_BYTES:
        raise errors.RestError(413, 413, "The statement is over 1 MiB")
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
    session = SqlSession(dict(gw.sql_client_config))
    try:
        outcome = await asyncio.to_thread(session.execute, text)
    except SqlError as exc:
        return KafkaJSON({"error_code": 400, **exc.as_dict(text)}, status_code=400)
    return KafkaJSON({"kind": outcome.kind, "result": outcome.data, "text": outcome.text})
