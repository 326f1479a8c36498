"""The data types of the engine interface that a door handles, as the core hands them out.

A door imports ``bayou.core`` and nothing below it (``docs/design/architecture.md``); the
values the core passes through from the engine — record bytes, read results, partition
handles, state logs, topic metadata, broker addresses — keep their engine-interface types,
named here so a door never imports ``bayou.storage``.  Only types (and ``latest``, the one
helper over a ``StateLog``): what a door *does* with the broker is a ``Core`` method.
"""

from bayou.storage.broker_configs import DynamicBrokerConfigs
from bayou.storage.cluster import BrokerAddress
from bayou.storage.engine import (
    AppendResult,
    Buffer,
    PageCacheMiss,
    Partition,
    RecordSet,
    StateEntry,
    StateLog,
    latest,
)
from bayou.storage.metadata import TopicMeta

__all__ = [
    "AppendResult",
    "BrokerAddress",
    "Buffer",
    "DynamicBrokerConfigs",
    "PageCacheMiss",
    "Partition",
    "RecordSet",
    "StateEntry",
    "StateLog",
    "TopicMeta",
    "latest",
]
