"""REST Proxy v2 consumer instances: positions, assignment, long-polled reads, commits.

Theory of operation
-------------------
A consumer instance is state kept by the gateway between HTTP requests: its group, embedded
format, reset policy, either a manual *assignment* or a *subscription*, and a *position* (the
next offset to return) per partition it reads.  ``GET .../records`` reads from each assigned
partition at its position (``reading.read_records``), and when nothing is there parks on the
broker's ``waiters.wait_any`` until an append lands or ``timeout`` passes.

Where a position comes from, first match wins: a seek (``positions``, ``positions/beginning``,
``positions/end``); the records already returned; the group's committed offset
(``OffsetStore``); ``auto.offset.reset`` (earliest or latest).  A position that fell out of
the log (retention) is reset the same way.  Commits go to the ``OffsetStore``: an explicit
offset means "this record is processed" and commits offset + 1, as REST Proxy does; an empty
body commits the current positions; ``auto.commit.enable`` commits the positions of what was
returned before, at the start of the next read (at-least-once).

Subscriptions (``GroupAssignor``): the partitions of the subscribed topics (or the topics
matching ``topic_pattern``) are split range-wise among the instances of the group that
subscribe to them, computed on demand, so creating, deleting or expiring an instance moves
partitions at once; a partition an instance gains starts from the group's committed offset.
This is shared among the HTTP instances of a gateway; joining Kafka consumers of the same
group through the broker's group coordinator is the next step (see docs/design/http.md).

Instances unused for ``http_consumer_instance_timeout_ms`` are removed by ``expire``.
"""

from __future__ import annotations

import asyncio
import re
import time
from dataclasses import dataclass, field
from typing import Any

from bayou.broker.context import BrokerState
from bayou.errors import KafkaError, OffsetOutOfRange, UnknownTopicOrPartition
from bayou.gateways.http import errors
from bayou.gateways.http.errors import RestError
from bayou.gateways.http.offsets import Committed, OffsetStore, TopicPartition
from bayou.gateways.http.payloads import CreateConsumer, Format, decode_field
from bayou.gateways.http.reading import read_records

DEFAULT_REQUEST_TIMEOUT_MS = 1000


@dataclass
class ConsumerInstance:
    group: str
    name: str
    format: Format
    reset: str  # earliest | latest | none
    auto_commit: bool
    request_timeout_ms: int
    last_used: float = field(default_factory=time.monotonic)
    topics: list[str] | None = None
    pattern: re.Pattern[str] | None = None
    manual: list[TopicPartition] | None = None
    positions: dict[TopicPartition, int] = field(default_factory=dict)
    read_lock: asyncio.Lock = field(default_factory=asyncio.Lock)

    @property
    def subscribed(self) -> bool:
        return self.topics is not None or self.pattern is not None

    def wants(self, topic: str) -> bool:
        if self.topics is not None:
            return topic in self.topics
        return self.pattern is not None and self.pattern.fullmatch(topic) is not None

    def subscription(self) -> list[str]:
        return list(self.topics or [])


class ConsumerRegistry:
    def __init__(self, state: BrokerState, store: OffsetStore, timeout_ms: int) -> None:
        self.state = state
        self.store = store
        self.timeout_ms = timeout_ms
        self._instances: dict[tuple[str, str], ConsumerInstance] = {}
        self._counter = 0

    # ------------------------------------------------------------------ lifecycle

    def create(self, group: str, body: CreateConsumer) -> ConsumerInstance:
        name = body.name
        if name is None:
            self._counter += 1
            name = f"rest-consumer-{self._counter}-{time.time_ns() % 10**9}"
        if (group, name) in self._instances:
            raise RestError(409, errors.CONSUMER_ALREADY_EXISTS,
                            f"Consumer instance with the specified name {name} already exists.")
        reset = {"smallest": "earliest", "largest": "latest"}.get(body.auto_offset_reset,
                                                                   body.auto_offset_reset)
        instance = ConsumerInstance(
            group, name, body.format, reset, body.auto_commit_enable == "true",
            body.consumer_request_timeout_ms or DEFAULT_REQUEST_TIMEOUT_MS,
        )
        self._instances[(group, name)] = instance
        return instance

    def get(self, group: str, name: str) -> ConsumerInstance:
        instance = self._instances.get((group, name))
        if instance is None:
            raise RestError(404, errors.CONSUMER_INSTANCE_NOT_FOUND,
                            f"Consumer instance {name} of group {group} not found.")
        instance.last_used = time.monotonic()
        return instance

    def delete(self, group: str, name: str) -> None:
        self.get(group, name)
        del self._instances[(group, name)]

    def expire(self, now: float | None = None) -> list[ConsumerInstance]:
        """Remove instances idle longer than the timeout; returns them."""
        now = time.monotonic() if now is None else now
        limit = self.timeout_ms / 1000
        gone = [i for i in self._instances.values()
                if now - i.last_used > limit and not i.read_lock.locked()]
        for instance in gone:
            del self._instances[(instance.group, instance.name)]
        return gone

    def __len__(self) -> int:
        return len(self._instances)

    # ------------------------------------------------------------------ assignment

    def subscribe(self, instance: ConsumerInstance, topics: list[str] | None,
                  pattern: str | None) -> None:
        if instance.manual is not None:
            raise _illegal_state()
        if (topics is None) == (pattern is None):
            raise errors.unprocessable("Give exactly one of topics and topic_pattern.")
        if pattern is not None:
            try:
                instance.pattern = re.compile(pattern)
            except re.error as exc:
                raise errors.unprocessable(f"Invalid topic_pattern: {exc}") from None
            instance.topics = None
        else:
            instance.topics = list(dict.fromkeys(topics or []))
            instance.pattern = None

    def unsubscribe(self, instance: ConsumerInstance) -> None:
        instance.topics = instance.pattern = None
        instance.positions.clear()

    def assign(self, instance: ConsumerInstance, partitions: list[TopicPartition]) -> None:
        if instance.subscribed:
            raise _illegal_state()
        instance.manual = list(dict.fromkeys(partitions))
        keep = set(instance.manual)
        instance.positions = {tp: p for tp, p in instance.positions.items() if tp in keep}

    def assignment(self, instance: ConsumerInstance) -> list[TopicPartition]:
        if instance.manual is not None:
            return list(instance.manual)
        if not instance.subscribed:
            return []
        topics = self.state.logs.topics()
        mine: list[TopicPartition] = []
        members = sorted((i for i in self._instances.values()
                          if i.group == instance.group and i.subscribed),
                         key=lambda i: i.name)
        for name in sorted(topics):
            if not instance.wants(name):
                continue
            sharing = [m.name for m in members if m.wants(name)]
            count = topics[name].partitions
            index, n = sharing.index(instance.name), len(sharing)
            per, extra = divmod(count, n)
            start = index * per + min(index, extra)
            mine.extend((name, p) for p in range(start, start + per + (index < extra)))
        return mine

    # ------------------------------------------------------------------ positions

    def seek(self, instance: ConsumerInstance, offsets: dict[TopicPartition, int]) -> None:
        assigned = set(self.assignment(instance))
        for tp in offsets:
            if tp not in assigned:
                raise _not_assigned(tp)
        instance.positions.update(offsets)

    def seek_edge(self, instance: ConsumerInstance, partitions: list[TopicPartition],
                  *, end: bool) -> None:
        assigned = set(self.assignment(instance))
        for tp in partitions:
            if tp not in assigned:
                raise _not_assigned(tp)
        for tp in partitions:
            log = self._log(tp)
            instance.positions[tp] = log.log_end_offset if end else log.log_start_offset

    def _log(self, tp: TopicPartition) -> Any:
        try:
            return self.state.logs.partition(*tp)
        except UnknownTopicOrPartition:
            raise errors.partition_not_found(*tp) from None

    def _reset(self, instance: ConsumerInstance, tp: TopicPartition) -> int:
        log = self._log(tp)
        if instance.reset == "earliest":
            return int(log.log_start_offset)
        if instance.reset == "latest":
            return int(log.log_end_offset)
        raise errors.unprocessable(f"No committed offset for {tp[0]}-{tp[1]} and "
                                   "auto.offset.reset is none.", errors.OFFSET_OUT_OF_RANGE)

    def _positions(self, instance: ConsumerInstance, assigned: list[TopicPartition]) -> None:
        """Fill in a position for every assigned partition and forget the others."""
        keep = set(assigned)
        for tp in [tp for tp in instance.positions if tp not in keep]:
            del instance.positions[tp]
        missing = [tp for tp in assigned if tp not in instance.positions]
        if not missing:
            return
        committed = self.store.committed(instance.group, missing)
        for tp in missing:
            found = committed.get(tp)
            instance.positions[tp] = found[0] if found else self._reset(instance, tp)

    # ------------------------------------------------------------------ reading

    async def records(self, instance: ConsumerInstance, timeout_ms: int | None,
                      max_bytes: int | None, fmt: Format) -> list[dict[str, Any]]:
        wait_s = (instance.request_timeout_ms if timeout_ms is None else timeout_ms) / 1000
        budget = max_bytes if max_bytes is not None else 64 * 1024 * 1024
        async with instance.read_lock:
            if instance.auto_commit:
                await self.commit(instance, None)
            deadline = time.monotonic() + wait_s
            while True:
                assigned = self.assignment(instance)
                self._positions(instance, assigned)
                out = self._read(instance, assigned, budget, fmt)
                remaining = deadline - time.monotonic()
                if out or remaining <= 0 or self.state.stopping:
                    instance.last_used = time.monotonic()
                    return out
                await self.state.waiters.wait_any(assigned, remaining)

    def _read(self, instance: ConsumerInstance, assigned: list[TopicPartition], budget: int,
              fmt: Format) -> list[dict[str, Any]]:
        out: list[dict[str, Any]] = []
        for tp in assigned:
            if budget <= 0:
                break
            log = self._log(tp)
            position = instance.positions[tp]
            try:
                found, next_position = read_records(log, position, budget)
            except OffsetOutOfRange:
                instance.positions[tp] = self._reset(instance, tp)
                continue
            for record in found:
                where = f"{tp[0]}-{tp[1]}@{record.offset}"
                out.append({
                    "topic": tp[0],
                    "key": decode_field(fmt, record.key, where),
                    "value": decode_field(fmt, record.value, where),
                    "partition": tp[1],
                    "offset": record.offset,
                    "timestamp": record.timestamp,
                })
                budget -= len(record.key or b"") + len(record.value or b"") + 16
            instance.positions[tp] = next_position
        return out

    # ------------------------------------------------------------------ offsets

    async def commit(self, instance: ConsumerInstance,
                     offsets: dict[TopicPartition, Committed] | None) -> None:
        if offsets is None:
            offsets = {tp: (p, "") for tp, p in instance.positions.items()}
        try:
            await self.store.commit(instance.group, offsets)
        except KafkaError as exc:
            raise errors.from_kafka(exc) from None

    def committed(self, instance: ConsumerInstance,
                  partitions: list[TopicPartition]) -> dict[TopicPartition, Committed]:
        return self.store.committed(instance.group, partitions)


def _illegal_state() -> RestError:
    return RestError(409, errors.ILLEGAL_STATE, "Illegal state: Subscription to topics, "
                     "partitions and pattern are mutually exclusive.")


def _not_assigned(tp: TopicPartition) -> RestError:
    return RestError(409, errors.ILLEGAL_STATE,
                     f"Illegal state: No current assignment for partition {tp[0]}-{tp[1]}.")
