"""Content types and bodies: what a REST Proxy v2 client sends and gets back.

Theory of operation
-------------------
The *embedded format* says how a record's ``key``/``value`` travel inside the JSON body:

- ``json`` (``application/vnd.kafka.json.v2+json``, and plain ``application/json``): any JSON
  value, stored as its compact UTF-8 JSON text; ``null`` means no key / a null value.
- ``binary`` (``application/vnd.kafka.binary.v2+json``): base64 text, stored as the decoded
  bytes.

Record *headers* travel as REST Proxy v3 writes them, whatever the format: a list of
``{"name": text, "value": base64 text or null}``, stored as the decoded bytes; consumer
instances and streams give them back the same way (the ``headers`` key is present when the
record has any).

Producers name the format with ``Content-Type``; consumer instances fix it at creation
(``"format"``) and ``Accept`` on ``GET .../records`` must agree.  Avro, Protobuf and JSON
Schema formats need a schema registry and answer 415.

Bodies are read with a size cap (``read_body``), decoded by pydantic models (the same models
feed the OpenAPI document), and every failure is a ``RestError``: 413 too large, 415 wrong
content type, 400 malformed JSON, 422 a body of the wrong shape.
"""

from __future__ import annotations

import base64
import binascii
import enum
import json
from typing import Annotated, Any, TypeVar

from pydantic import BaseModel, ConfigDict, Field, ValidationError
from starlette.requests import Request

from bayou.core.request_budget import BodyReader, RequestBudget, RequestStalled
from bayou.gateways.http.errors import JSON_CONVERSION, RestError, bad_request, unprocessable
from bayou.gateways.http.integers import Integer

V2 = "application/vnd.kafka.v2+json"
JSON_V2 = "application/vnd.kafka.json.v2+json"
BINARY_V2 = "application/vnd.kafka.binary.v2+json"


class Format(enum.StrEnum):
    JSON = "json"
    BINARY = "binary"


_PRODUCE_TYPES = {
    JSON_V2: Format.JSON,
    BINARY_V2: Format.BINARY,
    "application/json": Format.JSON,
    V2: Format.JSON,
}
_UNSUPPORTED_FORMATS = ("avro", "protobuf", "jsonschema")


def media_type(header: str | None) -> str:
    """``"application/JSON; charset=utf-8"`` → ``"application/json"``."""
    return (header or "").split(";", 1)[0].strip().lower()


def produce_format(content_type: str | None) -> Format:
    """The embedded format a produce request's ``Content-Type`` names; 415 otherwise."""
    kind = media_type(content_type)
    fmt = _PRODUCE_TYPES.get(kind)
    if fmt is not None:
        return fmt
    if any(f".{name}." in kind for name in _UNSUPPORTED_FORMATS):
        raise RestError(
            415,
            415,
            f"Embedded format of {kind} needs a schema registry, "
            "which Bayou does not have; use json or binary.",
        )
    raise RestError(
        415,
        415,
        f"Unsupported Content-Type {kind or '(none)'}: use {JSON_V2}, "
        f"{BINARY_V2} or application/json.",
    )


def check_json_content(content_type: str | None) -> None:
    """Bodies that are not records: any JSON media type (or none at all) is accepted."""
    kind = media_type(content_type)
    if kind and kind != "application/json" and not kind.endswith("+json"):
        raise RestError(415, 415, f"Unsupported Content-Type {kind}: send JSON ({V2}).")


def accept_format(accept: str | None, default: Format) -> Format:
    """The embedded format ``Accept`` asks records in; ``default`` for generic types."""
    wanted: Format | None = None
    for part in (accept or "").split(","):
        kind = media_type(part)
        if kind == JSON_V2:
            return Format.JSON if default == Format.JSON else _mismatch(kind)
        if kind == BINARY_V2:
            return Format.BINARY if default == Format.BINARY else _mismatch(kind)
        if any(f".{name}." in kind for name in _UNSUPPORTED_FORMATS):
            wanted = wanted or _mismatch(kind)
    return wanted or default


def _mismatch(kind: str) -> Format:
    raise RestError(
        406,
        40601,
        f"The requested embedded data format {kind} does not match "
        "the deserializer for this consumer instance.",
    )


async def read_body(request: Request, limit: int, budget: RequestBudget) -> bytes:
    """The whole body, refusing (413) anything over ``limit`` bytes before reading it all.

    The body counts in the broker-wide request-bytes budget while it is read: a large one
    waits for its share, and one that makes no progress for the stall timeout is answered
    408 (and its connection closed)."""
    declared = request.headers.get("content-length")
    expected = int(declared) if declared is not None and declared.isdigit() else 0
    if expected > limit:
        raise _too_large(limit)
    reader = BodyReader(budget, expected)
    chunks: list[bytes] = []
    size = 0
    try:
        await reader.update(0)
        async for chunk in reader.chunks(request.stream()):
            size += len(chunk)
            if size > limit:
                raise _too_large(limit)
            chunks.append(chunk)
            await reader.update(size)
    except RequestStalled as exc:
        raise RestError(408, 40800, f"Request timeout: {exc}.") from None
    finally:
        reader.close()
    return b"".join(chunks)


def _too_large(limit: int) -> RestError:
    return RestError(413, 413, f"Request body is larger than {limit} bytes (http_max_body_bytes).")


M = TypeVar("M", bound=BaseModel)


def parse(model: type[M], body: bytes, *, empty_ok: bool = False) -> M:
    """Decode ``body`` into ``model``: 400 for malformed JSON, 422 for the wrong shape."""
    if not body.strip():
        if empty_ok:
            return model()
        raise bad_request("Request body is empty; a JSON object is expected.")
    try:
        return model.model_validate_json(body)
    except ValidationError as exc:
        errors = exc.errors(include_url=False, include_context=False, include_input=False)
        if any(e["type"] == "json_invalid" for e in errors):
            raise bad_request(f"Malformed JSON: {errors[0]['msg']}") from None
        raise unprocessable(_describe(errors)) from None


def _describe(errors: list[Any]) -> str:
    parts = []
    for e in errors[:5]:
        where = ".".join(str(p) for p in e["loc"]) or "body"
        parts.append(f"{where}: {e['msg']}")
    return "Invalid request body: " + "; ".join(parts)


# ----------------------------------------------------------------- bodies (and OpenAPI schemas)

# Integer fields take JSON numbers and numeric strings, as REST Proxy does (see ``integers``).
Int = Annotated[int, Integer()]
PartitionIndex = Annotated[int, Integer(0, 2**31 - 1)]
OffsetValue = Annotated[int, Integer(0, 2**63 - 1)]
FetchMinBytes = Annotated[int, Integer(-1)]
RequestTimeoutMs = Annotated[int, Integer(0, 60_000)]


class _Body(BaseModel):
    """Strict: JSON types as the schema says them (``false`` is not ``0``; integer fields
    take numeric strings, as the schema says), so the OpenAPI document is exactly what is
    accepted; unknown keys are ignored."""

    model_config = ConfigDict(extra="ignore", strict=True)


# Exactly what ``base64.b64decode(..., validate=True)`` accepts: padded standard base64.
BASE64 = r"^(?:[A-Za-z0-9+/]{4})*(?:[A-Za-z0-9+/]{2}==|[A-Za-z0-9+/]{3}=)?$"


class RecordHeader(_Body):
    name: str = Field(description="Header name.")
    value: str | None = Field(
        None, pattern=BASE64, description="base64 of the value's bytes; null: no value."
    )


class ProduceRecord(_Body):
    key: Any = Field(None, description="JSON value (json format) or base64 text (binary).")
    value: Any = Field(None, description="JSON value (json format) or base64 text (binary).")
    partition: PartitionIndex | None = Field(
        None, description="Target partition; default: by key, else round-robin."
    )
    headers: list[RecordHeader] = Field(
        default_factory=list,
        description="Record headers, in order (REST Proxy v3 style); any format.",
    )


class ProduceRequest(_Body):
    records: list[ProduceRecord] = Field(min_length=1)
    key_schema: str | None = None
    key_schema_id: Int | None = None
    value_schema: str | None = None
    value_schema_id: Int | None = None


class PartitionProduceRequest(_Body):
    records: list[ProduceRecord] = Field(min_length=1)


# The same bodies as the binary format reads them (keys and values base64 text): for the
# OpenAPI document only, since one decoder serves both formats (``encode_field``).


class BinaryProduceRecord(ProduceRecord):
    key: str | None = Field(None, pattern=BASE64, description="base64 of the key's bytes.")
    value: str | None = Field(None, pattern=BASE64, description="base64 of the value's bytes.")


class BinaryProduceRequest(ProduceRequest):
    records: list[BinaryProduceRecord] = Field(min_length=1)  # type: ignore[assignment]


class BinaryPartitionProduceRequest(PartitionProduceRequest):
    records: list[BinaryProduceRecord] = Field(min_length=1)  # type: ignore[assignment]


def encode_field(fmt: Format, value: Any, index: int, name: str) -> bytes | None:
    """A record's key or value as stored bytes (None stays None)."""
    if value is None:
        return None
    if fmt == Format.JSON:
        return json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode()
    if not isinstance(value, str):
        raise unprocessable(
            f"records.{index}.{name}: binary data must be base64 text", JSON_CONVERSION
        )
    try:
        return base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        raise unprocessable(f"records.{index}.{name}: not valid base64", JSON_CONVERSION) from None


def encode_headers(headers: list[RecordHeader], index: int) -> list[tuple[str, bytes | None]]:
    """A record's headers as stored: names as given, values base64-decoded."""
    out: list[tuple[str, bytes | None]] = []
    for h in headers:
        try:
            value = None if h.value is None else base64.b64decode(h.value, validate=True)
        except (binascii.Error, ValueError):
            raise unprocessable(
                f"records.{index}.headers: value of {h.name!r} is not valid base64", JSON_CONVERSION
            ) from None
        out.append((h.name, value))
    return out


def decode_headers(headers: list[tuple[str, bytes | None]]) -> list[dict[str, str | None]]:
    """Stored headers as every HTTP reader gets them: ``{"name", "value": base64|null}``."""
    return [
        {"name": name, "value": None if value is None else base64.b64encode(value).decode("ascii")}
        for name, value in headers
    ]


def decode_field(fmt: Format, data: bytes | None, where: str) -> Any:
    """Stored bytes as a consumer of ``fmt`` receives them."""
    if data is None:
        return None
    if fmt == Format.BINARY:
        return base64.b64encode(data).decode("ascii")
    try:
        return json.loads(data)
    except ValueError:
        raise unprocessable(
            f"The record at {where} is not JSON; read it with a binary consumer instance.",
            JSON_CONVERSION,
        ) from None


# ------------------------------------------------------------------------- consumer bodies


class TopicPartitionBody(_Body):
    topic: str = Field(min_length=1)
    partition: PartitionIndex


class CreateConsumer(_Body):
    name: str | None = Field(None, min_length=1, max_length=200, pattern=r"^[A-Za-z0-9._-]+$")
    format: Format = Format.BINARY
    auto_offset_reset: str = Field(
        "latest", alias="auto.offset.reset", pattern="^(earliest|latest|smallest|largest|none)$"
    )
    auto_commit_enable: str = Field("true", alias="auto.commit.enable", pattern="^(true|false)$")
    fetch_min_bytes: FetchMinBytes | None = Field(None, alias="fetch.min.bytes")
    consumer_request_timeout_ms: RequestTimeoutMs | None = Field(
        None, alias="consumer.request.timeout.ms"
    )
    model_config = ConfigDict(extra="ignore", populate_by_name=True)


class Subscription(_Body):
    """Exactly one of ``topics`` and ``topic_pattern`` (a Python regular expression)."""

    topics: list[str] | None = None
    topic_pattern: str | None = Field(None, json_schema_extra={"format": "regex"})
    model_config = ConfigDict(
        extra="ignore",
        json_schema_extra={
            "anyOf": [
                {
                    "required": ["topics"],
                    "properties": {"topics": {"type": "array"}, "topic_pattern": {"type": "null"}},
                },
                {
                    "required": ["topic_pattern"],
                    "properties": {"topic_pattern": {"type": "string"}, "topics": {"type": "null"}},
                },
            ]
        },
    )


class Partitions(_Body):
    partitions: list[TopicPartitionBody] = Field(default_factory=list)


class OffsetBody(_Body):
    topic: str = Field(min_length=1)
    partition: PartitionIndex
    offset: OffsetValue
    metadata: str | None = None


class Offsets(_Body):
    offsets: list[OffsetBody] = Field(default_factory=list)


class ConsumerRecord(_Body):
    """A record as ``GET .../records`` returns it (for the OpenAPI document)."""

    topic: str
    key: Any = Field(description="JSON value (json format) or base64 text (binary).")
    value: Any = Field(description="JSON value (json format) or base64 text (binary).")
    partition: int
    offset: int
    timestamp: int
    headers: list[RecordHeader] | None = Field(
        None, description="Present when the record has headers."
    )


# Models whose JSON schemas the OpenAPI document carries as components.
BODY_MODELS: tuple[type[BaseModel], ...] = (
    ProduceRequest,
    PartitionProduceRequest,
    BinaryProduceRequest,
    BinaryPartitionProduceRequest,
    CreateConsumer,
    Subscription,
    Partitions,
    Offsets,
    ConsumerRecord,
)
