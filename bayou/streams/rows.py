"""What flows between operators: ``Row`` (a record being processed) and ``Output`` (a record
to write), plus the JSON and key conventions every operator shares."""

from __future__ import annotations

import datetime as dt
import json
from dataclasses import dataclass
from typing import Any

Headers = tuple[tuple[str, bytes | None], ...]


class Row:
    """A record inside a pipeline: its key (the record key as text, or the group key once
    keyed), its value (decoded JSON for SQL views and JSON streams), its event time and
    where it came from."""

    __slots__ = (
        "headers",
        "key",
        "offset",
        "partition",
        "record_key",
        "side",
        "timestamp",
        "topic",
        "value",
    )

    def __init__(
        self,
        key: Any,
        value: Any,
        timestamp: int,
        topic: str = "",
        partition: int = 0,
        offset: int = -1,
        headers: Headers = (),
    ) -> None:
        self.key = key
        self.value = value
        self.timestamp = timestamp
        self.topic = topic
        self.partition = partition
        self.offset = offset
        self.headers = headers
        self.record_key = key  # the record's own key, whatever the row is keyed by later
        self.side = ""  # which input of a stream-stream join ("l" or "r") the row came from

    def derive(self, value: Any, key: Any = None, timestamp: int | None = None) -> Row:
        row = Row(
            self.key if key is None else key,
            value,
            self.timestamp if timestamp is None else timestamp,
            self.topic,
            self.partition,
            self.offset,
            self.headers,
        )
        row.record_key = self.record_key
        row.side = self.side
        return row

    def __repr__(self) -> str:
        return f"Row({self.key!r}, {self.value!r}, ts={self.timestamp})"


@dataclass(frozen=True)
class Output:
    """A record to write: to a sink, the dead-letter topic or the changelog."""

    topic: str
    key: bytes | None
    value: bytes | None
    timestamp: int
    headers: Headers = ()
    partition: int | None = None  # None: the producer's partitioner (by key)


def hashable(value: Any) -> Any:
    """Lists (from JSON) as tuples, recursively, so a decoded key is a dict key again."""
    if isinstance(value, list):
        return tuple(hashable(v) for v in value)
    return value


def dumps(value: Any) -> bytes:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False, allow_nan=False).encode()


def key_bytes(key: Any) -> bytes | None:
    """A key as record-key bytes: text as UTF-8, bytes as they are, anything else as JSON."""
    if key is None or isinstance(key, bytes):
        return key
    if isinstance(key, str):
        return key.encode()
    return dumps(list(key) if isinstance(key, tuple) else key)


def iso_ms(epoch_ms: int) -> str:
    """ISO-8601 UTC with milliseconds: ``2024-05-01T12:00:00.000Z``."""
    when = dt.datetime.fromtimestamp(epoch_ms / 1000, dt.UTC)
    return when.strftime("%Y-%m-%dT%H:%M:%S.") + f"{epoch_ms % 1000:03d}Z"
