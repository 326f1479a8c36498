"""Topic configs: Kafka's topic-level settings, typed, with one source of truth.

Theory of operation
-------------------
``TOPIC_CONFIGS`` defines every topic-level config Bayou understands, by its Kafka name
(``segment.bytes``), with type, default and validation.  A topic's effective config is the
broker's default for each key (static from ``BrokerConfig.topic_defaults``, then dynamic)
overridden by the topic's own settings; ``TopicConfig`` is that resolved view as typed
attributes for the storage engines.  The ``bayou serve`` options are ``bayou.broker_config``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from functools import cached_property
from typing import Any

from bayou.errors import InvalidConfig

LONG_MAX = 2**63 - 1
INT_MAX = 2**31 - 1


@dataclass(frozen=True)
class ConfigDef:
    """One config: its Kafka name, type ('int', 'long', 'short', 'double', 'string', 'bool',
    'list'; 'class' and 'password' are strings), default, validator and documentation."""

    name: str
    type: str
    default: Any
    doc: str
    validate: Callable[[Any], str | None] = lambda _v: None

    def parse(self, raw: str | int | bool) -> Any:
        """Parse a raw value into this config's type; raise InvalidConfig naming the key."""
        try:
            if self.type in ("int", "long", "short"):
                if isinstance(raw, bool):
                    raise ValueError
                value: Any = int(raw)
                limit = {"int": INT_MAX, "long": LONG_MAX, "short": 2**15 - 1}[self.type]
                if not -limit - 1 <= value <= limit:
                    raise ValueError
            elif self.type == "double":
                if isinstance(raw, bool):
                    raise ValueError
                value = float(raw)
                if value != value or value in (float("inf"), float("-inf")):
                    raise ValueError
            elif self.type == "bool":
                if isinstance(raw, bool):
                    value = raw
                elif str(raw).lower() in ("true", "false"):
                    value = str(raw).lower() == "true"
                else:
                    raise ValueError
            else:
                value = str(raw)
        except ValueError:
            raise InvalidConfig(
                f"Invalid value {raw!r} for configuration {self.name}: expected {self.type}"
            ) from None
        problem = self.validate(value)
        if problem:
            raise InvalidConfig(f"Invalid value {raw!r} for configuration {self.name}: {problem}")
        return value

    def render(self, value: Any) -> str:
        """The value as Kafka admin tools show it."""
        if isinstance(value, bool):
            return "true" if value else "false"
        if self.type == "list":
            return ",".join(policy_parts(str(value)))
        return str(value)


def _at_least(n: int) -> Callable[[Any], str | None]:
    return lambda v: None if v >= n else f"must be at least {n}"


def _one_of(*choices: str) -> Callable[[Any], str | None]:
    return lambda v: None if v in choices else f"must be one of {', '.join(choices)}"


def policy_parts(value: str) -> list[str]:
    """``"compact, delete"`` → ``["compact", "delete"]`` (a Kafka list value's items)."""
    return [p.strip() for p in value.split(",") if p.strip()]


def _cleanup_policy(v: str) -> str | None:
    parts = policy_parts(v)
    if not parts or any(p not in ("delete", "compact") for p in parts):
        return "must be a list of delete and/or compact"
    return None


def _ratio(v: float) -> str | None:
    return None if 0.0 <= v <= 1.0 else "must be between 0 and 1"


_DEFS = [
    ConfigDef(
        "segment.bytes", "int", 1024**3, "Roll a segment when it reaches this size.", _at_least(14)
    ),
    ConfigDef(
        "segment.ms",
        "long",
        7 * 24 * 3600 * 1000,
        "Roll a segment when its first batch is this old.",
        _at_least(1),
    ),
    ConfigDef(
        "segment.index.bytes",
        "int",
        10 * 1024 * 1024,
        "Maximum size of a segment's offset index.",
        _at_least(4096),
    ),
    ConfigDef(
        "index.interval.bytes",
        "int",
        4096,
        "Bytes of log between two offset-index entries.",
        _at_least(0),
    ),
    ConfigDef(
        "flush.messages",
        "long",
        LONG_MAX,
        "Force an fsync after this many messages (shared by concurrent producers).",
        _at_least(1),
    ),
    ConfigDef(
        "flush.ms",
        "long",
        LONG_MAX,
        "Force an fsync when unflushed data is this old.",
        _at_least(0),
    ),
    ConfigDef(
        "max.message.bytes",
        "int",
        1024 * 1024 + 12,
        "Largest record batch the topic accepts.",
        _at_least(0),
    ),
    ConfigDef(
        "retention.ms",
        "long",
        7 * 24 * 3600 * 1000,
        "Delete segments older than this; -1 keeps forever.",
        _at_least(-1),
    ),
    ConfigDef(
        "retention.bytes",
        "long",
        -1,
        "Delete old segments beyond this partition size; -1 is unlimited.",
        _at_least(-1),
    ),
    ConfigDef("cleanup.policy", "list", "delete", "delete, compact or both.", _cleanup_policy),
    ConfigDef(
        "delete.retention.ms",
        "long",
        24 * 3600 * 1000,
        "How long tombstones survive compaction.",
        _at_least(0),
    ),
    ConfigDef(
        "min.cleanable.dirty.ratio",
        "double",
        0.5,
        "Dirty fraction that makes a log eligible for compaction.",
        _ratio,
    ),
    ConfigDef(
        "min.compaction.lag.ms",
        "long",
        0,
        "Minimum age of a record before compaction.",
        _at_least(0),
    ),
    ConfigDef(
        "max.compaction.lag.ms",
        "long",
        LONG_MAX,
        "Maximum age of a record before it must be compacted.",
        _at_least(1),
    ),
    ConfigDef(
        "message.timestamp.type",
        "string",
        "CreateTime",
        "CreateTime keeps the producer's timestamps; LogAppendTime stamps on append.",
        _one_of("CreateTime", "LogAppendTime"),
    ),
    ConfigDef(
        "compression.type",
        "string",
        "producer",
        "Compression of stored batches; 'producer' keeps what the producer sent.",
        _one_of("producer", "uncompressed", "gzip", "snappy", "lz4", "zstd"),
    ),
    ConfigDef(
        "min.insync.replicas", "int", 1, "Replicas that must acknowledge acks=all.", _at_least(1)
    ),
    ConfigDef(
        "remote.storage.enable",
        "bool",
        False,
        "Copy closed segments to the broker's tiered storage (bayou serve --tiered-storage).",
    ),
    ConfigDef(
        "local.retention.ms",
        "long",
        -2,
        "With tiered storage: how long copied segments stay on local disk; -2: retention.ms.",
        _at_least(-2),
    ),
    ConfigDef(
        "local.retention.bytes",
        "long",
        -2,
        "With tiered storage: local bytes kept of copied segments; -2: retention.bytes.",
        _at_least(-2),
    ),
]

TOPIC_CONFIGS: dict[str, ConfigDef] = {d.name: d for d in _DEFS}

# The broker-level name of each topic config (Kafka's TopicConfig synonyms): a broker's
# static option or dynamic default under this name is the default for every topic.
BROKER_SYNONYMS: dict[str, str] = {
    "segment.bytes": "log.segment.bytes",
    "segment.ms": "log.roll.ms",
    "segment.index.bytes": "log.index.size.max.bytes",
    "index.interval.bytes": "log.index.interval.bytes",
    "flush.messages": "log.flush.interval.messages",
    "flush.ms": "log.flush.interval.ms",
    "max.message.bytes": "message.max.bytes",
    "retention.ms": "log.retention.ms",
    "retention.bytes": "log.retention.bytes",
    "cleanup.policy": "log.cleanup.policy",
    "delete.retention.ms": "log.cleaner.delete.retention.ms",
    "min.cleanable.dirty.ratio": "log.cleaner.min.cleanable.ratio",
    "min.compaction.lag.ms": "log.cleaner.min.compaction.lag.ms",
    "max.compaction.lag.ms": "log.cleaner.max.compaction.lag.ms",
    "message.timestamp.type": "log.message.timestamp.type",
    "compression.type": "compression.type",
    "min.insync.replicas": "min.insync.replicas",
    "local.retention.ms": "log.local.retention.ms",
    "local.retention.bytes": "log.local.retention.bytes",
}
TOPIC_NAME_OF: dict[str, str] = {b: t for t, b in BROKER_SYNONYMS.items()}


def check_topic_config(values: Mapping[str, Any]) -> None:
    """Checks across configs (each value is already valid alone); raise InvalidConfig."""
    _check_tiered(values)
    low = values.get("min.compaction.lag.ms")
    high = values.get("max.compaction.lag.ms")
    if low is not None and high is not None and low > high:
        raise InvalidConfig(
            f"Invalid value {low} for configuration min.compaction.lag.ms: "
            f"must not exceed max.compaction.lag.ms ({high})"
        )


def _check_tiered(values: Mapping[str, Any]) -> None:
    """Kafka's rules for tiered topics: never compacted, and the local retention (-2: the
    topic's) within the topic's retention."""
    if not values.get("remote.storage.enable"):
        return
    if "compact" in policy_parts(str(values.get("cleanup.policy", "delete"))):
        raise InvalidConfig(
            "Invalid value true for configuration remote.storage.enable: remote log storage "
            "is unsupported for compacted topics"
        )
    for name in ("ms", "bytes"):
        total = values.get(f"retention.{name}", -1)
        local = values.get(f"local.retention.{name}", -2)
        if local == -2 or total == -1:
            continue
        if local == -1:
            raise InvalidConfig(
                f"Invalid value -1 for configuration local.retention.{name}: must not be -1 "
                f"as retention.{name} value is set as {total}"
            )
        if local > total:
            raise InvalidConfig(
                f"Invalid value {local} for configuration local.retention.{name}: must not be "
                f"more than retention.{name} property value {total}"
            )


def parse_topic_configs(raw: Mapping[str, str | int | bool]) -> dict[str, Any]:
    """Validate and parse topic config overrides; raise InvalidConfig for any bad one."""
    parsed: dict[str, Any] = {}
    for name, value in raw.items():
        definition = TOPIC_CONFIGS.get(name)
        if definition is None:
            raise InvalidConfig(f"Unknown topic config {name}")
        parsed[name] = definition.parse(value)
    return parsed


@dataclass(frozen=True)
class TopicConfig:
    """A topic's effective configuration, resolved over broker defaults."""

    values: Mapping[str, Any]

    @classmethod
    def resolve(
        cls, defaults: Mapping[str, Any], overrides: Mapping[str, Any] | None = None
    ) -> TopicConfig:
        values = {name: d.default for name, d in TOPIC_CONFIGS.items()}
        values.update(defaults)
        values.update(overrides or {})
        return cls(values)

    def __getitem__(self, name: str) -> Any:
        return self.values[name]

    @property
    def segment_bytes(self) -> int:
        return int(self.values["segment.bytes"])

    @property
    def segment_ms(self) -> int:
        return int(self.values["segment.ms"])

    @property
    def index_interval_bytes(self) -> int:
        return int(self.values["index.interval.bytes"])

    @property
    def flush_messages(self) -> int:
        return int(self.values["flush.messages"])

    @property
    def flush_ms(self) -> int:
        return int(self.values["flush.ms"])

    @property
    def max_message_bytes(self) -> int:
        return int(self.values["max.message.bytes"])

    @property
    def log_append_time(self) -> bool:
        return bool(self.values["message.timestamp.type"] == "LogAppendTime")

    # asked on every append: the policy string is parsed once per config (``values`` is
    # never changed in place; a changed config is a new TopicConfig)
    @cached_property
    def compact(self) -> bool:
        return "compact" in policy_parts(str(self.values["cleanup.policy"]))

    @cached_property
    def delete(self) -> bool:
        return "delete" in policy_parts(str(self.values["cleanup.policy"]))

    @property
    def retention_ms(self) -> int:
        return int(self.values["retention.ms"])

    @property
    def retention_bytes(self) -> int:
        return int(self.values["retention.bytes"])

    @property
    def delete_retention_ms(self) -> int:
        return int(self.values["delete.retention.ms"])

    @property
    def min_cleanable_dirty_ratio(self) -> float:
        return float(self.values["min.cleanable.dirty.ratio"])

    @property
    def min_compaction_lag_ms(self) -> int:
        return int(self.values["min.compaction.lag.ms"])

    @property
    def max_compaction_lag_ms(self) -> int:
        return int(self.values["max.compaction.lag.ms"])

    @property
    def remote_storage_enable(self) -> bool:
        return bool(self.values["remote.storage.enable"])

    @property
    def local_retention_ms(self) -> int:
        """local.retention.ms in force (-2 means retention.ms)."""
        value = int(self.values["local.retention.ms"])
        return self.retention_ms if value == -2 else value

    @property
    def local_retention_bytes(self) -> int:
        """local.retention.bytes in force (-2 means retention.bytes)."""
        value = int(self.values["local.retention.bytes"])
        return self.retention_bytes if value == -2 else value

    @property
    def roll_ms(self) -> int:
        """segment.ms, capped by max.compaction.lag.ms on compacted topics (KIP-354)."""
        if self.compact:
            return min(self.segment_ms, self.max_compaction_lag_ms)
        return self.segment_ms


INTERNAL_SEGMENT_BYTES = 16 * 1024 * 1024
INTERNAL_DELETE_RETENTION_MS = 24 * 3600 * 1000


def internal_log_config(
    segment_bytes: int = INTERNAL_SEGMENT_BYTES,
    delete_retention_ms: int = INTERNAL_DELETE_RETENTION_MS,
    flush_messages: int = LONG_MAX,
    flush_ms: int = LONG_MAX,
) -> TopicConfig:
    """The config of an internal log (``DATA/internal/<name>/0/``): compacted, never deleted
    by time or size, and independent of the broker's topic defaults.  The log maintenance
    task cleans it like a compacted user topic (``LogMaintenance.register``).  Its
    ``flush.messages``/``flush.ms`` say when the group coordinator fsyncs it (as a topic's
    say when produce does): by default never before an answer, 1 message = strict mode."""
    overrides = parse_topic_configs(
        {
            "cleanup.policy": "compact",
            "segment.bytes": segment_bytes,
            "delete.retention.ms": delete_retention_ms,
            "flush.messages": flush_messages,
            "flush.ms": flush_ms,
        }
    )
    config = TopicConfig.resolve({}, overrides)
    check_topic_config(config.values)
    return config
