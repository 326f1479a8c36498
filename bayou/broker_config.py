"""The options of ``bayou serve``: one frozen section per door and part, typed, one source.

Every option is a field with its help text (``bayou.options.opt``); the command-line flags,
the ``BAYOU_*`` environment variables and the TOML keys are all derived from these fields,
one-to-one (``bayou/options.py``): ``http.port`` is ``--http-port``, ``BAYOU_HTTP_PORT``,
``http_port = …`` or ``[http] port = …``.  Topic-config defaults use Kafka's names:
``[topic_defaults]`` in TOML, ``--topic-default NAME=VALUE``, ``BAYOU_TOPIC_DEFAULT_<NAME>``.

``bayou.app`` turns a ``BrokerConfig`` into the engine's, the core's and each door's settings.
"""

from __future__ import annotations

import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from bayou.config import (
    INTERNAL_DELETE_RETENTION_MS,
    INTERNAL_SEGMENT_BYTES,
    LONG_MAX,
    TopicConfig,
    internal_log_config,
    parse_topic_configs,
)
from bayou.errors import InvalidConfig
from bayou.options import load, opt

TOPIC_DEFAULT_ENV = "BAYOU_TOPIC_DEFAULT_"


@dataclass(frozen=True)
class KafkaOptions:
    port: int = field(default=9092, metadata=opt("Kafka protocol port.", min=0, max=65535))
    tls_port: int = field(
        default=9093,
        metadata=opt(
            "Kafka TLS port (SSL, or SASL_SSL with --authorizer acl), served when --tls-cert "
            "is given; 0: off.",
            min=0,
            max=65535,
        ),
    )
    advertised_host: str | None = field(
        default=None,
        metadata=opt(
            "Host name Kafka clients are told to connect to (default: --host).",
            flat="advertised_host",
            metavar="HOST",
        ),
    )
    socket_request_max_bytes: int = field(
        default=100 * 1024 * 1024,
        metadata=opt(
            "Largest Kafka request frame accepted (Kafka's socket.request.max.bytes).",
            flat="socket_request_max_bytes",
            min=1024,
        ),
    )
    fetch_max_bytes: int = field(
        default=16 * 1024 * 1024,
        metadata=opt(
            "Most record bytes one Fetch response carries (Kafka's fetch.max.bytes; the first "
            "batch is sent whole even beyond it, KIP-74). 16 MiB, not Kafka's 55: librdkafka "
            "reads a response into one buffer, and past glibc's 32 MiB mmap ceiling every "
            "response costs the consumer a fresh mapping and its page faults.",
            flat="fetch_max_bytes",
            min=1024,
        ),
    )


@dataclass(frozen=True)
class HttpOptions:
    port: int = field(
        default=8080, metadata=opt("HTTP port (REST Proxy v2, streams); 0: off.", min=0, max=65535)
    )
    tls_port: int = field(
        default=8443,
        metadata=opt("HTTPS port, served when --tls-cert is given; 0: off.", min=0, max=65535),
    )
    max_body_bytes: int = field(
        default=8 * 1024 * 1024, metadata=opt("Largest HTTP request body accepted.", min=1)
    )
    consumer_instance_timeout_ms: int = field(
        default=300_000,
        metadata=opt(
            "How long an unused REST consumer instance lives (consumer.instance.timeout.ms).", min=1
        ),
    )
    cors_origins: tuple[str, ...] = field(
        default=(),
        metadata=opt(
            "Let web pages from ORIGIN (scheme://host[:port], or * for any) use the HTTP API and "
            "open its streams from a browser. Repeatable.",
            flag="http-cors-origin",
            metavar="ORIGIN",
        ),
    )


@dataclass(frozen=True)
class MqttOptions:
    port: int = field(
        default=1883,
        metadata=opt("MQTT port (TCP and WebSocket share it); 0: off.", min=0, max=65535),
    )
    tls_port: int = field(
        default=8883,
        metadata=opt(
            "MQTT over TLS port (and secure WebSocket), served when --tls-cert is given; 0: off.",
            min=0,
            max=65535,
        ),
    )
    topic_rules: str = field(
        default="",
        metadata=opt(
            "MQTT topic → Kafka topic rules, 'filter=kafka_topic' separated by ';' (first match "
            "wins; else the MQTT topic's first level names the Kafka topic).",
            metavar="RULES",
        ),
    )
    sys_interval: int = field(
        default=10,
        metadata=opt(
            "Seconds between updates of the $SYS/broker/... statistics; 0: no $SYS tree.", min=0
        ),
    )


@dataclass(frozen=True)
class AmqpOptions:
    port: int = field(default=5672, metadata=opt("AMQP 0-9-1 port; 0: off.", min=0, max=65535))
    tls_port: int = field(
        default=5671,
        metadata=opt("AMQPS port, served when --tls-cert is given; 0: off.", min=0, max=65535),
    )
    max_message_bytes: int = field(
        default=100 * 1024 * 1024,
        metadata=opt(
            "Largest AMQP message body accepted (larger ones close the channel with 406).", min=1024
        ),
    )


@dataclass(frozen=True)
class TlsOptions:
    """The TLS listeners of every door (one certificate for all)."""

    cert: Path | None = field(
        default=None,
        metadata=opt(
            "PEM certificate (chain) of the TLS listeners; with --tls-key it turns on a TLS "
            "listener per door beside the plain one. Reloaded on SIGHUP.",
            metavar="FILE",
        ),
    )
    key: Path | None = field(
        default=None, metadata=opt("PEM private key of --tls-cert.", metavar="FILE")
    )
    client_ca: Path | None = field(
        default=None,
        metadata=opt(
            "PEM CA certificate(s): clients may log in with a certificate signed by it (the "
            "principal from its subject, see --tls-principal-mapping-rules).",
            metavar="FILE",
        ),
    )
    principal_mapping_rules: str = field(
        default="DEFAULT",
        metadata=opt(
            "How a client certificate's subject becomes a user name, as Kafka's "
            "ssl.principal.mapping.rules: RULE:pattern/replacement/[LU],...,DEFAULT.",
            metavar="RULES",
        ),
    )


@dataclass(frozen=True)
class SecurityOptions:
    """Authentication and authorization on every door."""

    authorizer: str = field(
        default="none",
        metadata=opt(
            "acl: every listener requires a login (SASL on Kafka, credentials or a client "
            "certificate on the others) and ACLs decide every operation; none: open.",
            flat="authorizer",
            choices=("none", "acl"),
        ),
    )
    super_users: tuple[str, ...] = field(
        default=(),
        metadata=opt(
            "A user allowed everything whatever the ACLs (the principal User:NAME). Repeatable.",
            flat="super_users",
            flag="super-user",
            metavar="NAME",
        ),
    )
    allow_everyone_if_no_acl_found: bool = field(
        default=False,
        metadata=opt(
            "With --authorizer acl, allow what no ACL mentions (Kafka's "
            "allow.everyone.if.no.acl.found).",
            flat="allow_everyone_if_no_acl_found",
        ),
    )
    oauth_jwks_file: Path | None = field(
        default=None,
        metadata=opt(
            "JWKS file of the keys that sign accepted JWTs (SASL/OAUTHBEARER, HTTP Bearer). "
            "Reloaded on SIGHUP.",
            flat="oauth_jwks_file",
            metavar="FILE",
        ),
    )
    oauth_issuer: str | None = field(
        default=None,
        metadata=opt("Required iss claim of JWTs.", flat="oauth_issuer", metavar="ISSUER"),
    )
    oauth_audience: str | None = field(
        default=None,
        metadata=opt("Required aud claim of JWTs.", flat="oauth_audience", metavar="AUDIENCE"),
    )
    oauth_principal_claim: str = field(
        default="sub",
        metadata=opt(
            "The JWT claim naming the user.", flat="oauth_principal_claim", metavar="CLAIM"
        ),
    )
    connections_max_reauth_ms: int = field(
        default=0,
        metadata=opt(
            "Kafka SASL sessions last at most this long; clients re-authenticate (KIP-152). "
            "0: no limit but a token's expiry.",
            flat="connections_max_reauth_ms",
            min=0,
        ),
    )
    failed_authentication_delay_ms: int = field(
        default=100,
        metadata=opt(
            "A failed login is answered after this delay, doubling for each further failure "
            "from the same address (at most 5 s).",
            flat="connection_failed_authentication_delay_ms",
            min=0,
        ),
    )


@dataclass(frozen=True)
class QuotaOptions:
    """How client quotas are measured, and the connection rate of an address (KIP-612)."""

    window_num: int = field(
        default=11,
        metadata=opt(
            "Samples a client quota's rate is measured over (Kafka's quota.window.num).",
            min=1,
            max=1000,
        ),
    )
    window_size_seconds: int = field(
        default=1,
        metadata=opt(
            "Length of each quota sample in seconds (Kafka's quota.window.size.seconds).",
            min=1,
            max=3600,
        ),
    )
    connection_creation_rate_per_ip: int = field(
        default=0,
        metadata=opt(
            "New connections per second one client address may open, on every door (an "
            "address's own or the <default> ip quota, connection_creation_rate, wins); over it "
            "a connection is held, unread, and closed. 0: no limit.",
            flat="max_connection_creation_rate_per_ip",
            min=0,
            max=2**31 - 1,
        ),
    )


@dataclass(frozen=True)
class LogOptions:
    """Retention and the cleaner (Kafka's ``log.*`` broker options)."""

    retention_check_interval_ms: int = field(
        default=5 * 60 * 1000,
        metadata=opt("How often retention and the log cleaner look at every partition.", min=1),
    )
    cleaner_dedupe_buffer_size: int = field(
        default=128 * 1024 * 1024,
        metadata=opt(
            "The cleaner's key map (24 bytes a key); more keys take several passes.", min=1024
        ),
    )
    cleaner_enable: bool = field(default=True, metadata=opt("Run the log cleaner."))


@dataclass(frozen=True)
class InternalOptions:
    """The broker's own compacted state logs (``__consumer_offsets``, MQTT, AMQP …)."""

    segment_bytes: int = field(
        default=INTERNAL_SEGMENT_BYTES,
        metadata=opt(
            "Segment size of the internal state logs (bounds what a restart replays).", min=14
        ),
    )
    delete_retention_ms: int = field(
        default=INTERNAL_DELETE_RETENTION_MS,
        metadata=opt("How long tombstones in the internal state logs survive compaction.", min=0),
    )
    flush_messages: int = field(
        default=LONG_MAX,
        metadata=opt(
            "fsync the internal state logs after this many records (1: strict — every commit "
            "and group change fsynced before it is answered).",
            min=1,
        ),
    )
    flush_ms: int = field(
        default=LONG_MAX,
        metadata=opt("fsync the internal state logs when unflushed data is this old.", min=0),
    )


@dataclass(frozen=True)
class GroupOptions:
    """The group coordinator (Kafka's ``group.*`` options and defaults)."""

    initial_rebalance_delay_ms: int = field(
        default=3000,
        metadata=opt(
            "Wait this long for more members before the first rebalance of a classic group.", min=0
        ),
    )
    min_session_timeout_ms: int = field(
        default=6000, metadata=opt("Smallest session timeout a classic member may ask for.", min=1)
    )
    max_session_timeout_ms: int = field(
        default=1_800_000,
        metadata=opt("Largest session timeout a classic member may ask for.", min=1),
    )
    consumer_session_timeout_ms: int = field(
        default=45_000,
        metadata=opt("Session timeout of consumer-protocol (KIP-848) members.", min=1),
    )
    consumer_heartbeat_interval_ms: int = field(
        default=5000,
        metadata=opt("Heartbeat interval of consumer-protocol (KIP-848) members.", min=1),
    )


@dataclass(frozen=True)
class OffsetsOptions:
    retention_minutes: int = field(
        default=7 * 24 * 60,
        metadata=opt("How long an empty group's committed offsets are kept.", min=1),
    )
    retention_check_interval_ms: int = field(
        default=600_000, metadata=opt("How often expired offsets are looked for.", min=1)
    )


@dataclass(frozen=True)
class TransactionOptions:
    """The transaction coordinator (Kafka's ``transaction.*`` options and defaults)."""

    max_timeout_ms: int = field(
        default=900_000,
        metadata=opt(
            "Largest transaction.timeout.ms a transactional producer may ask for "
            "(transaction.max.timeout.ms).",
            min=1,
        ),
    )
    abort_check_interval_ms: int = field(
        default=10_000,
        metadata=opt(
            "How often transactions older than their timeout are looked for and aborted "
            "(transaction.abort.timed.out.transaction.cleanup.interval.ms).",
            min=1,
        ),
    )
    id_expiration_ms: int = field(
        default=7 * 24 * 3600 * 1000,
        metadata=opt(
            "Forget a transactional id unused this long (transactional.id.expiration.ms).", min=1
        ),
    )
    door_isolation: str = field(
        default="read_committed",
        metadata=opt(
            "What the HTTP, MQTT and AMQP doors deliver from topics written in transactions: "
            "read_committed (only committed records, up to the last stable offset, as a "
            "read_committed Kafka consumer) or read_uncommitted (aborted records too).",
            flat="door_isolation",
            choices=("read_committed", "read_uncommitted"),
        ),
    )
    id_expiration_check_interval_ms: int = field(
        default=3_600_000,
        metadata=opt(
            "How often expired transactional ids are looked for "
            "(transaction.remove.expired.transaction.cleanup.interval.ms).",
            min=1,
        ),
    )


@dataclass(frozen=True)
class ClusterOptions:
    """Brokers sharing an engine (postgres://…): leases and heartbeats (``cluster.md``)."""

    lease_ms: int = field(
        default=6000,
        metadata=opt(
            "A broker is live while its lease runs; a dead broker's partitions and groups "
            "move once it lapsed.",
            min=1000,
        ),
    )
    heartbeat_ms: int = field(
        default=1000,
        metadata=opt(
            "How often a broker renews its lease and looks at the others (at most half the lease).",
            min=100,
        ),
    )


@dataclass(frozen=True)
class BrokerConfig:
    """All options of ``bayou serve`` (see the module docstring)."""

    data_dir: Path = field(
        default=Path("./data"),
        metadata=opt("Directory holding the logs and metadata (the local engine).", metavar="DIR"),
    )
    storage: str = field(
        default="local",
        metadata=opt(
            "Storage engine: local (the segment log in --data-dir), memory:// (nothing "
            "durable: tests, benchmarks), postgres://user@host:port/db (everything in "
            "PostgreSQL; --data-dir unused) or s3://bucket/prefix?metadata=postgres://… "
            "(record batches in object storage, the rest in PostgreSQL; --data-dir holds "
            "only a read cache).",
            metavar="URL",
        ),
    )
    tiered_storage: str | None = field(
        default=None,
        metadata=opt(
            "Tiered storage for topics with remote.storage.enable: the object store, "
            "s3://BUCKET[/PREFIX]?endpoint=URL&region=R (credentials from the AWS_* "
            "environment variables; local engine only).",
            metavar="URL",
        ),
    )
    host: str = field(
        default="127.0.0.1", metadata=opt("Address the listeners bind to.", metavar="ADDRESS")
    )
    node_id: int = field(
        default=0,
        metadata=opt(
            "This broker's node id (unique per broker on a shared engine: docs/design/cluster.md).",
            min=0,
        ),
    )
    workers: int = field(
        default=1,
        metadata=opt(
            "Broker processes to run on this host, each a broker of the cluster on the shared "
            "engine (postgres:// or s3:// only): node ids --node-id + i, Kafka and HTTP ports "
            "+ i, MQTT and AMQP ports shared (SO_REUSEPORT); a supervisor restarts a worker "
            "that dies (docs/design/cluster.md).",
            min=1,
            max=256,
        ),
    )
    cluster_id: str | None = field(
        default=None,
        metadata=opt("Cluster id to report (default: the one the storage holds).", metavar="ID"),
    )
    log_level: str = field(
        default="INFO",
        metadata=opt("Broker log verbosity.", choices=("DEBUG", "INFO", "WARNING", "ERROR")),
    )
    log_format: str = field(
        default="text",
        metadata=opt(
            "Broker log format: text, or json (one JSON object per line: time, level, logger, "
            "message, exception).",
            choices=("text", "json"),
        ),
    )
    views: str = field(
        default="serve",
        metadata=opt(
            "Where SQL views run: serve (inside this broker) or workers (separate "
            "`bayou streams views` processes sharing the work).",
            choices=("serve", "workers"),
        ),
    )
    connect: str = field(
        default="serve",
        metadata=opt(
            "Whether this broker runs the connectors stored through /connectors: serve, or "
            "off (the API then answers 503; `bayou connect run` works against any broker).",
            choices=("serve", "off"),
        ),
    )
    auto_create_topics_enable: bool = field(
        default=True,
        metadata=opt("Create a topic when a client first asks for it.", flag="auto-create-topics"),
    )
    num_partitions: int = field(
        default=1, metadata=opt("Partitions of auto-created topics.", min=1)
    )
    queued_max_request_bytes: int = field(
        default=100 * 1024 * 1024,
        metadata=opt(
            "Request bytes all doors may hold in unfinished requests at once (Kafka's "
            "queued.max.request.bytes, bounded here).",
            min=1024,
        ),
    )
    request_stall_timeout_ms: int = field(
        default=30_000,
        metadata=opt(
            "Close a connection whose unfinished request makes no progress this long.", min=1
        ),
    )
    kafka: KafkaOptions = field(default_factory=KafkaOptions)
    http: HttpOptions = field(default_factory=HttpOptions)
    mqtt: MqttOptions = field(default_factory=MqttOptions)
    amqp: AmqpOptions = field(default_factory=AmqpOptions)
    tls: TlsOptions = field(default_factory=TlsOptions)
    security: SecurityOptions = field(default_factory=SecurityOptions)
    quota: QuotaOptions = field(default_factory=QuotaOptions)
    log: LogOptions = field(default_factory=LogOptions)
    internal: InternalOptions = field(default_factory=InternalOptions)
    group: GroupOptions = field(default_factory=GroupOptions)
    offsets: OffsetsOptions = field(default_factory=OffsetsOptions)
    transaction: TransactionOptions = field(default_factory=TransactionOptions)
    cluster: ClusterOptions = field(default_factory=ClusterOptions)
    topic_defaults: Mapping[str, Any] = field(default_factory=dict)

    @property
    def advertised(self) -> str:
        return self.kafka.advertised_host or self.host

    def internal_log_config(self) -> TopicConfig:
        i = self.internal
        return internal_log_config(
            i.segment_bytes, i.delete_retention_ms, i.flush_messages, i.flush_ms
        )

    @classmethod
    def load(
        cls,
        toml_path: Path | None = None,
        environ: Mapping[str, str] | None = None,
        flags: Mapping[str, Any] | None = None,
    ) -> BrokerConfig:
        """Defaults, then TOML, then BAYOU_* environment, then flags (None means unset)."""
        doc: dict[str, Any] = {}
        if toml_path is not None:
            with open(toml_path, "rb") as f:
                doc = tomllib.load(f)
        environ = dict(environ or {})
        flags = dict(flags or {})
        if flags.get("log_level") is not None:
            flags["log_level"] = str(flags["log_level"]).upper()
        if flags.get("log_format") is not None:
            flags["log_format"] = str(flags["log_format"]).lower()
        if isinstance(environ.get("BAYOU_LOG_FORMAT"), str):
            environ["BAYOU_LOG_FORMAT"] = environ["BAYOU_LOG_FORMAT"].lower()
        if isinstance(environ.get("BAYOU_LOG_LEVEL"), str):
            environ["BAYOU_LOG_LEVEL"] = environ["BAYOU_LOG_LEVEL"].upper()
        config, extra = load(cls, doc, environ, flags, extra=["topic_defaults"])
        topic_raw: dict[str, Any] = dict(extra.get("topic_defaults", {}))
        for key, value in environ.items():
            if key.startswith(TOPIC_DEFAULT_ENV):
                topic_raw[key[len(TOPIC_DEFAULT_ENV) :].lower().replace("_", ".")] = value
        topic_raw.update(flags.get("topic_defaults") or {})
        config = replace(config, topic_defaults=parse_topic_configs(topic_raw))
        for origin in config.http.cors_origins:
            check_origin(origin)
        check_security(config)
        try:
            config.internal_log_config()
        except InvalidConfig as exc:
            raise InvalidConfig(
                f"internal_segment_bytes / internal_delete_retention_ms / "
                f"internal_flush_messages / internal_flush_ms: {exc}"
            ) from None
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
            "(e.g. http://localhost:3000), or * for any origin"
        )


def check_security(config: BrokerConfig) -> None:
    """The TLS files come in pairs; super users are user names."""
    tls = config.tls
    if (tls.cert is None) != (tls.key is None):
        raise InvalidConfig("tls_cert and tls_key go together: give both or neither")
    if tls.client_ca is not None and tls.cert is None:
        raise InvalidConfig("tls_client_ca needs tls_cert and tls_key (a TLS listener)")
    for name in config.security.super_users:
        if not name or name in ("User:", "user:"):
            raise InvalidConfig(f"super_users: {name!r} is not a user name")
