"""AlterConfigs and IncrementalAlterConfigs, shared: one resource's change, validated whole.

A change to a TOPIC resource replaces (AlterConfigs) or edits (IncrementalAlterConfigs:
SET, DELETE, APPEND and SUBTRACT for list configs) the topic's overrides; a change to a
BROKER resource does the same to the dynamic broker configs — named ``""`` for the
cluster-wide default, or by this node's id: the topic-config defaults under their broker
names (``log.retention.ms`` …, ``bayou.config.BROKER_SYNONYMS``), which apply to every topic,
and Kafka's other dynamic broker configs (``background.threads``, ``sasl.kerberos.*`` …,
``bayou/kafka_broker_configs.py``), which are validated and stored.  Every value is parsed
and validated, and the combined result checked (``min.compaction.lag.ms`` ≤
``max.compaction.lag.ms``), before anything is stored; a bad value fails the whole resource
with INVALID_CONFIG naming the config.  Accepted changes are persisted and apply live to
every partition concerned.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable
from typing import Any

from bayou import kafka_broker_configs
from bayou.config import BROKER_SYNONYMS, TOPIC_CONFIGS, TOPIC_NAME_OF, ConfigDef, policy_parts
from bayou.core import Core
from bayou.errors import ErrorCode, InvalidConfig, KafkaError

TOPIC = 2
BROKER = 4

SET, DELETE, APPEND, SUBTRACT = 0, 1, 2, 3

Change = tuple[str, int, str | None]  # name, operation, value


def _current(values: dict[str, Any], key_of: dict[str, str]) -> dict[str, str]:
    """Parsed values → raw strings under the names the request uses."""
    return {key_of.get(k, k): TOPIC_CONFIGS[k].render(v) for k, v in values.items()}


def _definition(name: str) -> ConfigDef | None:
    """The definition of a config named as a request names it (topic or broker name)."""
    topic_def = TOPIC_CONFIGS.get(TOPIC_NAME_OF.get(name, name))
    if topic_def is not None:
        return topic_def
    option = kafka_broker_configs.DYNAMIC_CONFIGS.get(name)
    return option.definition if option is not None else None


def _apply(
    current: dict[str, str], changes: Iterable[Change], incremental: bool, effective: dict[str, str]
) -> dict[str, str]:
    result = dict(current) if incremental else {}
    seen: set[str] = set()
    for name, op, value in changes:
        if name in seen:
            raise KafkaError(f"Config {name} appears more than once", ErrorCode.INVALID_REQUEST)
        seen.add(name)
        if op == SET:
            if value is None:
                raise InvalidConfig(f"Config {name} needs a value")
            result[name] = value
        elif op == DELETE:
            result.pop(name, None)
        elif op in (APPEND, SUBTRACT):
            definition = _definition(name)
            if definition is None or definition.type != "list":
                raise InvalidConfig(f"Config {name} is not a list: APPEND/SUBTRACT do not apply")
            items = policy_parts(result.get(name, effective.get(name, "")))
            given = policy_parts(value or "")
            if op == APPEND:
                items += [i for i in given if i not in items]
            else:
                items = [i for i in items if i not in given]
            result[name] = ",".join(items)
        else:
            raise KafkaError(f"Unknown config operation {op} for {name}", ErrorCode.INVALID_REQUEST)
    return result


async def alter_topic(
    core: Core,
    name: str,
    changes: Iterable[Change],
    *,
    incremental: bool,
    validate_only: bool,
) -> None:
    meta = core.topics().get(name)
    if meta is None:
        raise KafkaError(f"Topic '{name}' does not exist", ErrorCode.UNKNOWN_TOPIC_OR_PARTITION)
    effective = {
        k: TOPIC_CONFIGS[k].render(v)
        for k, v in core.resolve_config(meta.configs).values.items()
        if k in TOPIC_CONFIGS
    }
    new = _apply(_current(meta.configs, {}), changes, incremental, effective)
    await core.alter_topic_configs(name, new, validate_only=validate_only)


async def alter_broker(
    core: Core,
    node_id: int,
    resource_name: str,
    changes: Iterable[Change],
    *,
    incremental: bool,
    validate_only: bool,
) -> None:
    dynamic = core.dynamic_configs
    if resource_name == "":
        scope, values, options = "default", dynamic.default, dynamic.default_options
    elif resource_name == str(node_id):
        scope, values, options = "broker", dynamic.broker, dynamic.broker_options
    else:
        raise KafkaError(
            f"No broker {resource_name!r} (this is node {node_id})", ErrorCode.INVALID_REQUEST
        )
    effective = {
        BROKER_SYNONYMS[k]: TOPIC_CONFIGS[k].render(v)
        for k, v in core.resolve_config({}).values.items()
        if k in BROKER_SYNONYMS
    }
    current = _current(values, BROKER_SYNONYMS)
    current.update(
        (k, kafka_broker_configs.describe(k).definition.render(v)) for k, v in options.items()
    )
    new = _apply(current, changes, incremental, effective)
    parsed: dict[str, Any] = {}
    parsed_options: dict[str, Any] = {}
    for broker_name, raw in new.items():
        topic_name = TOPIC_NAME_OF.get(broker_name)
        if topic_name is None:
            parsed_options[broker_name] = kafka_broker_configs.parse(
                broker_name, raw, cluster_default=scope == "default"
            )
            continue
        definition = dataclasses.replace(TOPIC_CONFIGS[topic_name], name=broker_name)
        parsed[topic_name] = definition.parse(raw)
    await core.alter_broker_configs(
        scope, parsed, validate_only=validate_only, options=parsed_options
    )


async def alter_resource(
    core: Core,
    node_id: int,
    resource_type: int,
    resource_name: str,
    changes: Iterable[Change],
    *,
    incremental: bool,
    validate_only: bool,
) -> None:
    """Apply one resource's changes; raise KafkaError (INVALID_CONFIG …) on any problem."""
    if resource_type == TOPIC:
        await alter_topic(
            core, resource_name, changes, incremental=incremental, validate_only=validate_only
        )
    elif resource_type == BROKER:
        await alter_broker(
            core,
            node_id,
            resource_name,
            changes,
            incremental=incremental,
            validate_only=validate_only,
        )
    else:
        raise KafkaError(
            f"Resource type {resource_type} is not supported", ErrorCode.INVALID_REQUEST
        )
