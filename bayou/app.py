"""``bayou serve``: the composition root — engine, core and doors from one config.

Theory of operation
-------------------
One process, one event loop (uvloop when installed).  ``App`` builds, from a
``BrokerConfig``: the storage engine its ``storage`` option names (``local`` — the segment
log in the data directory, with tiered storage when ``tiered_storage`` names an object
store —, ``memory://``, ``postgres://…`` or ``s3://…?metadata=postgres://…``), the
``Core`` over it, and the doors whose port is not 0 (Kafka always).  Nothing else knows
which engine or which doors exist: the core imports no door, and a door sees only the core.

Start, in order: the engine opens (recovering every partition; the local engine takes the
data directory's lock and raises the open-files limit) and starts its background work
(flush timers, checkpoints, retention and the cleaner); the core loads the group
coordinator from its state log; the broker joins its cluster (``storage/cluster.py``: on a
shared engine it registers, claims its partitions and keeps only its groups); the doors
bind their listeners; one line lists them.
Last, the heap is settled (``settle_heap``): one full collection, then ``gc.freeze()``
moves every object alive at that point — modules, classes, the recovered logs' state —
out of the collector's reach.  Serving allocates and frees at a steady rate, so the young
collections stay small (≈0.1 ms), but the first older-generation collections would
otherwise traverse the whole start-up heap (a 20 ms pause at the end of start-up, 1.3 ms
for a generation-1 pass under load, measured with ``gc.callbacks``): a pause every
produce→ack waiting at that moment pays.  The thresholds stay at Python's defaults:
frequent small young collections keep each pause short.

Stop, in reverse: the listeners stop accepting, the core is marked stopping (every long poll
and stream ends), the HTTP, MQTT and AMQP doors stop (consumers commit what was acked, MQTT
saves its sessions — before the coordinator and the engine close), the broker leaves its
cluster (the others take over at once), the core answers parked
group requests, the Kafka door lets in-flight requests answer (bounded) and closes its
connections, and the engine drains pending fsyncs and closes, writing its checkpoints and
clean-shutdown marker.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import signal

from bayou.broker_config import BrokerConfig
from bayou.connect.supervisor import CATALOG_TOPIC as CONNECT_CATALOG
from bayou.connect.supervisor import ConnectSupervisor
from bayou.console import Console
from bayou.core import Core, CoreSettings, Isolation
from bayou.core.groups import GroupSettings
from bayou.core.quotas import Quotas, QuotaSettings
from bayou.core.security import Security, SecuritySettings
from bayou.core.transactions import TxnSettings
from bayou.errors import InvalidConfig
from bayou.gateways.amqp import AmqpGateway
from bayou.gateways.door import Door
from bayou.gateways.http import HttpGateway
from bayou.gateways.kafka.server import KafkaDoor, KafkaSettings
from bayou.gateways.mqtt import MqttGateway
from bayou.observability import BrokerMetrics
from bayou.observability.broker_collector import BrokerCollector
from bayou.observability.json_logs import configure_logging
from bayou.observability.loop_lag import LoopLagProbe
from bayou.observability.views_collector import ViewsCollector
from bayou.storage.cluster import BrokerAddress, Cluster, SingleNode
from bayou.storage.dir_lock import DataDirectoryInUse
from bayou.storage.engine import FsyncObserved, LogEngine
from bayou.storage.local_engine import LocalEngine
from bayou.storage.maintenance import MaintenanceSettings
from bayou.storage.memory import MemoryEngine
from bayou.storage.tiered.storage import TieredSettings
from bayou.streams.views import CATALOG_TOPIC, ViewSupervisor

log = logging.getLogger("bayou")


def make_engine(config: BrokerConfig) -> LogEngine:
    """The engine the ``storage`` option names."""
    url = config.storage.strip()
    maintenance = MaintenanceSettings(
        config.log.retention_check_interval_ms,
        config.log.cleaner_dedupe_buffer_size,
        config.log.cleaner_enable,
    )
    tiered = TieredSettings.from_url(config.tiered_storage) if config.tiered_storage else None
    if tiered is None and config.topic_defaults.get("remote.storage.enable"):
        raise InvalidConfig("remote.storage.enable=true as a topic default needs --tiered-storage")
    if url in ("", "local") or url.startswith("file:"):
        return LocalEngine(
            config.data_dir,
            config.topic_defaults,
            internal_config=config.internal_log_config(),
            maintenance=maintenance,
            tiered=tiered,
        )
    if tiered is not None:
        raise InvalidConfig(f"--tiered-storage needs the local engine, not {url!r}")
    if url.startswith("memory:"):
        return MemoryEngine(
            config.topic_defaults,
            location=url,
            maintenance_interval_ms=maintenance.interval_ms,
            internal_config=config.internal_log_config(),
        )
    if url.startswith(("postgres://", "postgresql://")):
        from bayou.storage.postgres import PostgresEngine  # psycopg is loaded only when used

        return PostgresEngine(
            url,
            config.topic_defaults,
            internal_config=config.internal_log_config(),
            maintenance=maintenance,
            node_id=config.node_id,
        )
    if url.startswith("s3://"):
        from bayou.storage.s3 import ObjectEngine, ObjectEngineSettings

        return ObjectEngine(
            ObjectEngineSettings.from_url(url),
            config.data_dir / "object-cache",
            config.topic_defaults,
            internal_config=config.internal_log_config(),
            maintenance=maintenance,
            node_id=config.node_id,
        )
    raise InvalidConfig(
        f"Unknown storage {url!r}: expected local, memory://, postgres://user@host:port/db "
        "or s3://bucket/prefix?metadata=postgres://…"
    )


def make_cluster(config: BrokerConfig, engine: LogEngine) -> Cluster:
    """A cluster of the brokers sharing the engine, or this broker alone.  ``s3://`` is the
    PostgreSQL engine with batches elsewhere: its brokers form the same cluster."""
    if engine.kind in ("postgres", "s3"):
        from bayou.storage.postgres import PostgresEngine
        from bayou.storage.postgres.cluster import PgCluster

        assert isinstance(engine, PostgresEngine)
        return PgCluster(
            engine,
            config.node_id,
            lease_ms=config.cluster.lease_ms,
            heartbeat_ms=config.cluster.heartbeat_ms,
        )
    return SingleNode(config.node_id)


def group_settings(config: BrokerConfig) -> GroupSettings:
    g, o = config.group, config.offsets
    return GroupSettings(
        initial_rebalance_delay_ms=g.initial_rebalance_delay_ms,
        min_session_timeout_ms=g.min_session_timeout_ms,
        max_session_timeout_ms=g.max_session_timeout_ms,
        offsets_retention_ms=o.retention_minutes * 60_000,
        offsets_retention_check_interval_ms=o.retention_check_interval_ms,
        consumer_session_timeout_ms=g.consumer_session_timeout_ms,
        consumer_heartbeat_interval_ms=g.consumer_heartbeat_interval_ms,
    )


def txn_settings(config: BrokerConfig) -> TxnSettings:
    t = config.transaction
    return TxnSettings(
        max_timeout_ms=t.max_timeout_ms,
        abort_check_interval_ms=t.abort_check_interval_ms,
        transactional_id_expiration_ms=t.id_expiration_ms,
        expiration_check_interval_ms=t.id_expiration_check_interval_ms,
    )


def door_isolation(name: str) -> Isolation:
    return "read_uncommitted" if name == "read_uncommitted" else "read_committed"


def security_settings(config: BrokerConfig) -> SecuritySettings:
    s, tls = config.security, config.tls
    return SecuritySettings(
        authorizer=s.authorizer == "acl",
        super_users=tuple(
            name if name.startswith("User:") else f"User:{name}" for name in s.super_users
        ),
        allow_everyone_if_no_acl_found=s.allow_everyone_if_no_acl_found,
        principal_mapping_rules=tls.principal_mapping_rules,
        tls_cert=tls.cert,
        tls_key=tls.key,
        tls_client_ca=tls.client_ca,
        oauth_jwks_file=s.oauth_jwks_file,
        oauth_issuer=s.oauth_issuer,
        oauth_audience=s.oauth_audience,
        oauth_principal_claim=s.oauth_principal_claim,
        connections_max_reauth_ms=s.connections_max_reauth_ms,
        failed_authentication_delay_ms=s.failed_authentication_delay_ms,
    )


def quota_settings(config: BrokerConfig) -> QuotaSettings:
    q = config.quota
    return QuotaSettings(
        window_num=q.window_num,
        window_size_s=q.window_size_seconds,
        connection_creation_rate_per_ip=q.connection_creation_rate_per_ip,
    )


def kafka_listeners(config: BrokerConfig, host: str, port: int, tls_port: int) -> str:
    """Kafka's ``listeners`` value: each listener with its security protocol."""
    sasl = "SASL_" if config.security.authorizer == "acl" else ""
    listeners = [f"{sasl}PLAINTEXT://{host}:{port}"]
    if config.tls.cert is not None and config.kafka.tls_port:
        listeners.append(f"{sasl}SSL://{host}:{tls_port}")
    return ",".join(listeners)


def static_broker_configs(
    config: BrokerConfig, kafka_port: int, kafka_tls_port: int = 0
) -> tuple[tuple[str, str, str], ...]:
    """The broker's own options as DescribeConfigs shows them (Kafka names, read-only)."""

    def text(value: object) -> str:
        return str(value).lower() if isinstance(value, bool) else str(value)

    entries: list[tuple[str, object, str]] = [
        ("node.id", config.node_id, "int"),
        ("broker.id", config.node_id, "int"),
        ("auto.create.topics.enable", config.auto_create_topics_enable, "bool"),
        ("num.partitions", config.num_partitions, "int"),
        ("socket.request.max.bytes", config.kafka.socket_request_max_bytes, "int"),
        ("queued.max.request.bytes", config.queued_max_request_bytes, "long"),
        ("fetch.max.bytes", config.kafka.fetch_max_bytes, "int"),
        ("listeners", kafka_listeners(config, config.host, kafka_port, kafka_tls_port), "list"),
        (
            "advertised.listeners",
            kafka_listeners(config, config.advertised, kafka_port, kafka_tls_port),
            "list",
        ),
        ("log.dirs", str(config.data_dir), "string"),
        ("quota.window.num", config.quota.window_num, "int"),
        ("quota.window.size.seconds", config.quota.window_size_seconds, "int"),
        ("log.retention.check.interval.ms", config.log.retention_check_interval_ms, "long"),
        ("log.cleaner.enable", config.log.cleaner_enable, "bool"),
        ("log.cleaner.dedupe.buffer.size", config.log.cleaner_dedupe_buffer_size, "long"),
        ("transaction.max.timeout.ms", config.transaction.max_timeout_ms, "int"),
        (
            "transaction.abort.timed.out.transaction.cleanup.interval.ms",
            config.transaction.abort_check_interval_ms,
            "int",
        ),
        ("transactional.id.expiration.ms", config.transaction.id_expiration_ms, "int"),
        (
            "transaction.remove.expired.transaction.cleanup.interval.ms",
            config.transaction.id_expiration_check_interval_ms,
            "int",
        ),
    ]
    return tuple((name, text(value), kind) for name, value, kind in entries)


class App:
    """The broker: engine, core and doors (see the module docstring)."""

    def __init__(self, config: BrokerConfig, *, reuse_port: bool = False) -> None:
        """``reuse_port``: the MQTT and AMQP listeners bind with SO_REUSEPORT, shared with
        the other workers of ``--workers N`` (``bayou/workers.py``)."""
        self.config = config
        self.engine = make_engine(config)
        self.metrics = BrokerMetrics()
        if isinstance(self.engine, FsyncObserved):
            self.engine.observe_fsync(self.metrics.observe_fsync)
        self.core = Core(
            self.engine,
            CoreSettings(
                node_id=config.node_id,
                cluster_id=config.cluster_id,
                auto_create_topics_enable=config.auto_create_topics_enable,
                num_partitions=config.num_partitions,
                queued_max_request_bytes=config.queued_max_request_bytes,
                request_stall_timeout_ms=config.request_stall_timeout_ms,
                door_isolation=door_isolation(config.transaction.door_isolation),
            ),
            group_settings(config),
            txn_settings(config),
            Security(security_settings(config)),
            metrics=self.metrics,
            quotas=Quotas(quota_settings(config)),
            cluster=make_cluster(config, self.engine),
        )
        self.metrics.register(BrokerCollector(self.core, self.metrics))
        self.views: ViewSupervisor | None = None  # started with the broker (--views serve)
        self.connect: ConnectSupervisor | None = None  # started with it (--connect serve)
        self.metrics.register(
            ViewsCollector(lambda: self.views.stats() if self.views is not None else {})
        )
        self.loop_lag = LoopLagProbe(self.metrics.loop_lag_seconds.observe)
        self.kafka = KafkaDoor(
            self.core, self._kafka_settings(config.kafka.port, config.kafka.tls_port)
        )
        self.http = HttpGateway(self.core, config.host, config.http) if config.http.port else None
        self.mqtt = (
            MqttGateway(self.core, config.host, config.mqtt, reuse_port=reuse_port)
            if config.mqtt.port
            else None
        )
        self.amqp = (
            AmqpGateway(self.core, config.host, config.amqp, reuse_port=reuse_port)
            if config.amqp.port
            else None
        )
        if self.http is not None:  # the console, on the HTTP door behind its login
            console = Console(self.core, self.http.gateway.sessions)
            self.http.add_routes(console.routes(), link=("console", "/console"))

    def loopback_client_config(self) -> dict[str, object]:
        """librdkafka settings reaching this broker's own Kafka listener (views, SQL)."""
        host = self.config.host
        if host in ("", "0.0.0.0", "::"):
            host = "127.0.0.1"
        if ":" in host:
            host = f"[{host}]"
        return {
            "bootstrap.servers": f"{host}:{self.kafka.port}",
            **self.core.security.internal_client_config(),
        }

    def _kafka_settings(self, port: int, tls_port: int) -> KafkaSettings:
        config = self.config
        return KafkaSettings(
            host=config.host,
            port=port,
            tls_port=tls_port,
            tls_enabled=config.tls.cert is not None and config.kafka.tls_port != 0,
            advertised_host=config.kafka.advertised_host,
            socket_request_max_bytes=config.kafka.socket_request_max_bytes,
            fetch_max_bytes=config.kafka.fetch_max_bytes,
            static_configs=static_broker_configs(config, port, tls_port),
        )

    @property
    def doors(self) -> list[Door]:
        return [d for d in (self.kafka, self.http, self.mqtt, self.amqp) if d is not None]

    async def start(self) -> None:
        self.loop_lag.start()
        await self.engine.open()
        await self.engine.start()
        await self.core.start()
        # join the cluster before listening (clients asking this broker see the others);
        # a Kafka port still to be chosen (0) is known only once the door listens
        tls = self.kafka.settings.tls_enabled and self.core.security.tls is not None
        known = self.config.kafka.port != 0 and (not tls or self.config.kafka.tls_port != 0)
        if known:
            await self.core.join(
                BrokerAddress(
                    self.config.node_id,
                    self.config.advertised,
                    self.config.kafka.port,
                    tls_port=self.config.kafka.tls_port if tls else 0,
                )
            )
        for door in self.doors:
            await door.start()
        if not known:  # bound to a free port: say the real one
            self.kafka.settings = self._kafka_settings(self.kafka.port, self.kafka.tls_port)
            await self.core.join(
                BrokerAddress(
                    self.config.node_id,
                    self.kafka.advertised_host,
                    self.kafka.advertised_port,
                    tls_port=self.kafka.tls_port if tls else 0,
                )
            )
        if self.http is not None:
            self.http.gateway.sql_client_config = self.loopback_client_config()
        if self.config.views == "serve":
            self.views = ViewSupervisor(
                self.loopback_client_config(),
                self.config.data_dir / "streams",
                catalog_exists=lambda: CATALOG_TOPIC in self.core.topics(),
            )
            self.views.start()
            if self.http is not None:
                self.http.gateway.views = self.views
        if self.config.connect == "serve":
            self.connect = ConnectSupervisor(
                self.loopback_client_config(),
                self._worker_id(),
                catalog_exists=lambda: CONNECT_CATALOG in self.core.topics(),
                placement=self._runs_connector,
            )
            self.connect.start()
            if self.http is not None:
                self.http.gateway.connect = self.connect
        listening = " ".join(
            f"{name}={door.address if door is not None else 'off'}"
            for name, door in (
                ("kafka", self.kafka),
                ("http", self.http),
                ("mqtt", self.mqtt),
                ("amqp", self.amqp),
            )
        )
        log.info(
            "Bayou listening: %s (advertised %s:%d) · storage %s · cluster %s",
            listening,
            self.kafka.advertised_host,
            self.kafka.advertised_port,
            self.engine.location,
            self.core.cluster_id,
        )

    def _runs_connector(self, name: str) -> bool:
        """Whether connector ``name`` runs here: on the broker coordinating its group
        (every connector, outside a cluster).  Asked from the supervisor's thread."""
        cluster = self.core.cluster
        return cluster.active() and cluster.coordinator(0, f"connect-{name}") == self.core.node_id

    def _worker_id(self) -> str:
        """How connector statuses name this broker: Kafka Connect's host:port of its REST
        API (the HTTP door; the Kafka listener when the door is off)."""
        if self.http is not None:
            port = self.http.address.rsplit(":", 1)[-1]
            return f"{self.kafka.advertised_host}:{port}"
        return f"{self.kafka.advertised_host}:{self.kafka.advertised_port}"

    async def stop(self) -> None:
        log.info("shutting down")
        if self.connect is not None:  # tasks flush and commit while the broker still serves
            await asyncio.to_thread(self.connect.stop)
        if self.views is not None:
            await asyncio.to_thread(self.views.stop)
        self.kafka.close_listener()
        self.core.begin_stop()
        for door in (self.http, self.mqtt, self.amqp):
            if door is not None:
                await door.stop()
        # after the doors saved their offsets; the others take over at once
        await self.core.cluster.leave()
        await self.core.close()
        await self.kafka.stop()
        await self.engine.close()
        await self.loop_lag.stop()
        log.info("stopped")


def settle_heap() -> None:
    """Collect once, then freeze what is alive, so that later collections never traverse
    the start-up heap (see the module docstring)."""
    gc.collect()
    gc.freeze()


def _install_uvloop() -> None:
    try:
        import uvloop
    except ImportError:
        return
    asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())


async def serve(config: BrokerConfig, *, reuse_port: bool = False) -> None:
    """Run the broker until SIGINT or SIGTERM."""
    app = App(config, reuse_port=reuse_port)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    loop.add_signal_handler(signal.SIGHUP, app.core.security.reload)
    await app.start()
    settle_heap()
    try:
        await stop.wait()
    finally:
        await app.stop()


def run(config: BrokerConfig, *, reuse_port: bool = False) -> None:
    """Blocking entry point used by ``bayou serve`` (and by each of its ``--workers``)."""
    configure_logging(config.log_level, config.log_format)
    _install_uvloop()
    try:
        asyncio.run(serve(config, reuse_port=reuse_port))
    except (OSError, DataDirectoryInUse, InvalidConfig) as exc:
        # a port in use, an unwritable or already used data dir: one sentence, not a trace
        log.error("cannot start: %s", exc)
        raise SystemExit(1) from None
