"""Kafka's dynamic broker configs: the names AlterConfigs may set on a BROKER resource.

Theory of operation
-------------------
Kafka lets an admin change some broker configs at runtime (``DynamicBrokerConfig``: its
``AllDynamicConfigs`` — SSL and SASL settings, listener limits, thread pools, the log
cleaner, producer-id expiry, remote-log throttles, metric reporters — the topic-config
defaults under their broker names, and the replication throttles).  Tools and operators set
them whatever broker they talk to, so Bayou accepts every one of them:

* the topic-config defaults Bayou has (``log.retention.ms`` …, ``bayou.config.BROKER_SYNONYMS``)
  are not listed here: they change every topic's effective config, live (``config_changes``);
* the rest, listed in ``DYNAMIC_CONFIGS`` with Kafka's type and bounds, are validated,
  persisted (``DATA/broker_configs.json``) and shown by DescribeConfigs with their dynamic
  source — even where Bayou has nothing to tune (one cleaner thread, no SSL yet, no
  replication).  ``applies`` says which these are, for the documentation;
* configs Bayou takes only at start, which it shows read-only (``listeners``,
  ``advertised.listeners``, ``listener.security.protocol.map``,
  ``log.cleaner.dedupe.buffer.size``), are refused: storing a value that does not apply would
  make DescribeConfigs lie.

Kafka's scoping rules hold: listener and security configs are per-broker (refused on the
cluster-wide default, resource name ``""``); SSL keystore/truststore settings only exist per
listener, ``listener.name.<listener>.<config>`` (SASL mechanism settings as
``listener.name.<listener>.<mechanism>.<config>``), and are refused without that prefix.
Unlike Kafka, which accepts unknown names as "custom" configs, Bayou refuses names it does
not know: a typo should not look accepted.  Password-typed values are stored as given (the
data directory holds them, as Kafka's metadata log does) and never shown: DescribeConfigs
marks them sensitive with no value.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from bayou.config import ConfigDef
from bayou.errors import InvalidConfig

# scopes
CLUSTER = "cluster"  # the cluster-wide default or one broker
BROKER = "broker"  # one broker only (Kafka's PerBrokerConfigs)
LISTENER = "listener"  # only as listener.name.<listener>.<config>

READ_ONLY_IN_BAYOU = {
    "listeners": "--host/--kafka-port",
    "advertised.listeners": "--advertised-host",
    "listener.security.protocol.map": "its listeners",
    "log.cleaner.dedupe.buffer.size": "--log-cleaner-dedupe-buffer-size",
}

# Kafka's ListenerMechanismConfigs: listener.name.<l>.<mechanism>.<config>
_MECHANISM_CONFIGS = frozenset(
    {
        "sasl.jaas.config",
        "sasl.login.callback.handler.class",
        "sasl.login.class",
        "sasl.server.callback.handler.class",
        "connections.max.reauth.ms",
    }
)
_LISTENER_PREFIX = re.compile(r"listener\.name\.([^.]+)\.(.+)")


@dataclass(frozen=True)
class DynamicConfig:
    """One dynamic broker config: how to parse it, where it may be set, and whether Bayou
    does anything with it."""

    definition: ConfigDef
    scope: str = CLUSTER
    applies: bool = False

    @property
    def name(self) -> str:
        return self.definition.name

    @property
    def sensitive(self) -> bool:
        return self.definition.type == "password"


def _at_least(n: float) -> Callable[[Any], str | None]:
    return lambda v: None if v >= n else f"must be at least {n}"


def _between(low: float, high: float) -> Callable[[Any], str | None]:
    return lambda v: None if low <= v <= high else f"must be between {low} and {high}"


def _one_of(*choices: str) -> Callable[[Any], str | None]:
    return lambda v: None if v in choices else f"must be one of {', '.join(choices)}"


def _compression_level(low: int, high: int, *extra: int) -> Callable[[Any], str | None]:
    return lambda v: None if low <= v <= high or v in extra else f"must be in [{low}, {high}]"


def _d(
    name: str, kind: str, scope: str = CLUSTER, check: Callable[[Any], str | None] | None = None
) -> DynamicConfig:
    definition = ConfigDef(
        name,
        kind,
        None,
        "Kafka dynamic broker config (stored; Bayou has nothing to tune for it).",
        check or (lambda _v: None),
    )
    return DynamicConfig(definition, scope)


_DEFS = [
    # the log cleaner (LogCleaner.ReconfigurableConfigs; message.max.bytes is a topic default)
    _d("log.cleaner.threads", "int", check=_at_least(0)),
    _d("log.cleaner.io.buffer.load.factor", "double"),
    _d("log.cleaner.io.buffer.size", "int", check=_at_least(0)),
    _d("log.cleaner.io.max.bytes.per.second", "double"),
    _d("log.cleaner.backoff.ms", "long", check=_at_least(0)),
    # topic-config defaults Bayou's topics do not have (DynamicLogConfig)
    _d("log.roll.jitter.ms", "long", check=_at_least(0)),
    _d("log.segment.delete.delay.ms", "long", check=_at_least(0)),
    _d("unclean.leader.election.enable", "bool"),
    _d("compression.gzip.level", "int", check=_compression_level(1, 9, -1)),
    _d("compression.lz4.level", "int", check=_compression_level(1, 17)),
    _d("compression.zstd.level", "int", check=_compression_level(-131072, 22)),
    _d("log.preallocate", "bool"),
    _d("log.message.timestamp.difference.max.ms", "long", check=_at_least(0)),
    _d("log.message.timestamp.before.max.ms", "long", check=_at_least(0)),
    _d("log.message.timestamp.after.max.ms", "long", check=_at_least(0)),
    _d("log.message.downconversion.enable", "bool"),
    # thread pools (DynamicThreadPool)
    _d("num.io.threads", "int", check=_at_least(1)),
    _d("num.replica.fetchers", "int", check=_at_least(1)),
    _d("num.recovery.threads.per.data.dir", "int", check=_at_least(1)),
    _d("background.threads", "int", check=_at_least(1)),
    _d("metric.reporters", "list"),
    # connection limits (SocketServer, DynamicListenerConfig's cluster-level ones)
    _d("max.connections", "int", check=_at_least(0)),
    _d("max.connection.creation.rate", "int", check=_at_least(0)),
    _d("num.network.threads", "int", check=_at_least(1)),
    _d("max.connections.per.ip", "int", check=_at_least(0)),
    _d("max.connections.per.ip.overrides", "string"),
    # producer state and transactions (DynamicProducerStateManagerConfig)
    _d("producer.id.expiration.ms", "int", check=_at_least(1)),
    _d("transaction.partition.verification.enable", "bool"),
    # tiered storage (DynamicRemoteLogConfig)
    _d("remote.log.index.file.cache.total.size.bytes", "long", check=_at_least(1)),
    _d("remote.fetch.max.wait.ms", "int", check=_at_least(1)),
    _d("remote.log.manager.copy.max.bytes.per.second", "long", check=_at_least(1)),
    _d("remote.log.manager.fetch.max.bytes.per.second", "long", check=_at_least(1)),
    _d("remote.list.offsets.request.timeout.ms", "long", check=_at_least(1)),
    # replication throttles (DynamicConfig.Broker)
    _d("leader.replication.throttled.rate", "long", check=_at_least(0)),
    _d("follower.replication.throttled.rate", "long", check=_at_least(0)),
    _d("replica.alter.log.dirs.io.max.bytes.per.second", "long", check=_at_least(0)),
    # security, per broker (DynamicListenerConfig)
    _d("principal.builder.class", "class", BROKER),
    _d("ssl.protocol", "string", BROKER),
    _d("ssl.provider", "string", BROKER),
    _d("ssl.cipher.suites", "list", BROKER),
    _d("ssl.enabled.protocols", "list", BROKER),
    _d("ssl.keymanager.algorithm", "string", BROKER),
    _d("ssl.trustmanager.algorithm", "string", BROKER),
    _d("ssl.endpoint.identification.algorithm", "string", BROKER),
    _d("ssl.secure.random.implementation", "string", BROKER),
    _d("ssl.client.auth", "string", BROKER, _one_of("required", "requested", "none")),
    _d("ssl.engine.factory.class", "class", BROKER),
    _d("sasl.mechanism.inter.broker.protocol", "string", BROKER),
    _d("sasl.jaas.config", "password", BROKER),
    _d("sasl.enabled.mechanisms", "list", BROKER),
    _d("sasl.kerberos.service.name", "string", BROKER),
    _d("sasl.kerberos.kinit.cmd", "string", BROKER),
    _d("sasl.kerberos.ticket.renew.window.factor", "double", BROKER),
    _d("sasl.kerberos.ticket.renew.jitter", "double", BROKER),
    _d("sasl.kerberos.min.time.before.relogin", "long", BROKER),
    _d("sasl.kerberos.principal.to.local.rules", "list", BROKER),
    _d("sasl.login.refresh.window.factor", "double", BROKER, _between(0.5, 1.0)),
    _d("sasl.login.refresh.window.jitter", "double", BROKER, _between(0.0, 0.25)),
    _d("sasl.login.refresh.min.period.seconds", "short", BROKER, _between(0, 900)),
    _d("sasl.login.refresh.buffer.seconds", "short", BROKER, _between(0, 3600)),
    # keystores and truststores: per listener only (Kafka's DynamicSecurityConfigs)
    _d("ssl.keystore.type", "string", LISTENER),
    _d("ssl.keystore.location", "string", LISTENER),
    _d("ssl.keystore.password", "password", LISTENER),
    _d("ssl.key.password", "password", LISTENER),
    _d("ssl.truststore.type", "string", LISTENER),
    _d("ssl.truststore.location", "string", LISTENER),
    _d("ssl.truststore.password", "password", LISTENER),
    _d("ssl.keystore.certificate.chain", "password", LISTENER),
    _d("ssl.keystore.key", "password", LISTENER),
    _d("ssl.truststore.certificates", "password", LISTENER),
    # SASL mechanism settings, per listener and mechanism
    _d("sasl.login.callback.handler.class", "class", LISTENER),
    _d("sasl.login.class", "class", LISTENER),
    _d("sasl.server.callback.handler.class", "class", LISTENER),
    _d("connections.max.reauth.ms", "long", LISTENER),
]

DYNAMIC_CONFIGS: dict[str, DynamicConfig] = {d.name: d for d in _DEFS}
# what a listener prefix may carry: the per-broker and per-listener ones, and the limits
_PER_LISTENER = {n for n, d in DYNAMIC_CONFIGS.items() if d.scope in (BROKER, LISTENER)} | {
    "max.connections",
    "max.connection.creation.rate",
    "num.network.threads",
}


def lookup(name: str) -> tuple[DynamicConfig, str]:
    """The definition that governs ``name`` and the scope it may be set in; raise
    InvalidConfig for a name Bayou does not accept dynamically."""
    if name in READ_ONLY_IN_BAYOU:
        raise InvalidConfig(
            f"Cannot update broker config {name} dynamically: Bayou takes it at start "
            f"({READ_ONLY_IN_BAYOU[name]})"
        )
    found = DYNAMIC_CONFIGS.get(name)
    if found is not None:
        if found.scope == LISTENER:
            raise InvalidConfig(
                f"Broker config {name} can be updated dynamically only per listener, as "
                f"listener.name.<listener>.{name}"
            )
        return found, found.scope
    prefixed = _LISTENER_PREFIX.fullmatch(name)
    if prefixed is not None:
        base = prefixed.group(2)
        mechanism, _, rest = base.partition(".")
        if base not in _PER_LISTENER and rest in _MECHANISM_CONFIGS and mechanism:
            base = rest
        if base in _PER_LISTENER:
            cluster_level = base in (
                "max.connections",
                "max.connection.creation.rate",
                "num.network.threads",
            )
            return DYNAMIC_CONFIGS[base], CLUSTER if cluster_level else BROKER
    raise InvalidConfig(
        f"Unknown broker config {name}: not one Kafka or Bayou can update dynamically"
    )


def parse(name: str, raw: str | int | bool, *, cluster_default: bool) -> Any:
    """Validate ``name=raw`` as a dynamic broker config; return the parsed value."""
    found, scope = lookup(name)
    if cluster_default and scope != CLUSTER:
        raise InvalidConfig(
            f"Cannot update broker config {name} at the cluster-wide default level: it is "
            "set per broker (name the broker id)"
        )
    definition = found.definition
    if definition.name != name:
        definition = ConfigDef(name, definition.type, None, definition.doc, definition.validate)
    return definition.parse(raw)


def describe(name: str) -> DynamicConfig:
    """The definition of a stored config (``lookup`` without the scope checks)."""
    found = DYNAMIC_CONFIGS.get(name)
    if found is not None:
        return found
    return lookup(name)[0]
