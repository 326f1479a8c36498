"""What a handler sees: the broker's shared state and the request being served."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from bayou.broker.request_budget import RequestBudget
from bayou.config import LONG_MAX, BrokerConfig
from bayou.errors import InvalidTopic, UnknownTopicOrPartition
from bayou.storage.file_records import FileRecords
from bayou.storage.flusher import GroupFlusher
from bayou.storage.maintenance import LogMaintenance, MaintenanceSettings
from bayou.storage.segment import PageCacheMiss
from bayou.storage.waiters import DataWaiters

if TYPE_CHECKING:
    from bayou.broker.groups import GroupDriver
    from bayou.protocol.kafka import RequestHeader
    from bayou.storage import AppendResult, LogManager, PartitionLog, TopicMeta

log = logging.getLogger(__name__)


INLINE_RECORDS = 16 * 1024  # smaller fetched sets are copied into the response frame


def now_ms() -> int:
    return time.time_ns() // 1_000_000


class BrokerState:
    """Everything the Kafka handlers share: config, storage, wake-ups, fsync batching."""

    def __init__(self, config: BrokerConfig, logs: LogManager) -> None:
        self.config = config
        self.logs = logs
        self.waiters = DataWaiters()
        self.flusher = GroupFlusher()
        self.node_id = config.node_id
        self.advertised_host = config.advertised
        self.advertised_port = config.kafka_port
        self.clock_ms = now_ms
        self.stopping = False
        self.dirty: set[PartitionLog] = set()
        self.groups: GroupDriver | None = None  # the group coordinator, set by Broker.start
        self.maintenance = LogMaintenance(  # retention and the log cleaner
            logs,
            MaintenanceSettings(
                config.log_retention_check_interval_ms,
                config.log_cleaner_dedupe_buffer_size,
                config.log_cleaner_enable,
            ),
            now_ms,
        )
        # request bytes in flight, shared by every door (Broker.start runs its stall sweep)
        self.request_budget = RequestBudget(
            config.queued_max_request_bytes, config.request_stall_timeout_ms / 1000
        )
        self._background: set[asyncio.Future[Any]] = set()

    # -- the broker-core calls every door (Kafka, HTTP, MQTT, AMQP) writes and reads through --

    def append_now(
        self, topic: str, partition: int, records: bytes | bytearray | memoryview
    ) -> tuple[AppendResult, PartitionLog | None]:
        """Append record batches to a partition (auto-creating the topic when allowed).

        Returns the result and, when the topic's flush policy asks for an fsync before the
        write is acknowledged, the partition to pass to ``make_durable``.  Raises KafkaError
        (INVALID_TOPIC_EXCEPTION for an internal topic, as Kafka answers).
        """
        if topic in self.logs.internal_topics():
            raise InvalidTopic(f"Cannot append to internal topic {topic}")
        self.topic_or_autocreate(topic)
        log_ = self.logs.partition(topic, partition)
        result = log_.append(records)
        self.waiters.notify(topic, partition)
        if log_.config.flush_ms < LONG_MAX:
            self.dirty.add(log_)  # the flush.ms timer watches it
        return result, (log_ if log_.needs_flush(self.clock_ms()) else None)

    async def read(
        self, log_: PartitionLog, offset: int, max_bytes: int
    ) -> bytes | bytearray | memoryview:
        """Whole batches from ``offset`` (see ``PartitionLog.read``) without blocking the
        loop: from the page cache here, or — when the data is cold — in a worker thread."""
        try:
            return log_.read(offset, max_bytes, nowait=True)
        except PageCacheMiss:
            return await asyncio.to_thread(log_.read, offset, max_bytes)

    async def read_records(
        self, log_: PartitionLog, offset: int, max_bytes: int, *, min_one: bool
    ) -> bytes | FileRecords:
        """Whole batches from ``offset`` for a Fetch response, left in the log files
        (``PartitionLog.read_slices``) and sent as the connection's socket drains; a set
        smaller than ``INLINE_RECORDS`` that the page cache holds is read now instead (a
        copy into the frame is cheaper than a piece of its own).  The caller closes a
        ``FileRecords`` it does not send."""
        try:
            records = log_.read_slices(offset, max_bytes, min_one=min_one, nowait=True)
        except PageCacheMiss:
            records = await asyncio.to_thread(
                log_.read_slices, offset, max_bytes, min_one=min_one
            )
        if len(records) < INLINE_RECORDS:
            try:
                data = records.read_all(nowait=True)
            except PageCacheMiss:
                return records
            records.close()
            return data
        return records

    async def make_durable(self, logs: Iterable[PartitionLog]) -> None:
        """Group-committed fsync of the given partitions."""
        unique = set(logs)
        if unique:
            await asyncio.gather(*(self.flusher.flush(log_) for log_ in unique))

    async def append(
        self, topic: str, partition: int, records: bytes | bytearray | memoryview
    ) -> AppendResult:
        """Append and wait until the write is as durable as the topic's policy asks."""
        result, to_flush = self.append_now(topic, partition, records)
        if to_flush is not None:
            await self.make_durable([to_flush])
        return result

    def background(self, awaitable: Awaitable[Any]) -> None:
        """Run ``awaitable`` without waiting for it, keeping a reference until it ends."""
        future = asyncio.ensure_future(awaitable)
        self._background.add(future)
        future.add_done_callback(self._background.discard)

    @property
    def cluster_id(self) -> str:
        return self.config.cluster_id or self.logs.cluster_id

    def topic_or_autocreate(self, name: str, *, allow_create: bool = True) -> TopicMeta:
        """A user topic's metadata, creating it when auto-creation is on; raises Kafka errors
        (an internal topic is no user topic: INVALID_TOPIC_EXCEPTION)."""
        topic = self.logs.topics().get(name)
        if topic is not None:
            return topic
        if name in self.logs.internal_topics():
            raise InvalidTopic(f"Topic '{name}' is internal to the broker")
        if not (allow_create and self.config.auto_create_topics_enable):
            raise UnknownTopicOrPartition(f"Topic '{name}' does not exist")
        topic = self.logs.create_topic(name, self.config.num_partitions, {})
        log.info("auto-created topic %s with %d partition(s)", name, topic.partitions)
        return topic


@dataclass
class RequestContext:
    """One request: the shared broker state, its header, and the connection's peer."""

    broker: BrokerState
    header: RequestHeader
    peer: str

    @property
    def version(self) -> int:
        return int(self.header.api_version)
