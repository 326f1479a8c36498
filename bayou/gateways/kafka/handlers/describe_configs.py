"""DescribeConfigs (key 32), v0-v4: effective topic and broker configs, with their sources.

Topic resources (type 2) list every topic config Bayou knows (``bayou.config.TOPIC_CONFIGS``)
with the effective value and where it came from, most specific first: the topic's own
setting (DYNAMIC_TOPIC_CONFIG 1), a dynamic broker config set for this node
(DYNAMIC_BROKER_CONFIG 2) or for the cluster (DYNAMIC_DEFAULT_BROKER_CONFIG 3) through
AlterConfigs/IncrementalAlterConfigs, the broker's static default from its config
file/flags/environment (STATIC_BROKER_CONFIG 4), or the built-in default (DEFAULT_CONFIG 5).
Broker-level values carry the broker synonym names (``log.retention.ms`` for
``retention.ms``), as Kafka's do.  v0 reports ``is_default`` instead of a source.  Synonyms
(v1+) list that chain; config types and documentation come with v3+.

Broker resources (type 4): named by node id, the broker's own options (read-only), every
topic-config default under its broker name (dynamically alterable), and Kafka's other
dynamic broker configs that are set (``bayou/kafka_broker_configs.py``), with source
DYNAMIC_BROKER_CONFIG or DYNAMIC_DEFAULT_BROKER_CONFIG; named ``""``, only the cluster-wide
dynamic defaults that are set.  Password-typed configs are sensitive: no value is shown.
Group resources (type 32): a share group's ``share.*`` configs, each with the group's own
value (GROUP_CONFIG 8) or the broker default (DEFAULT_CONFIG 5), as Kafka answers for group
configs — for any group name, existing or not.
``configuration_keys`` filters; unknown keys are simply absent.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from bayou import kafka_broker_configs
from bayou.config import BROKER_SYNONYMS, TOPIC_CONFIGS
from bayou.core import Core
from bayou.core.shares.model import GROUP_CONFIGS
from bayou.errors import ErrorCode, KafkaError
from bayou.gateways.kafka.context import RequestContext
from bayou.gateways.kafka.handlers.registry import handles
from bayou.protocol.kafka import messages as m

TOPIC = 2
BROKER = 4

DYNAMIC_TOPIC_CONFIG = 1
DYNAMIC_BROKER_CONFIG = 2
DYNAMIC_DEFAULT_BROKER_CONFIG = 3
STATIC_BROKER_CONFIG = 4
DEFAULT_CONFIG = 5

_CONFIG_TYPES = {
    "bool": 1,
    "string": 2,
    "int": 3,
    "short": 4,
    "long": 5,
    "double": 6,
    "list": 7,
    "class": 8,
    "password": 9,
}


@dataclass(frozen=True)
class ConfigEntry:
    name: str
    value: str | None
    config_source: int
    config_type: int
    documentation: str | None
    synonyms: Sequence[tuple[str, str | None, int]]
    read_only: bool = False
    sensitive: bool = False


def _default_chain(name: str, core: Core) -> list[tuple[str, str, int]]:
    """The broker-level synonyms of topic config ``name``, most specific first."""
    definition = TOPIC_CONFIGS[name]
    broker_name = BROKER_SYNONYMS.get(name, name)
    chain: list[tuple[str, str, int]] = []
    for source, values in (
        (DYNAMIC_BROKER_CONFIG, core.dynamic_configs.broker),
        (DYNAMIC_DEFAULT_BROKER_CONFIG, core.dynamic_configs.default),
        (STATIC_BROKER_CONFIG, core.static_config_defaults),
    ):
        if name in values:
            chain.append((broker_name, definition.render(values[name]), source))
    chain.append((broker_name, definition.render(definition.default), DEFAULT_CONFIG))
    return chain


def topic_config_entries(overrides: Mapping[str, Any], core: Core) -> list[ConfigEntry]:
    """Every topic config with its effective value, source and synonym chain."""
    effective = core.resolve_config(overrides)
    entries = []
    for name, definition in TOPIC_CONFIGS.items():
        synonyms: list[tuple[str, str, int]] = []
        if name in overrides:
            synonyms.append((name, definition.render(overrides[name]), DYNAMIC_TOPIC_CONFIG))
        synonyms += _default_chain(name, core)
        entries.append(
            ConfigEntry(
                name=name,
                value=definition.render(effective[name]),
                config_source=synonyms[0][2],
                config_type=_CONFIG_TYPES.get(definition.type, 0),
                documentation=definition.doc,
                synonyms=synonyms,
            )
        )
    return entries


def dynamic_default_entries(core: Core, cluster_default: bool) -> list[ConfigEntry]:
    """Topic-config defaults under their broker names: all of them for this node, or only
    the cluster-wide dynamic ones that are set (resource name "")."""
    entries = []
    for name, definition in TOPIC_CONFIGS.items():
        chain = _default_chain(name, core)
        if cluster_default:
            chain = [c for c in chain if c[2] == DYNAMIC_DEFAULT_BROKER_CONFIG]
            if not chain:
                continue
        entries.append(
            ConfigEntry(
                name=chain[0][0],
                value=chain[0][1],
                config_source=chain[0][2],
                config_type=_CONFIG_TYPES.get(definition.type, 0),
                documentation=definition.doc,
                synonyms=chain,
            )
        )
    return entries


def dynamic_option_entries(core: Core, cluster_default: bool) -> list[ConfigEntry]:
    """Kafka's other dynamic broker configs that are set: for this node (its own value, else
    the cluster-wide default) or only the cluster-wide ones (resource name "")."""
    levels = [(DYNAMIC_DEFAULT_BROKER_CONFIG, core.dynamic_configs.default_options)]
    if not cluster_default:
        levels.insert(0, (DYNAMIC_BROKER_CONFIG, core.dynamic_configs.broker_options))
    entries = []
    for name in sorted({n for _, values in levels for n in values}):
        option = kafka_broker_configs.describe(name)
        definition = option.definition
        chain: list[tuple[str, str | None, int]] = [
            (name, None if option.sensitive else definition.render(values[name]), source)
            for source, values in levels
            if name in values
        ]
        entries.append(
            ConfigEntry(
                name=name,
                value=chain[0][1],
                config_source=chain[0][2],
                config_type=_CONFIG_TYPES.get(definition.type, 0),
                documentation=definition.doc,
                synonyms=chain,
                sensitive=option.sensitive,
            )
        )
    return entries


def broker_config_entries(static: Sequence[tuple[str, str, str]]) -> list[ConfigEntry]:
    """The broker's own options (name, value, type), as the composition root lists them."""
    return [
        ConfigEntry(
            name=name,
            value=value,
            config_source=STATIC_BROKER_CONFIG,
            config_type=_CONFIG_TYPES[kind],
            documentation=None,
            synonyms=[],
            read_only=True,
        )
        for name, value, kind in static
    ]


def _wire(
    ctx: RequestContext, entry: ConfigEntry, synonyms: bool, docs: bool
) -> m.DescribeConfigsResponseDescribeConfigsResourceResult:
    return m.DescribeConfigsResponseDescribeConfigsResourceResult(
        name=entry.name,
        value=entry.value,
        read_only=entry.read_only,
        is_default=entry.config_source == DEFAULT_CONFIG,
        config_source=entry.config_source,
        is_sensitive=entry.sensitive,
        synonyms=[
            m.DescribeConfigsResponseDescribeConfigsSynonym(name=n, value=v, source=s)
            for n, v, s in entry.synonyms
        ]
        if synonyms
        else [],
        config_type=entry.config_type,
        documentation=entry.documentation if docs else None,
    )


GROUP = 32
GROUP_CONFIG = 8
STRING_TYPE, INT_TYPE = 2, 3


def _group_entries(ctx: RequestContext, group_id: str) -> list[ConfigEntry]:
    shares = ctx.core.shares
    if shares is None:
        raise KafkaError(
            "The share coordinator is not running", ErrorCode.COORDINATOR_NOT_AVAILABLE
        )
    own = shares.coordinator.configs.get(group_id, {})
    effective = shares.coordinator.config(group_id)
    entries = []
    for name in GROUP_CONFIGS:
        attr = name.removeprefix("share.").replace(".", "_")  # GroupConfig's field
        value = str(getattr(effective, attr))
        entries.append(
            ConfigEntry(
                name,
                value,
                GROUP_CONFIG if name in own else DEFAULT_CONFIG,
                STRING_TYPE if isinstance(getattr(effective, attr), str) else INT_TYPE,
                None,
                [],
            )
        )
    return entries


@handles(32, 0, 4)
async def handle_describe_configs(
    ctx: RequestContext, request: m.DescribeConfigsRequest
) -> m.DescribeConfigsResponse:
    core = ctx.core
    synonyms = ctx.version >= 1 and request.include_synonyms
    docs = ctx.version >= 3 and request.include_documentation
    results: list[m.DescribeConfigsResponseDescribeConfigsResult] = []
    for resource in request.resources:
        try:
            if resource.resource_type == TOPIC:
                meta = core.topics().get(resource.resource_name)
                if meta is None:
                    raise KafkaError(
                        f"Topic '{resource.resource_name}' does not exist",
                        ErrorCode.UNKNOWN_TOPIC_OR_PARTITION,
                    )
                entries = topic_config_entries(meta.configs, core)
            elif resource.resource_type == BROKER:
                if resource.resource_name not in ("", str(core.node_id)):
                    raise KafkaError(
                        f"No broker {resource.resource_name!r}", ErrorCode.INVALID_REQUEST
                    )
                cluster = resource.resource_name == ""
                entries = [] if cluster else broker_config_entries(ctx.door.settings.static_configs)
                entries += dynamic_default_entries(core, cluster)
                entries += dynamic_option_entries(core, cluster)
            elif resource.resource_type == GROUP:
                entries = _group_entries(ctx, resource.resource_name)
            else:
                raise KafkaError(
                    f"Resource type {resource.resource_type} is not supported",
                    ErrorCode.INVALID_REQUEST,
                )
        except KafkaError as exc:
            results.append(
                m.DescribeConfigsResponseDescribeConfigsResult(
                    error_code=exc.code,
                    error_message=exc.message,
                    resource_type=resource.resource_type,
                    resource_name=resource.resource_name,
                )
            )
            continue
        keys = resource.configuration_keys
        if keys is not None:
            entries = [e for e in entries if e.name in keys]
        results.append(
            m.DescribeConfigsResponseDescribeConfigsResult(
                error_code=ErrorCode.NONE,
                error_message=None,
                resource_type=resource.resource_type,
                resource_name=resource.resource_name,
                configs=[_wire(ctx, e, synonyms, docs) for e in entries],
            )
        )
    return m.DescribeConfigsResponse(results=results)
