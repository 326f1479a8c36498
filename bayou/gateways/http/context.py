"""What every HTTP route reaches: the broker core and the door's own state."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from starlette.requests import HTTPConnection
from starlette.responses import JSONResponse

from bayou.core import Core
from bayou.core.partitioner import Partitioner
from bayou.gateways.http.consumers import ConsumerRegistry
from bayou.gateways.http.payloads import V2
from bayou.gateways.http.sessions import Sessions
from bayou.gateways.pacing import hold, throttle_ms


@dataclass
class Gateway:
    core: Core
    consumers: ConsumerRegistry
    partitioner: Partitioner
    max_body_bytes: int
    cors_origins: tuple[str, ...] = ()
    #: more entries of ``GET /``'s index (name → path), from applications added beside
    #: REST Proxy (``HttpGateway.add_routes``)
    links: dict[str, str] = field(default_factory=dict)
    # librdkafka settings reaching this broker's own Kafka listener (SQL statements), once up
    sql_client_config: dict[str, Any] | None = None
    #: the broker's connectors (``bayou.connect.supervisor.ConnectSupervisor``), once up
    connect: Any = None
    #: the views running in this broker (``bayou.streams.views.ViewSupervisor``): their
    #: state answers pull queries
    views: Any = None
    #: browser sessions of a login page (the console's), beside Basic and Bearer
    sessions: Sessions = field(init=False)

    def __post_init__(self) -> None:
        self.sessions = Sessions(self.core.security)


def gateway(conn: HTTPConnection) -> Gateway:
    gw: Gateway = conn.app.state.gateway
    return gw


async def paced(conn: HTTPConnection, produced: int = 0, fetched: int = 0) -> None:
    """Count an exchange's bytes against the client's quotas and hold the response for
    the throttle time they leave (``gateways/pacing.py``)."""
    quotas = gateway(conn).core.quotas
    if quotas.active:
        principal = (conn.scope.get("state") or {}).get("principal")
        await hold(throttle_ms(quotas, principal, "", produced, fetched))


class KafkaJSON(JSONResponse):
    """REST Proxy answers with ``application/vnd.kafka.v2+json``."""

    media_type = V2

    def render(self, content: Any) -> bytes:
        return json.dumps(content, ensure_ascii=False, separators=(",", ":")).encode()


ERROR_SCHEMA = {"$ref": "#/components/schemas/Error"}
ERROR_REASONS = {
    400: "Malformed JSON, an empty body where one is required, or a malformed event id",
    404: "Topic, partition or consumer instance not found",
    406: "Accept asks for another embedded format than the consumer instance's",
    409: "Conflicts with the current state: the instance exists, subscription versus "
    "assignment, a partition not assigned, the group's state, a topic name that collides "
    "with another",
    413: "The body is over http_max_body_bytes, or the records make a batch over the topic's "
    "max.message.bytes",
    415: "Content-Type not accepted here",
    422: "A path, query or body value of the wrong shape or out of range",
    500: "The broker could not do it (a storage error)",
    503: "Retriable: the group coordinator or the storage is not available now",
}


def errors_doc(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """``responses`` entries for the REST Proxy error answers an operation can give."""
    return {
        status: {"description": ERROR_REASONS[status], "content": {V2: {"schema": ERROR_SCHEMA}}}
        for status in statuses
    }


def body_doc(schema: str, *media_types: str, required: bool = True) -> dict[str, Any]:
    """``openapi_extra`` declaring a request body of component ``schema``."""
    ref = {"$ref": f"#/components/schemas/{schema}"}
    return {
        "requestBody": {"required": required, "content": {m: {"schema": ref} for m in media_types}}
    }


def answer_doc(
    description: str, schema: dict[str, Any] | None = None, status: int = 200, *errors: int
) -> dict[int | str, dict[str, Any]]:
    """``responses`` for the answer ``status`` (its ``schema`` under REST Proxy's media type)
    and the error statuses ``errors``."""
    content = {V2: {"schema": schema}} if schema is not None else None
    out: dict[str, Any] = {"description": description}
    if content:
        out["content"] = content
    return {status: out, **errors_doc(*errors)}
