"""``bayou serve``: the composition root — engine, core and doors from one config.

Theory of operation
-------------------
One process, one event loop (uvloop when installed).  ``App`` builds, from a
``BrokerConfig``: the storage engine its ``storage`` option names (``local`` — the segment
log in the data directory, with tiered storage when ``tiered_storage`` names an object
store —, ``memory://`` or ``postgres://…``), the ``Core`` over it, and the doors whose port
is not 0 (Kafka always).  Nothing else knows which engine or which doors exist: the core
imports no door, and a door sees only the core.

Start, in order: the engine opens (recovering every partition; the local engine takes the
data directory's lock and raises the open-files limit) and starts its background work
(flush timers, checkpoints, retention and the cleaner); the core loads the group
coordinator from its state log; the broker joins its cluster (``storage/cluster.py``: on a
shared engine it registers, claims its partitions and keeps only its groups); the doors
bind their listeners; one line lists them.

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
import logging
import signal
import sys

from bayou.broker_config import BrokerConfig
from bayou.core import Core, CoreSettings, Isolation
from bayou.core.groups import GroupSettings
from bayou.core.security import Security, SecuritySettings
from bayou.core.transactions import TxnSettings
from bayou.errors import InvalidConfig
from bayou.gateways.amqp import AmqpGateway
from bayou.gateways.door import Door
from bayou.gateways.http import HttpGateway
from bayou.gateways.kafka.server import KafkaDoor, KafkaSettings
from bayou.gateways.mqtt import MqttGateway
from bayou.storage.cluster import BrokerAddress, Cluster, SingleNode
from bayou.storage.dir_lock import DataDirectoryInUse
from bayou.storage.engine import LogEngine
from bayou.storage.local_engine import LocalEngine
from bayou.storage.maintenance import MaintenanceSettings
from bayou.storage.memory import MemoryEngine
from bayou.storage.tiered.storage import TieredSettings

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
    raise InvalidConfig(
        f"Unknown storage {url!r}: expected local, memory:// or postgres://user@host:port/db"
    )


def make_cluster(config: BrokerConfig, engine: LogEngine) -> Cluster:
    """A cluster of the brokers sharing the engine, or this broker alone."""
    if engine.kind == "postgres":
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

    def __init__(self, config: BrokerConfig) -> None:
        self.config = config
        self.engine = make_engine(config)
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
            cluster=make_cluster(config, self.engine),
        )
        self.kafka = KafkaDoor(
            self.core, self._kafka_settings(config.kafka.port, config.kafka.tls_port)
        )
        self.http = HttpGateway(self.core, config.host, config.http) if config.http.port else None
        self.mqtt = MqttGateway(self.core, config.host, config.mqtt) if config.mqtt.port else None
        self.amqp = AmqpGateway(self.core, config.host, config.amqp) if config.amqp.port else None

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
        await self.engine.open()
        await self.engine.start()
        await self.core.start()
        # join the cluster before listening (clients asking this broker see the others);
        # a Kafka port still to be chosen (0) is known only once the door listens
        known = self.config.kafka.port != 0
        if known:
            await self.core.join(
                BrokerAddress(self.config.node_id, self.config.advertised, self.config.kafka.port)
            )
        for door in self.doors:
            await door.start()
        if not known:  # bound to a free port: say the real one
            self.kafka.settings = self._kafka_settings(self.kafka.port, self.kafka.tls_port)
            await self.core.join(
                BrokerAddress(
                    self.config.node_id, self.kafka.advertised_host, self.kafka.advertised_port
                )
            )
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

    async def stop(self) -> None:
        log.info("shutting down")
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
        log.info("stopped")


def _install_uvloop() -> None:
    try:
        import uvloop
    except ImportError:
        return
    asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())


async def serve(config: BrokerConfig) -> None:
    """Run the broker until SIGINT or SIGTERM."""
    app = App(config)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    loop.add_signal_handler(signal.SIGHUP, app.core.security.reload)
    await app.start()
    try:
        await stop.wait()
    finally:
        await app.stop()


def run(config: BrokerConfig) -> None:
    """Blocking entry point used by ``bayou serve``."""
    logging.basicConfig(
        level=getattr(logging, config.log_level.upper(), logging.INFO),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    _install_uvloop()
    try:
        asyncio.run(serve(config))
    except (OSError, DataDirectoryInUse, InvalidConfig) as exc:
        # a port in use, an unwritable or already used data dir: one sentence, not a trace
        log.error("cannot start: %s", exc)
        raise SystemExit(1) from None
