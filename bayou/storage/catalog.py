"""The topic catalog an engine keeps in memory, and the checks a topic change passes first.

The memory and PostgreSQL engines (and the ``s3://`` engine, a PostgreSQL one) and the
local engine's ``LogManager`` answer the synchronous half of ``LogEngine``'s topic interface
the same way: from maps replaced whole on every change (``_topics``, ``_by_id``,
``_internal``: a reader holding one keeps a consistent snapshot, even while another thread
changes topics), with configs resolved over the static defaults and the dynamic broker
configs.  ``TopicCatalog`` is that half, and the validation every change runs before the
engine stores anything (``_new_topic``, ``_altered_topic``, ``_grown_topic``); storing it
(a dict assignment, a PostgreSQL transaction, files renamed into place) stays the engine's
own.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from dataclasses import replace
from typing import Any

from bayou.config import TopicConfig, check_topic_config, parse_topic_configs
from bayou.errors import UnknownTopicOrPartition
from bayou.storage.broker_configs import DynamicBrokerConfigs
from bayou.storage.metadata import TopicMeta, check_new_topic
from bayou.storage.retention import check_new_partition_count


class TopicCatalog:
    """Base of an engine that keeps its topic catalog in memory (see the module docstring)."""

    _static: dict[str, Any]
    _dynamic: DynamicBrokerConfigs
    _topics: dict[str, TopicMeta]
    _by_id: dict[uuid.UUID, TopicMeta]
    _internal: dict[str, TopicMeta]

    def _init_catalog(self, topic_defaults: Mapping[str, Any] | None) -> None:
        self._static = parse_topic_configs(dict(topic_defaults or {}))
        self._dynamic = DynamicBrokerConfigs()
        self._topics = {}
        self._by_id = {}
        self._internal = {}

    @property
    def defaults(self) -> Mapping[str, Any]:
        return self._dynamic.defaults(self._static)

    @property
    def static_defaults(self) -> Mapping[str, Any]:
        return self._static

    @property
    def dynamic(self) -> DynamicBrokerConfigs:
        return self._dynamic

    def topics(self) -> Mapping[str, TopicMeta]:
        return self._topics

    def internal_topics(self) -> Mapping[str, TopicMeta]:
        return self._internal

    def topic_by_id(self, topic_id: uuid.UUID) -> TopicMeta | None:
        found = self._by_id.get(topic_id)
        if found is None:
            for meta in self._internal.values():
                if meta.topic_id == topic_id:
                    return meta
        return found

    def topic_config(self, name: str) -> TopicConfig:
        return self.resolve_config(self._known(name).configs)

    def resolve_config(self, overrides: Mapping[str, Any]) -> TopicConfig:
        return TopicConfig.resolve(self.defaults, overrides)

    # -- the checks before a change -------------------------------------------------------

    def _known(self, name: str) -> TopicMeta:
        meta = self._topics.get(name)
        if meta is None:
            raise UnknownTopicOrPartition(f"unknown topic {name!r}")
        return meta

    def _new_topic(
        self, name: str, partitions: int, configs: Mapping[str, str]
    ) -> tuple[TopicMeta, TopicConfig]:
        """A new topic's metadata and effective config, checked (name, count, configs)."""
        check_new_topic(name, partitions, self._topics, self._internal)
        meta = TopicMeta(name, uuid.uuid4(), partitions, parse_topic_configs(configs))
        config = self.resolve_config(meta.configs)
        check_topic_config(config.values)
        return meta, config

    def _altered_topic(
        self, name: str, configs: Mapping[str, str]
    ) -> tuple[TopicMeta, TopicConfig]:
        """The topic with ``configs`` as its overrides, and its effective config, checked."""
        new = replace(self._known(name), configs=parse_topic_configs(configs))
        config = self.resolve_config(new.configs)
        check_topic_config(config.values)
        return new, config

    def _grown_topic(self, name: str, total: int) -> TopicMeta:
        """The topic with ``total`` partitions, checked (more than it has, within bounds)."""
        meta = self._known(name)
        check_new_partition_count(meta, total)
        return replace(meta, partitions=total)
