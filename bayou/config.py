"""Configuration: broker options and topic configs, typed, with one source of truth.

Theory of operation
-------------------
``TOPIC_CONFIGS`` defines every topic-level config Bayou understands, by its Kafka name
(``segment.bytes``), with type, default and validation.  A topic's effective config is the
broker's default for each key (``BrokerConfig.topic_defaults``) overridden by the topic's own
settings; ``TopicConfig`` is that resolved view as typed attributes for the storage engine.

``BrokerConfig`` holds the ``bayou serve`` options.  They are read in this order, later
winning: built-in defaults, a TOML file (``--config``), ``BAYOU_<OPTION>`` environment
variables, command-line flags.  Topic-config defaults are set in TOML under ``[topic_defaults]``
with their Kafka names, on the command line as ``--topic-default k=v``, and in the environment
as ``BAYOU_TOPIC_DEFAULT_<NAME_WITH_UNDERSCORES>``.
"""

from __future__ import annotations

import dataclasses
import tomllib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
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
    ConfigDef("segment.bytes", "int", 1024**3, "Roll a segment when it reaches this size.",
              _at_least(14)),
    ConfigDef("segment.ms", "long", 7 * 24 * 3600 * 1000,
              "Roll a segment when its first batch is this old.", _at_least(1)),
    ConfigDef("segment.index.bytes", "int", 10 * 1024 * 1024,
              "Maximum size of a segment's offset index.", _at_least(4096)),
    ConfigDef("index.interval.bytes", "int", 4096,
              "Bytes of log between two offset-index entries.", _at_least(0)),
    ConfigDef("flush.messages", "long", LONG_MAX,
              "Force an fsync after this many messages (shared by concurrent producers).",
              _at_least(1)),
    ConfigDef("flush.ms", "long", LONG_MAX,
              "Force an fsync when unflushed data is this old.", _at_least(0)),
    ConfigDef("max.message.bytes", "int", 1024 * 1024 + 12,
              "Largest record batch the topic accepts.", _at_least(0)),
    ConfigDef("retention.ms", "long", 7 * 24 * 3600 * 1000,
              "Delete segments older than this; -1 keeps forever.", _at_least(-1)),
    ConfigDef("retention.bytes", "long", -1,
              "Delete old segments beyond this partition size; -1 is unlimited.", _at_least(-1)),
    ConfigDef("cleanup.policy", "list", "delete", "delete, compact or both.", _cleanup_policy),
    ConfigDef("delete.retention.ms", "long", 24 * 3600 * 1000,
              "How long tombstones survive compaction.", _at_least(0)),
    ConfigDef("min.cleanable.dirty.ratio", "double", 0.5,
              "Dirty fraction that makes a log eligible for compaction.", _ratio),
    ConfigDef("min.compaction.lag.ms", "long", 0,
              "Minimum age of a record before compaction.", _at_least(0)),
    ConfigDef("max.compaction.lag.ms", "long", LONG_MAX,
              "Maximum age of a record before it must be compacted.", _at_least(1)),
    ConfigDef("message.timestamp.type", "string", "CreateTime",
              "CreateTime keeps the producer's timestamps; LogAppendTime stamps on append.",
              _one_of("CreateTime", "LogAppendTime")),
    ConfigDef("compression.type", "string", "producer",
              "Compression of stored batches; 'producer' keeps what the producer sent.",
              _one_of("producer", "uncompressed", "gzip", "snappy", "lz4", "zstd")),
    ConfigDef("min.insync.replicas", "int", 1, "Replicas that must acknowledge acks=all.",
              _at_least(1)),
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
}
TOPIC_NAME_OF: dict[str, str] = {b: t for t, b in BROKER_SYNONYMS.items()}


def check_topic_config(values: Mapping[str, Any]) -> None:
    """Checks across configs (each value is already valid alone); raise InvalidConfig."""
    low = values.get("min.compaction.lag.ms")
    high = values.get("max.compaction.lag.ms")
    if low is not None and high is not None and low > high:
        raise InvalidConfig(
            f"Invalid value {low} for configuration min.compaction.lag.ms: "
            f"must not exceed max.compaction.lag.ms ({high})"
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

    @property
    def compact(self) -> bool:
        return "compact" in policy_parts(str(self.values["cleanup.policy"]))

    @property
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
    overrides = parse_topic_configs({
        "cleanup.policy": "compact",
        "segment.bytes": segment_bytes,
        "delete.retention.ms": delete_retention_ms,
        "flush.messages": flush_messages,
        "flush.ms": flush_ms,
    })
    config = TopicConfig.resolve({}, overrides)
    check_topic_config(config.values)
    return config


@dataclass
class BrokerConfig:
    """Options of ``bayou serve``."""

    data_dir: Path = Path("./data")
    host: str = "127.0.0.1"
    kafka_port: int = 9092
    http_port: int = 8080  # 0: no HTTP listener
    mqtt_port: int = 1883  # 0: no MQTT listener (TCP and WebSocket share the port)
    # MQTT topic → Kafka topic rules, "filter=kafka_topic" separated by ';' (first match wins;
    # otherwise the MQTT topic's first level names the Kafka topic). See docs/design/mqtt.md.
    mqtt_topic_rules: str = ""
    # Seconds between updates of the MQTT $SYS/broker/... statistics (mosquitto's
    # sys_interval); 0: no $SYS tree.
    mqtt_sys_interval: int = 10
    amqp_port: int = 5672
    advertised_host: str | None = None
    node_id: int = 0
    cluster_id: str | None = None
    auto_create_topics_enable: bool = True
    num_partitions: int = 1
    socket_request_max_bytes: int = 100 * 1024 * 1024
    # Request bytes all doors may hold in unfinished requests at once (Kafka's
    # queued.max.request.bytes, bounded here); an unfinished request that makes no progress
    # this long closes its connection.  See bayou/broker/request_budget.py.
    queued_max_request_bytes: int = 100 * 1024 * 1024
    request_stall_timeout_ms: int = 30_000
    # The most record bytes one Fetch response carries (Kafka's broker fetch.max.bytes; the
    # first batch of the first partition with data is sent whole even beyond it, KIP-74).
    fetch_max_bytes: int = 55 * 1024 * 1024
    log_level: str = "INFO"
    # HTTP gateway (http_port 0 turns it off): the largest request body accepted, and how
    # long a REST consumer instance lives unused (REST Proxy's consumer.instance.timeout.ms).
    http_max_body_bytes: int = 8 * 1024 * 1024
    http_consumer_instance_timeout_ms: int = 300_000
    # Origins (scheme://host[:port]) whose web pages may call the HTTP door (CORS), and open
    # its WebSocket streams; "*" allows every origin.  Empty: only pages the door serves
    # itself.  Flag --http-cors-origin (repeatable), TOML list, env comma-separated.
    http_cors_origins: tuple[str, ...] = ()
    # How often retention and the log cleaner look at every partition (Kafka's
    # log.retention.check.interval.ms; the cleaner shares it).
    log_retention_check_interval_ms: int = 5 * 60 * 1000
    # The cleaner's key map: entries are counted at 24 bytes each, as Kafka's
    # log.cleaner.dedupe.buffer.size does; a log with more keys is cleaned in several passes.
    log_cleaner_dedupe_buffer_size: int = 128 * 1024 * 1024
    log_cleaner_enable: bool = True
    # The broker's internal compacted logs (group offsets and metadata, MQTT sessions and
    # retained messages, under DATA/internal/): their segment size — only closed segments
    # are cleaned, so this bounds what a restart replays beyond the compacted state — and
    # how long their tombstones survive compaction.  See docs/design/log-lifecycle.md.
    internal_segment_bytes: int = INTERNAL_SEGMENT_BYTES
    internal_delete_retention_ms: int = INTERNAL_DELETE_RETENTION_MS
    # When the group coordinator's log (__consumer_offsets) is fsynced, as a topic's
    # flush.messages / flush.ms say for produce: by default a commit is answered once it is
    # written to the OS (a kill -9 loses nothing; a power cut may), and 1 is strict mode —
    # every commit and group change fsynced before it is answered.  (The MQTT gateway's state
    # logs fsync every write regardless.)  See docs/design/groups.md.
    internal_flush_messages: int = LONG_MAX
    internal_flush_ms: int = LONG_MAX
    # Group coordinator (Kafka's option names with '_' for '.'; Kafka's defaults).
    group_initial_rebalance_delay_ms: int = 3000
    group_min_session_timeout_ms: int = 6000
    group_max_session_timeout_ms: int = 1_800_000
    group_consumer_session_timeout_ms: int = 45_000
    group_consumer_heartbeat_interval_ms: int = 5000
    offsets_retention_minutes: int = 7 * 24 * 60
    offsets_retention_check_interval_ms: int = 600_000
    topic_defaults: dict[str, Any] = field(default_factory=dict)

    @property
    def advertised(self) -> str:
        return self.advertised_host or self.host

    def topic_config(self, overrides: Mapping[str, Any] | None = None) -> TopicConfig:
        return TopicConfig.resolve(self.topic_defaults, overrides)

    def internal_log_config(self) -> TopicConfig:
        return internal_log_config(self.internal_segment_bytes,
                                   self.internal_delete_retention_ms,
                                   self.internal_flush_messages, self.internal_flush_ms)

    @classmethod
    def load(
        cls,
        toml_path: Path | None = None,
        environ: Mapping[str, str] | None = None,
        flags: Mapping[str, Any] | None = None,
    ) -> BrokerConfig:
        """Defaults, then TOML, then BAYOU_* environment, then flags (None means unset)."""
        raw: dict[str, Any] = {}
        topic_raw: dict[str, Any] = {}
        if toml_path is not None:
            with open(toml_path, "rb") as f:
                doc = tomllib.load(f)
            topic_raw.update(doc.pop("topic_defaults", {}))
            raw.update({k.replace("-", "_"): v for k, v in doc.items()})
        fields = {f.name: f for f in dataclasses.fields(cls) if f.name != "topic_defaults"}
        for key, value in (environ or {}).items():
            if not key.startswith("BAYOU_"):
                continue
            name = key[len("BAYOU_"):].lower()
            if name.startswith("topic_default_"):
                topic_raw[name[len("topic_default_"):].replace("_", ".")] = value
            elif name in fields:
                raw[name] = value
        for key, value in (flags or {}).items():
            if key == "topic_defaults":
                topic_raw.update(value or {})
            elif value is not None:
                raw[key] = value
        unknown = set(raw) - set(fields)
        if unknown:
            raise InvalidConfig(f"Unknown option(s): {', '.join(sorted(unknown))}")
        config = cls()
        for name, value in raw.items():
            setattr(config, name, _coerce(name, fields[name].type, value))
        config.topic_defaults = parse_topic_configs(topic_raw)
        for origin in config.http_cors_origins:
            check_origin(origin)
        try:
            config.internal_log_config()
        except InvalidConfig as exc:
            raise InvalidConfig(
                f"internal_segment_bytes / internal_delete_retention_ms / "
                f"internal_flush_messages / internal_flush_ms: {exc}") from None
        return config


def check_origin(origin: str) -> None:
    """A CORS origin as browsers send it (``scheme://host[:port]``, no path), or ``*``."""
    if origin == "*":
        return
    scheme, sep, rest = origin.partition("://")
    if not sep or not scheme.isalpha() or not rest or any(c in rest for c in "/?#*, "):
        raise InvalidConfig(
            f"Invalid value {origin!r} for http_cors_origins: an origin is "
            "scheme://host[:port] without a path or trailing slash "
            "(e.g. http://localhost:3000), or * for any origin")


def _coerce(name: str, annotation: Any, value: Any) -> Any:
    kind = str(annotation)
    try:
        if kind.startswith("tuple"):  # a list: TOML array, repeated flag, or "a,b" in env
            items = value.split(",") if isinstance(value, str) else list(value)
            return tuple(str(item).strip() for item in items if str(item).strip())
        if "Path" in kind:
            return Path(value)
        if "bool" in kind:
            if isinstance(value, bool):
                return value
            if str(value).lower() in ("1", "true", "yes", "on"):
                return True
            if str(value).lower() in ("0", "false", "no", "off"):
                return False
            raise ValueError
        if "int" in kind:
            return int(value)
        return None if value is None else str(value)
    except ValueError:
        raise InvalidConfig(f"Option {name} cannot be {value!r}") from None
