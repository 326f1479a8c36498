"""TEMPORARY scaffolding while the HTTP, MQTT and AMQP doors move onto ``bayou.core``.

``LegacyState`` offers the surface the doors used before the core existed (the old
``BrokerState``: the local ``LogManager``, synchronous appends and reads, flat options) on top
of a ``Core`` running the local engine.  Each door's migration to ``Core``/``Cursor``/
``GroupMember``/``StateStore`` removes its use of this module; the module goes when the last
one does.  Nothing new may use it.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Iterable
from typing import Any

from bayou.broker_config import BrokerConfig
from bayou.core import Core
from bayou.core.groups import GroupDriver
from bayou.errors import InvalidTopic, UnknownTopicOrPartition
from bayou.options import options
from bayou.storage.engine import AppendResult, PageCacheMiss
from bayou.storage.local_engine import LocalEngine
from bayou.storage.log import PartitionLog
from bayou.storage.metadata import TopicMeta

log = logging.getLogger(__name__)


class FlatConfig:
    """``config.http_port`` etc.: the old flat option names over ``BrokerConfig``."""

    def __init__(self, config: BrokerConfig) -> None:
        self._config = config
        self._where = {o.flat: (o.section, o.name) for o in options(BrokerConfig)}

    def __getattr__(self, name: str) -> Any:
        where = self._where.get(name)
        if where is None:
            return getattr(self._config, name)
        section, field = where
        holder = self._config if section is None else getattr(self._config, section)
        return getattr(holder, field)


class LegacyState:
    def __init__(self, core: Core, config: BrokerConfig) -> None:
        engine = core.engine
        if not isinstance(engine, LocalEngine):
            raise TypeError("the HTTP, MQTT and AMQP doors need the local engine for now")
        self.core = core
        self.engine = engine
        self.config = FlatConfig(config)
        self.logs = engine.logs
        self.flusher = engine.flusher
        self.maintenance = engine.maintenance
        self.waiters = engine.waiters
        self.request_budget = core.request_budget
        self.node_id = core.node_id
        self.clock_ms = core.clock_ms

    @property
    def groups(self) -> GroupDriver | None:
        return self.core.groups

    @property
    def stopping(self) -> bool:
        return self.core.stopping

    @property
    def cluster_id(self) -> str:
        return self.core.cluster_id

    def background(self, awaitable: Awaitable[Any]) -> None:
        self.core.background(awaitable)

    def topic_or_autocreate(self, name: str, *, allow_create: bool = True) -> TopicMeta:
        topic = self.logs.topics().get(name)
        if topic is not None:
            return topic
        if name in self.logs.internal_topics():
            raise InvalidTopic(f"Topic '{name}' is internal to the broker")
        if not (allow_create and self.core.settings.auto_create_topics_enable):
            raise UnknownTopicOrPartition(f"Topic '{name}' does not exist")
        topic = self.logs.create_topic(name, self.core.settings.num_partitions, {})
        log.info("auto-created topic %s with %d partition(s)", name, topic.partitions)
        return topic

    def append_now(
        self, topic: str, partition: int, records: bytes | bytearray | memoryview
    ) -> tuple[AppendResult, PartitionLog | None]:
        if topic in self.logs.internal_topics():
            raise InvalidTopic(f"Cannot append to internal topic {topic}")
        self.topic_or_autocreate(topic)
        log_ = self.logs.partition(topic, partition)
        result = self.engine.append_now(log_, records)
        return result, (log_ if log_.needs_flush(self.clock_ms()) else None)

    async def make_durable(self, logs: Iterable[PartitionLog]) -> None:
        unique = set(logs)
        if unique:
            await asyncio.gather(*(self.flusher.flush(log_) for log_ in unique))

    async def append(
        self, topic: str, partition: int, records: bytes | bytearray | memoryview
    ) -> AppendResult:
        result, to_flush = self.append_now(topic, partition, records)
        if to_flush is not None:
            await self.make_durable([to_flush])
        return result

    async def read(
        self, log_: PartitionLog, offset: int, max_bytes: int
    ) -> bytes | bytearray | memoryview:
        try:
            return log_.read(offset, max_bytes, nowait=True)
        except PageCacheMiss:
            return await asyncio.to_thread(log_.read, offset, max_bytes)
