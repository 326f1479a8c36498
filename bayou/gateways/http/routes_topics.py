"""Routes: topics, produce, and live streams (REST Proxy v2 paths plus ``/stream``)."""

from __future__ import annotations

import asyncio
import contextlib
from typing import Annotated, Any

from fastapi import APIRouter, Header, Path, Query, Request, WebSocket, WebSocketDisconnect
from starlette.responses import Response, StreamingResponse

from bayou.core import Core, Cursor
from bayou.core.security.acl import AclOperation
from bayou.errors import UnknownTopicOrPartition
from bayou.gateways.http import errors
from bayou.gateways.http.auth import may, principal_of
from bayou.gateways.http.context import KafkaJSON, answer_doc, errors_doc, gateway, paced
from bayou.gateways.http.cors import websocket_origin_allowed
from bayou.gateways.http.payloads import (
    BINARY_V2,
    JSON_V2,
    V2,
    PartitionProduceRequest,
    ProduceRequest,
    parse,
    produce_format,
    read_body,
)
from bayou.gateways.http.produce import partition_info, produce, topic_info, topic_meta
from bayou.gateways.http.streams import follow, sse_body, start_cursors

router = APIRouter(tags=["topics"], default_response_class=KafkaJSON)

# Kafka's rule: ASCII letters, digits, '.', '_', '-', and not "." or ".." (without lookahead:
# the first characters are not a lone "." or "..").
TOPIC_PATTERN = r"^(?:[A-Za-z0-9_-]|\.[A-Za-z0-9_-]|\.\.[A-Za-z0-9._-])[A-Za-z0-9._-]*$"
TopicName = Annotated[str, Path(min_length=1, max_length=249, pattern=TOPIC_PATTERN)]
PartitionIndex = Annotated[int, Path(ge=0, le=2**31 - 1)]
_OFFSETS = {
    "type": "object",
    "properties": {
        "offsets": {
            "type": "array",
            "items": {
                "type": "object",
                "properties": {
                    "partition": {"type": "integer"},
                    "offset": {"type": ["integer", "null"]},
                    "error_code": {"type": ["integer", "null"]},
                    "error": {"type": ["string", "null"]},
                },
            },
        },
        "key_schema_id": {"type": "null"},
        "value_schema_id": {"type": "null"},
    },
}


@router.get(
    "/topics",
    summary="List topic names",
    responses=answer_doc("Topic names", {"type": "array", "items": {"type": "string"}}),
)
async def list_topics(request: Request) -> Response:
    core = gateway(request).core
    return KafkaJSON(
        sorted(t for t in core.topics() if may(request, core.security, AclOperation.DESCRIBE, t))
    )


def produce_body_doc(schema: str) -> dict[str, Any]:
    """The request body of a produce: ``schema`` for the json formats, its ``Binary`` twin
    (keys and values base64) for binary."""

    def ref(name: str) -> dict[str, Any]:
        return {"schema": {"$ref": f"#/components/schemas/{name}"}}

    return {
        "requestBody": {
            "required": True,
            "content": {
                JSON_V2: ref(schema),
                "application/json": ref(schema),
                V2: ref(schema),
                BINARY_V2: ref(f"Binary{schema}"),
            },
        }
    }


FOUND = answer_doc("Found", None, 200, 404, 422)


@router.get("/topics/{topic}", summary="Topic metadata and configs", responses=FOUND)
async def get_topic(request: Request, topic: TopicName) -> Response:
    return KafkaJSON(await topic_info(gateway(request).core, topic))


@router.get("/topics/{topic}/partitions", summary="Partitions of a topic", responses=FOUND)
async def get_partitions(request: Request, topic: TopicName) -> Response:
    core = gateway(request).core
    meta = await topic_meta(core, topic)
    return KafkaJSON([partition_info(core, topic, p) for p in range(meta.partitions)])


@router.get("/topics/{topic}/partitions/{partition}", summary="One partition", responses=FOUND)
async def get_partition(request: Request, topic: TopicName, partition: PartitionIndex) -> Response:
    core = gateway(request).core
    if partition >= (await topic_meta(core, topic)).partitions:
        raise errors.partition_not_found(topic, partition)
    return KafkaJSON(partition_info(core, topic, partition))


@router.get(
    "/topics/{topic}/partitions/{partition}/offsets",
    summary="First and next offsets of a partition",
    responses=answer_doc(
        "The partition's first offset and the next offset to be written",
        {
            "type": "object",
            "required": ["beginning_offset", "end_offset"],
            "properties": {
                "beginning_offset": {"type": "integer"},
                "end_offset": {"type": "integer"},
            },
        },
        200,
        404,
        422,
    ),
)
async def get_partition_offsets(
    request: Request, topic: TopicName, partition: PartitionIndex
) -> Response:
    core = gateway(request).core
    if partition >= (await topic_meta(core, topic)).partitions:
        raise errors.partition_not_found(topic, partition)
    try:
        handle = core.partition(topic, partition)
    except UnknownTopicOrPartition:  # deleted meanwhile
        raise errors.partition_not_found(topic, partition) from None
    return KafkaJSON(
        {"beginning_offset": handle.log_start_offset, "end_offset": handle.log_end_offset}
    )


PRODUCED = answer_doc(
    "Partition and offset of each record", _OFFSETS, 200, 400, 404, 409, 413, 415, 422, 500, 503
)


@router.post(
    "/topics/{topic}",
    summary="Produce records (partition by key, else round-robin)",
    openapi_extra=produce_body_doc("ProduceRequest"),
    responses=PRODUCED,
)
async def produce_to_topic(request: Request, topic: TopicName) -> Response:
    gw = gateway(request)
    fmt = produce_format(request.headers.get("content-type"))
    raw = await read_body(request, gw.max_body_bytes, gw.core.request_budget)
    body = parse(ProduceRequest, raw)
    offsets = await produce(gw.core, gw.partitioner, topic, fmt, body.records)
    await paced(request, produced=len(raw))
    return _produced(offsets)


@router.post(
    "/topics/{topic}/partitions/{partition}",
    summary="Produce records to a partition",
    openapi_extra=produce_body_doc("PartitionProduceRequest"),
    responses=PRODUCED,
)
async def produce_to_partition(
    request: Request, topic: TopicName, partition: PartitionIndex
) -> Response:
    gw = gateway(request)
    fmt = produce_format(request.headers.get("content-type"))
    raw = await read_body(request, gw.max_body_bytes, gw.core.request_budget)
    body = parse(PartitionProduceRequest, raw)
    offsets = await produce(gw.core, gw.partitioner, topic, fmt, body.records, partition)
    await paced(request, produced=len(raw))
    return _produced(offsets)


def _produced(offsets: list[dict[str, Any]]) -> Response:
    return KafkaJSON({"offsets": offsets, "key_schema_id": None, "value_schema_id": None})


From = Annotated[
    str,
    Query(
        alias="from", description="earliest, latest, an offset, or an ISO-8601 time", max_length=64
    ),
]
StreamFormat = Annotated[str, Query(pattern="^(json|binary)$")]


@router.get(
    "/topics/{topic}/stream",
    summary="Follow a topic as Server-Sent Events",
    response_class=StreamingResponse,
    responses={
        200: {
            "content": {"text/event-stream": {"schema": {"type": "string"}}},
            "description": "One event per record; its id resumes the stream",
        },
        **errors_doc(400, 404, 422),
    },
)
async def stream_sse(
    request: Request,
    topic: TopicName,
    start: From = "latest",
    format: StreamFormat = "json",
    last_event_id: Annotated[str | None, Header(max_length=4096)] = None,
) -> Response:
    core = gateway(request).core
    cursors = await start_cursors(core, topic, start, last_event_id)
    return StreamingResponse(
        sse_body(core, topic, cursors, binary=format == "binary", principal=principal_of(request)),
        media_type="text/event-stream",
        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
    )


@router.websocket("/topics/{topic}/stream")
async def stream_ws(
    websocket: WebSocket,
    topic: str,
    start: Annotated[str, Query(alias="from")] = "latest",
    format: str = "json",
    last_event_id: str | None = None,
) -> None:
    """The same stream over WebSocket: one text message per record, with its cursor ``id``."""
    gw = gateway(websocket)
    if not websocket_origin_allowed(
        websocket.headers.get("origin"), websocket.headers.get("host"), gw.cors_origins
    ):
        await websocket.close(code=1008)  # before accept: the upgrade is answered 403
        return
    try:
        cursors = await start_cursors(gw.core, topic, start, last_event_id)
    except errors.RestError as exc:
        await websocket.close(code=1008, reason=exc.message[:120])
        return
    await websocket.accept()
    sender = asyncio.create_task(
        _send_ws(websocket, gw.core, topic, cursors, format == "binary", principal_of(websocket))
    )
    listener = asyncio.create_task(_until_closed(websocket))
    try:
        await asyncio.wait({sender, listener}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in (sender, listener):
            task.cancel()
        await asyncio.gather(sender, listener, return_exceptions=True)


async def _send_ws(
    websocket: WebSocket,
    core: Core,
    topic: str,
    cursors: dict[int, Cursor],
    binary: bool,
    principal: str | None,
) -> None:
    async for events in follow(core, topic, cursors, binary=binary, principal=principal):
        if events is None:
            continue
        for event_id, data in events:
            await websocket.send_text(f'{{"id":"{event_id}",{data[1:]}')
    await websocket.close(code=1001)  # the broker is stopping


async def _until_closed(websocket: WebSocket) -> None:
    """Read (and ignore) client messages until the client goes away."""
    with contextlib.suppress(WebSocketDisconnect):
        while True:
            message = await websocket.receive()
            if message["type"] == "websocket.disconnect":
                return
