"""What every HTTP route reaches: the broker core and the gateway's own state."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from starlette.requests import HTTPConnection
from starlette.responses import JSONResponse

from bayou.broker.context import BrokerState
from bayou.broker.partitioner import Partitioner
from bayou.gateways.http.consumers import ConsumerRegistry
from bayou.gateways.http.payloads import V2


@dataclass
class Gateway:
    state: BrokerState
    consumers: ConsumerRegistry
    partitioner: Partitioner
    max_body_bytes: int
    cors_origins: tuple[str, ...] = ()


def gateway(conn: HTTPConnection) -> Gateway:
    gw: Gateway = conn.app.state.gateway
    return gw


class KafkaJSON(JSONResponse):
    """REST Proxy answers with ``application/vnd.kafka.v2+json``."""

    media_type = V2

    def render(self, content: Any) -> bytes:
        return json.dumps(content, ensure_ascii=False, separators=(",", ":")).encode()


def body_doc(schema: str, *media_types: str, required: bool = True) -> dict[str, Any]:
    """``openapi_extra`` declaring a request body of component ``schema``."""
    ref = {"$ref": f"#/components/schemas/{schema}"}
    return {"requestBody": {"required": required,
                            "content": {m: {"schema": ref} for m in media_types}}}


def answer_doc(description: str, schema: dict[str, Any] | None = None,
               status: int = 200) -> dict[int | str, dict[str, Any]]:
    content = {V2: {"schema": schema}} if schema is not None else None
    out: dict[str, Any] = {"description": description}
    if content:
        out["content"] = content
    return {status: out}
