"""Routes: REST Proxy v2 consumer instances (``/consumers/{group}/instances/{name}/...``)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path, Query, Request
from starlette.responses import Response

from bayou.core import Committed, TopicPartition
from bayou.core.security.acl import AclOperation
from bayou.gateways.http import errors
from bayou.gateways.http.auth import require
from bayou.gateways.http.consumers import ConsumerInstance
from bayou.gateways.http.context import KafkaJSON, answer_doc, body_doc, gateway, paced
from bayou.gateways.http.payloads import (
    V2,
    CreateConsumer,
    Offsets,
    Partitions,
    Subscription,
    accept_format,
    check_json_content,
    parse,
    read_body,
)

router = APIRouter(
    prefix="/consumers/{group}", tags=["consumers"], default_response_class=KafkaJSON
)

Group = Annotated[str, Path(min_length=1, max_length=249)]
Name = Annotated[str, Path(min_length=1, max_length=200)]
INSTANCE = "/instances/{name}"
JSON_TYPES = (V2, "application/json")
BODY = (400, 413, 415, 422)  # what reading and decoding a body can answer
GROUP = (409, 503)  # what the group coordinator can answer


async def _body(request: Request) -> bytes:
    check_json_content(request.headers.get("content-type"))
    gw = gateway(request)
    return await read_body(request, gw.max_body_bytes, gw.core.request_budget)


def _instance(request: Request, group: str, name: str) -> ConsumerInstance:
    return gateway(request).consumers.get(group, name)


def _partitions(body: Partitions) -> list[TopicPartition]:
    return [(p.topic, p.partition) for p in body.partitions]


@router.post(
    "",
    summary="Create a consumer instance",
    openapi_extra=body_doc("CreateConsumer", *JSON_TYPES),
    responses=answer_doc(
        "The new instance",
        {
            "type": "object",
            "required": ["instance_id", "base_uri"],
            "properties": {"instance_id": {"type": "string"}, "base_uri": {"type": "string"}},
        },
        200,
        *BODY,
        409,
    ),
)
async def create_consumer(request: Request, group: Group) -> Response:
    body = parse(CreateConsumer, await _body(request))
    instance = gateway(request).consumers.create(group, body)
    base = str(request.base_url).rstrip("/")
    return KafkaJSON(
        {
            "instance_id": instance.name,
            "base_uri": f"{base}/consumers/{group}/instances/{instance.name}",
        }
    )


@router.delete(
    INSTANCE,
    status_code=204,
    summary="Delete a consumer instance",
    responses=answer_doc("Deleted", None, 204, 404, 422, *GROUP),
)
async def delete_consumer(request: Request, group: Group, name: Name) -> Response:
    await gateway(request).consumers.delete(group, name)
    return Response(status_code=204)


@router.post(
    INSTANCE + "/subscription",
    status_code=204,
    summary="Subscribe to topics",
    openapi_extra=body_doc("Subscription", *JSON_TYPES),
    responses=answer_doc("Subscribed", None, 204, 404, *BODY, *GROUP),
)
async def subscribe(request: Request, group: Group, name: Name) -> Response:
    instance = _instance(request, group, name)
    body = parse(Subscription, await _body(request))
    security = gateway(request).core.security
    if body.topic_pattern is not None and security.enabled:
        raise errors.RestError(
            403, 40301, "topic_pattern subscriptions are not served while ACLs are on"
        )
    require(request, security, AclOperation.READ, body.topics or [])
    await gateway(request).consumers.subscribe(instance, body.topics, body.topic_pattern)
    return Response(status_code=204)


@router.get(
    INSTANCE + "/subscription",
    summary="Subscribed topics",
    responses=answer_doc(
        "The topics",
        {
            "type": "object",
            "required": ["topics"],
            "properties": {"topics": {"type": "array", "items": {"type": "string"}}},
        },
        200,
        404,
        422,
    ),
)
async def get_subscription(request: Request, group: Group, name: Name) -> Response:
    return KafkaJSON({"topics": _instance(request, group, name).subscription()})


@router.delete(
    INSTANCE + "/subscription",
    status_code=204,
    summary="Unsubscribe",
    responses=answer_doc("Unsubscribed", None, 204, 404, 422, *GROUP),
)
async def unsubscribe(request: Request, group: Group, name: Name) -> Response:
    await gateway(request).consumers.unsubscribe(_instance(request, group, name))
    return Response(status_code=204)


@router.post(
    INSTANCE + "/assignments",
    status_code=204,
    summary="Assign partitions manually",
    openapi_extra=body_doc("Partitions", *JSON_TYPES),
    responses=answer_doc("Assigned", None, 204, 404, *BODY, 409),
)
async def assign(request: Request, group: Group, name: Name) -> Response:
    instance = _instance(request, group, name)
    body = parse(Partitions, await _body(request))
    partitions = _partitions(body)
    topics = sorted({tp[0] for tp in partitions})
    require(request, gateway(request).core.security, AclOperation.READ, topics)
    gateway(request).consumers.assign(instance, partitions)
    return Response(status_code=204)


@router.get(
    INSTANCE + "/assignments",
    summary="Partitions this instance reads",
    responses=answer_doc(
        "The partitions", {"$ref": "#/components/schemas/Partitions"}, 200, 404, 422
    ),
)
async def get_assignments(request: Request, group: Group, name: Name) -> Response:
    gw = gateway(request)
    assigned = gw.consumers.assignment(_instance(request, group, name))
    return KafkaJSON({"partitions": [{"topic": t, "partition": p} for t, p in assigned]})


SEEKED = answer_doc("Done", None, 204, 404, *BODY, 409)


@router.post(
    INSTANCE + "/positions",
    status_code=204,
    summary="Seek to offsets",
    openapi_extra=body_doc("Offsets", *JSON_TYPES),
    responses=SEEKED,
)
async def seek(request: Request, group: Group, name: Name) -> Response:
    instance = _instance(request, group, name)
    body = parse(Offsets, await _body(request))
    gateway(request).consumers.seek(
        instance, {(o.topic, o.partition): o.offset for o in body.offsets}
    )
    return Response(status_code=204)


@router.post(
    INSTANCE + "/positions/beginning",
    status_code=204,
    summary="Seek to the first offsets",
    responses=SEEKED,
    openapi_extra=body_doc("Partitions", *JSON_TYPES),
)
async def seek_beginning(request: Request, group: Group, name: Name) -> Response:
    instance = _instance(request, group, name)
    body = parse(Partitions, await _body(request))
    await gateway(request).consumers.seek_edge(instance, _partitions(body), end=False)
    return Response(status_code=204)


@router.post(
    INSTANCE + "/positions/end",
    status_code=204,
    summary="Seek to the log ends",
    openapi_extra=body_doc("Partitions", *JSON_TYPES),
    responses=SEEKED,
)
async def seek_end(request: Request, group: Group, name: Name) -> Response:
    instance = _instance(request, group, name)
    body = parse(Partitions, await _body(request))
    await gateway(request).consumers.seek_edge(instance, _partitions(body), end=True)
    return Response(status_code=204)


@router.get(
    INSTANCE + "/records",
    summary="Read records (long poll)",
    responses=answer_doc(
        "Records",
        {"type": "array", "items": {"$ref": "#/components/schemas/ConsumerRecord"}},
        200,
        404,
        406,
        422,
        *GROUP,
    ),
)
async def records(
    request: Request,
    group: Group,
    name: Name,
    timeout: Annotated[
        int | None,
        Query(
            ge=0,
            le=60_000,
            description="ms to wait at most (the instance's consumer.request.timeout.ms caps it)",
        ),
    ] = None,
    max_bytes: Annotated[int | None, Query(ge=1, le=2**31 - 1)] = None,
) -> Response:
    gw = gateway(request)
    instance = _instance(request, group, name)
    fmt = accept_format(request.headers.get("accept"), instance.format)
    out = await gw.consumers.records(instance, timeout, max_bytes, fmt)
    response = KafkaJSON(out)
    await paced(request, fetched=len(response.body))
    return response


@router.post(
    INSTANCE + "/offsets",
    summary="Commit offsets (none given: current positions)",
    openapi_extra=body_doc("Offsets", *JSON_TYPES, required=False),
    response_class=Response,  # 200 with no body, as REST Proxy answers
    responses=answer_doc("Committed", None, 200, 404, *BODY, *GROUP),
)
async def commit(request: Request, group: Group, name: Name) -> Response:
    instance = _instance(request, group, name)
    body = parse(Offsets, await _body(request), empty_ok=True)
    gw = gateway(request)
    offsets: dict[TopicPartition, Committed] | None = None
    if body.offsets:
        offsets = {(o.topic, o.partition): (o.offset + 1, o.metadata) for o in body.offsets}
    await gw.consumers.commit(instance, offsets)
    return Response(status_code=200)


@router.get(
    INSTANCE + "/offsets",
    summary="Committed offsets of partitions",
    openapi_extra=body_doc("Partitions", *JSON_TYPES, required=False),
    responses=answer_doc(
        "Committed offsets",
        {
            "type": "object",
            "required": ["offsets"],
            "properties": {
                "offsets": {
                    "type": "array",
                    "items": {
                        "type": "object",
                        "properties": {
                            "topic": {"type": "string"},
                            "partition": {"type": "integer"},
                            "offset": {"type": "integer"},
                            "metadata": {"type": "string"},
                        },
                    },
                }
            },
        },
        200,
        404,
        *BODY,
        *GROUP,
    ),
)
async def committed(request: Request, group: Group, name: Name) -> Response:
    instance = _instance(request, group, name)
    body = parse(Partitions, await _body(request), empty_ok=True)
    gw = gateway(request)
    wanted = _partitions(body) or gw.consumers.assignment(instance)
    found = await gw.consumers.committed(instance, wanted)
    return KafkaJSON(
        {
            "offsets": [
                {
                    "topic": t,
                    "partition": p,
                    "offset": found[(t, p)][0],
                    "metadata": found[(t, p)][1] or "",
                }
                for t, p in wanted
                if (t, p) in found
            ]
        }
    )
