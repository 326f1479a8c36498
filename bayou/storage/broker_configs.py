"""Dynamic broker configs: topic-config defaults and other broker configs changed at runtime,
persisted.

Kafka keeps broker configs altered through the admin API (AlterConfigs on a BROKER resource)
in its metadata log; Bayou keeps them in ``DATA/broker_configs.json``::

    {"default": {"retention.ms": 3600000}, "broker": {},
     "options": {"default": {"log.cleaner.threads": 2}, "broker": {"background.threads": 20}}}

``default`` holds cluster-wide dynamic defaults (resource name ``""``, source
DYNAMIC_DEFAULT_BROKER_CONFIG), ``broker`` the ones set for this node by id (source
DYNAMIC_BROKER_CONFIG).  Keys are topic config names (the admin API uses the broker
synonyms, ``log.retention.ms`` …, mapped by ``bayou.config.BROKER_SYNONYMS``); values are
parsed and are re-validated on load.  A topic's effective config is, most specific first:
its own override, the dynamic per-broker value, the dynamic default, the static
``--topic-default`` from the broker's configuration, the built-in default.

``options`` holds Kafka's other dynamic broker configs by their Kafka names, at the same two
levels (``bayou/kafka_broker_configs.py``: validated by type, stored, described; most have
nothing to tune in Bayou).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from bayou import kafka_broker_configs
from bayou.config import TopicConfig, check_topic_config, parse_topic_configs
from bayou.storage.files import read_json, write_json

BROKER_CONFIGS_FILE = "broker_configs.json"


@dataclass
class DynamicBrokerConfigs:
    default: dict[str, Any] = field(default_factory=dict)
    broker: dict[str, Any] = field(default_factory=dict)
    default_options: dict[str, Any] = field(default_factory=dict)
    broker_options: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def load(cls, data_dir: Path) -> DynamicBrokerConfigs:
        path = data_dir / BROKER_CONFIGS_FILE
        if not path.exists():
            return cls()
        return cls.from_doc(read_json(path))

    @classmethod
    def from_doc(cls, doc: Mapping[str, Any]) -> DynamicBrokerConfigs:
        """From the document ``to_doc`` gives (values parsed and re-validated)."""
        options = doc.get("options", {})
        return cls(
            parse_topic_configs(doc.get("default", {})),
            parse_topic_configs(doc.get("broker", {})),
            _parse_options(options.get("default", {}), cluster_default=True),
            _parse_options(options.get("broker", {}), cluster_default=False),
        )

    def defaults(self, static: Mapping[str, Any]) -> dict[str, Any]:
        """Topic-config defaults in force: static, then the dynamic default, then this
        broker's."""
        return {**static, **self.default, **self.broker}

    def altered(
        self,
        scope: str,
        configs: Mapping[str, Any],
        options: Mapping[str, Any] | None,
        static: Mapping[str, Any],
        topics: Iterable[Mapping[str, Any]],
    ) -> DynamicBrokerConfigs:
        """A copy with ``scope``'s topic-config defaults replaced by ``configs`` (and its
        other dynamic configs by ``options`` when given), checked against every topic's own
        overrides (``topics``); raises InvalidConfig."""
        changes: dict[str, Any] = {scope: parse_topic_configs(configs)}
        if options is not None:
            changes[f"{scope}_options"] = dict(options)
        dynamic = replace(self, **changes)
        merged = dynamic.defaults(static)
        for overrides in topics:
            check_topic_config(TopicConfig.resolve(merged, overrides).values)
        check_topic_config(TopicConfig.resolve(merged).values)
        return dynamic

    def to_doc(self) -> dict[str, Any]:
        """The JSON document of the module docstring."""
        return {
            "default": self.default,
            "broker": self.broker,
            "options": {"default": self.default_options, "broker": self.broker_options},
        }

    def save(self, data_dir: Path) -> None:
        write_json(data_dir / BROKER_CONFIGS_FILE, self.to_doc())


def _parse_options(raw: dict[str, Any], *, cluster_default: bool) -> dict[str, Any]:
    return {
        name: kafka_broker_configs.parse(name, value, cluster_default=cluster_default)
        for name, value in raw.items()
    }
