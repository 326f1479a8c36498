"""Dynamic broker configs: topic-config defaults changed at runtime, persisted.

Kafka keeps broker configs altered through the admin API (AlterConfigs on a BROKER resource)
in its metadata log; Bayou keeps them in ``DATA/broker_configs.json``::

    {"default": {"retention.ms": 3600000}, "broker": {}}

``default`` holds cluster-wide dynamic defaults (resource name ``""``, source
DYNAMIC_DEFAULT_BROKER_CONFIG), ``broker`` the ones set for this node by id (source
DYNAMIC_BROKER_CONFIG).  Keys are topic config names (the admin API uses the broker
synonyms, ``log.retention.ms`` …, mapped by ``bayou.config.BROKER_SYNONYMS``); values are
parsed and are re-validated on load.  A topic's effective config is, most specific first:
its own override, the dynamic per-broker value, the dynamic default, the static
``--topic-default`` from the broker's configuration, the built-in default.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bayou.config import parse_topic_configs
from bayou.storage.files import read_json, write_json

BROKER_CONFIGS_FILE = "broker_configs.json"


@dataclass
class DynamicBrokerConfigs:
    default: dict[str, Any] = field(default_factory=dict)
    broker: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def load(cls, data_dir: Path) -> DynamicBrokerConfigs:
        path = data_dir / BROKER_CONFIGS_FILE
        if not path.exists():
            return cls()
        doc = read_json(path)
        return cls(parse_topic_configs(doc.get("default", {})),
                   parse_topic_configs(doc.get("broker", {})))

    def save(self, data_dir: Path) -> None:
        write_json(data_dir / BROKER_CONFIGS_FILE,
                   {"default": self.default, "broker": self.broker})
