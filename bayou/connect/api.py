"""The connector plugin interface: what a sink or a source implements, and what it is given.

Theory of operation
-------------------
A connector is a named configuration (``name``, ``connector.class``, ``tasks.max``, the
common keys and the connector's own).  The runtime (``bayou connect run FILE.toml`` or the
broker's ``/connectors`` API) turns it into up to ``tasks.max`` tasks and drives each one in
a thread of its own, so tasks are plain synchronous code over synchronous libraries
(pyarrow, psycopg, duckdb, pyiceberg).  The runtime owns everything around the task: the
Kafka clients, the converters (``key.converter`` / ``value.converter``: json, string,
bytes), the transforms, retries with back-off, the dead-letter topic, the consumer group
``connect-{name}`` that records a sink's progress, and the stored positions of a source.

Sink lifecycle, per task::

    task = SinkTaskClass(config)
    task.start()
    next_offsets = task.open(partitions)      # on every assignment
    task.put(records) ... task.flush_due(now) -> task.flush() -> offsets to commit
    task.close(partitions)                    # on revocation, after a final flush()
    task.stop()

``open`` returns the next offset to read for each partition *as recorded in the target*
(exactly-once sinks write their offsets together with the data: a Parquet file's metadata,
an Iceberg snapshot's properties, a row in the same PostgreSQL/DuckDB transaction); the
runtime seeks there and ignores the group's committed offset for those partitions.  A sink
that keeps no offsets returns ``{}`` and the group's committed offsets are used (at least
once).  ``flush`` makes everything ``put`` so far durable in the target and returns, per
partition, the next offset now covered; the runtime commits those to the group (so
``bayou group describe connect-{name}`` shows the progress) only after ``flush`` returned.

Source lifecycle, per task::

    task = SourceTaskClass(config)
    task.start(position)                      # the last position stored for this task, or None
    records = task.poll(timeout_s)            # SourceRecords, each carrying its position
    task.commit(position)                     # records up to position are durable in Bayou
    task.stop()

The runtime writes the polled records and, after they are acknowledged (``acks=all``), the
position of the last one in the compacted topic ``_bayou_connect_offsets`` (key: connector
name and task number); then it calls ``commit`` — where a CDC source advances its
replication slot.  ``start`` receives that stored position after a restart.

Errors: raise ``RetriableError`` for a transient failure (the runtime retries the same call
with back-off); ``RecordError`` for one record the target refuses (it goes to the
dead-letter topic when ``errors.tolerance=all``, else the task fails); anything else fails
the task (its status shows the trace; ``restart`` starts it again).
"""

from __future__ import annotations

import json
from abc import ABC, abstractmethod
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

TopicPartition = tuple[str, int]
"""A topic name and a partition number."""

JsonValue = Any
"""What a converter produced: a JSON value (``json``), ``str`` (``string``) or ``bytes``."""


class ConnectError(Exception):
    """A task failed in a way the runtime reports in the connector's status."""


class RetriableError(ConnectError):
    """A transient failure (target unreachable, lock timeout): the runtime retries the call."""


class RecordError(ConnectError):
    """The target refuses this one record; ``record`` is the one at fault."""

    def __init__(self, message: str, record: SinkRecord | None = None) -> None:
        super().__init__(message)
        self.record = record


class ConfigError(ConnectError):
    """A connector configuration is invalid; the message names the key."""


@dataclass(frozen=True, slots=True)
class SinkRecord:
    """One record as a sink task sees it: converted and transformed.

    ``value`` is ``None`` for a tombstone (a delete for sinks that upsert by key).
    """

    topic: str
    partition: int
    offset: int
    timestamp_ms: int
    key: JsonValue
    value: JsonValue
    headers: tuple[tuple[str, bytes | None], ...] = ()

    @property
    def topic_partition(self) -> TopicPartition:
        return (self.topic, self.partition)


@dataclass(frozen=True, slots=True)
class SourceRecord:
    """One record a source task produced, before the converters serialize it.

    ``position`` is a JSON value saying where the source is once this record is written
    (a file name and byte offset, a WAL LSN); ``partition`` ``None`` lets the producer's
    partitioner choose by key; ``timestamp_ms`` ``None`` means the time it is written.
    """

    topic: str
    key: JsonValue
    value: JsonValue
    position: JsonValue
    headers: tuple[tuple[str, bytes | None], ...] = ()
    timestamp_ms: int | None = None
    partition: int | None = None


@dataclass(frozen=True, slots=True)
class ConnectorConfig:
    """A connector's configuration: Kafka Connect's flat string map, with typed getters.

    ``task_id`` is the number of the task this copy is for (0 … tasks.max - 1).
    """

    name: str
    values: Mapping[str, str] = field(default_factory=dict)
    task_id: int = 0

    @property
    def connector_class(self) -> str:
        return self.require("connector.class")

    def get(self, key: str, default: str | None = None) -> str | None:
        value = self.values.get(key)
        return default if value is None else value

    def require(self, key: str) -> str:
        value = self.values.get(key)
        if value is None or value == "":
            raise ConfigError(f"connector {self.name!r}: {key!r} is required")
        return value

    def get_int(self, key: str, default: int) -> int:
        raw = self.values.get(key)
        if raw is None or raw == "":
            return default
        try:
            return int(raw)
        except ValueError:
            raise ConfigError(f"connector {self.name!r}: {key!r} must be an integer") from None

    def get_bool(self, key: str, default: bool) -> bool:
        raw = self.values.get(key)
        if raw is None or raw == "":
            return default
        lowered = raw.strip().lower()
        if lowered in ("true", "1", "yes"):
            return True
        if lowered in ("false", "0", "no"):
            return False
        raise ConfigError(f"connector {self.name!r}: {key!r} must be true or false")

    def get_list(self, key: str) -> list[str]:
        raw = self.values.get(key) or ""
        return [item.strip() for item in raw.split(",") if item.strip()]

    def with_task(self, task_id: int) -> ConnectorConfig:
        return ConnectorConfig(self.name, self.values, task_id)

    @staticmethod
    def from_mapping(name: str, values: Mapping[str, Any]) -> ConnectorConfig:
        """Normalise a TOML table or a JSON object: every value becomes Connect's string."""
        flat: dict[str, str] = {}
        for key, value in values.items():
            if isinstance(value, bool):
                flat[key] = "true" if value else "false"
            elif isinstance(value, list):
                flat[key] = ",".join(str(item) for item in value)
            elif isinstance(value, dict):
                flat[key] = json.dumps(value)
            else:
                flat[key] = str(value)
        return ConnectorConfig(name, flat)


class SinkTask(ABC):
    """Writes records from Bayou into a target.  One instance per task, one thread each."""

    def __init__(self, config: ConnectorConfig) -> None:
        self.config = config

    def start(self) -> None:  # noqa: B027 - optional hook
        """Connect to the target; raise ``ConfigError`` for a configuration it cannot use."""

    @abstractmethod
    def open(self, partitions: Collection[TopicPartition]) -> Mapping[TopicPartition, int]:
        """Partitions were assigned: return the next offset the target records for each
        (those it has none for are absent; ``{}`` when the sink keeps no offsets)."""

    @abstractmethod
    def put(self, records: Sequence[SinkRecord]) -> None:
        """Take records (in offset order per partition); write or buffer them."""

    def flush_due(self, now_ms: int) -> bool:
        """Whether a size or time limit says flush now (the runtime also flushes on
        revocation, at stop and every ``offset.flush.interval.ms``)."""
        return False

    @abstractmethod
    def flush(self) -> Mapping[TopicPartition, int]:
        """Make everything ``put`` so far durable; return per partition the next offset
        now covered (the runtime commits these to the consumer group)."""

    def close(self, partitions: Collection[TopicPartition]) -> None:  # noqa: B027
        """Partitions were revoked (after a final ``flush``): drop their buffers."""

    def stop(self) -> None:  # noqa: B027 - optional hook
        """Release the target's connections."""


class SourceTask(ABC):
    """Reads changes from a source into Bayou.  One instance per task, one thread each."""

    def __init__(self, config: ConnectorConfig) -> None:
        self.config = config

    @abstractmethod
    def start(self, position: JsonValue | None) -> None:
        """Begin after ``position`` (the last one stored for this task), or from the start."""

    @abstractmethod
    def poll(self, timeout_s: float) -> Sequence[SourceRecord]:
        """Return the next records (an empty list after ``timeout_s`` without any)."""

    def commit(self, position: JsonValue) -> None:  # noqa: B027 - optional hook
        """Records up to ``position`` are durable in Bayou: release them at the source."""

    def stop(self) -> None:  # noqa: B027 - optional hook
        """Release the source's connections."""
