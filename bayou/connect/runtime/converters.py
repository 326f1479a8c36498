"""Converters: the bytes of a Kafka record's key or value ↔ what a task sees.

``json`` (Kafka's ``JsonConverter``): a JSON document ↔ its value; with
``<key|value>.converter.schemas.enable=true`` a ``{"schema", "payload"}`` envelope is
unwrapped on the way in and written around the value on the way out (with a null schema:
Bayou keeps no Connect schemas).  ``string`` (``StringConverter``): UTF-8 text.  ``bytes``
(``ByteArrayConverter``): the bytes as they are.  A null key or value stays ``None`` (a
tombstone) whatever the converter.  Kafka's class names are accepted beside the short ones.
Defaults: ``key.converter=string`` (keys are mostly plain text), ``value.converter=json``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from bayou.connect.api import ConfigError, ConnectorConfig, JsonValue

CONVERTER_NAMES: dict[str, str] = {
    "json": "json",
    "org.apache.kafka.connect.json.JsonConverter": "json",
    "string": "string",
    "org.apache.kafka.connect.storage.StringConverter": "string",
    "bytes": "bytes",
    "org.apache.kafka.connect.converters.ByteArrayConverter": "bytes",
}


class ConversionError(ValueError):
    """The bytes cannot be read with this converter."""


@dataclass(frozen=True, slots=True)
class Converter:
    kind: str  # json | string | bytes
    schemas_enable: bool = False
    class_name: str = ""

    def to_value(self, raw: bytes | None) -> JsonValue:
        """Kafka bytes → the task's value."""
        if raw is None:
            return None
        if self.kind == "bytes":
            return raw
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise ConversionError(f"not UTF-8: {exc}") from None
        if self.kind == "string":
            return text
        try:
            value = json.loads(text)
        except ValueError as exc:
            raise ConversionError(f"not JSON: {exc}") from None
        if self.schemas_enable:
            if not isinstance(value, dict) or set(value) != {"schema", "payload"}:
                raise ConversionError(
                    'schemas.enable=true expects {"schema": …, "payload": …} documents'
                )
            return value["payload"]
        return value

    def to_bytes(self, value: JsonValue) -> bytes | None:
        """The task's value → Kafka bytes."""
        if value is None:
            return None
        if self.kind == "bytes":
            if isinstance(value, bytes | bytearray | memoryview):
                return bytes(value)
            if isinstance(value, str):
                return value.encode()
            raise ConversionError(f"the bytes converter cannot write a {type(value).__name__}")
        if self.kind == "string":
            if isinstance(value, bytes | bytearray):
                return bytes(value)
            text = value if isinstance(value, str) else json.dumps(value, separators=(",", ":"))
            return text.encode()
        if isinstance(value, bytes | bytearray):
            raise ConversionError("the json converter cannot write bytes (use bytes or string)")
        doc: Any = {"schema": None, "payload": value} if self.schemas_enable else value
        try:
            return json.dumps(doc, separators=(",", ":"), ensure_ascii=False).encode()
        except (TypeError, ValueError) as exc:
            raise ConversionError(f"not JSON-serializable: {exc}") from None


def converter(config: ConnectorConfig, which: str, default: str = "json") -> Converter:
    """The converter ``<which>.converter`` (``which``: key or value) names."""
    raw = config.get(f"{which}.converter", default) or default
    kind = CONVERTER_NAMES.get(raw.strip())
    if kind is None:
        known = ", ".join(k for k in CONVERTER_NAMES if "." not in k)
        raise ConfigError(
            f"connector {config.name!r}: {which}.converter={raw!r} is not a converter ({known})"
        )
    schemas = config.get_bool(f"{which}.converter.schemas.enable", False)
    return Converter(kind, schemas and kind == "json", raw.strip())
