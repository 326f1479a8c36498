"""REST Proxy v2 consumer instances: positions, assignment, long-polled reads, commits.

Theory of operation
-------------------
A consumer instance is state kept by the gateway between HTTP requests: its group, embedded
format, reset policy, either a manual *assignment* or a *subscription*, and a *position* (the
next offset to return) per partition it reads.  ``GET .../records`` reads from each assigned
partition at its position (``reading.read_records``), and when nothing is there parks on the
broker's ``waiters.wait_any`` until an append lands or ``timeout`` passes.

Where a position comes from, first match wins: a seek (``positions``, ``positions/beginning``,
``positions/end``); the records already returned; the group's committed offset; then
``auto.offset.reset`` (earliest or latest).  A position that fell out of the log (retention)
is reset the same way.  Commits go to the broker's group coordinator (``groups.GroupClient``):
an explicit offset means "this record is processed" and commits offset + 1, as REST Proxy
does; an empty body commits the current positions; ``auto.commit.enable`` commits the
positions of what was returned before, at the start of the next read (at-least-once).

A subscribed instance is a member of a KIP-848 consumer group (see ``groups.py``): its
partitions are whatever the coordinator assigns it, shared with the group's other HTTP
instances and Kafka consumers; a partition it gains starts from the group's committed offset.

Instances unused for ``http_consumer_instance_timeout_ms`` are removed by ``expire``.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import time
from dataclasses import dataclass, field
from typing import Any

from bayou.errors import OffsetOutOfRange, UnknownTopicOrPartition
from bayou.gateways.http import errors
from bayou.gateways.http.errors import RestError
from bayou.gateways.http.groups import Committed, GroupClient, Membership, TopicPartition
from bayou.gateways.http.payloads import CreateConsumer, Format, decode_field, decode_headers
from bayou.gateways.http.reading import RECORD_OVERHEAD, read_records
from bayou.gateways.legacy_state import LegacyState as BrokerState
from bayou.storage import PartitionLog

DEFAULT_REQUEST_TIMEOUT_MS = 1000
DEFAULT_MAX_BYTES = 64 * 1024 * 1024
READ_HEARTBEAT_SPACING_S = 0.1  # a records read heartbeats unless one was this recent


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
    pattern: str | None = None
    manual: list[TopicPartition] | None = None
    member: Membership | None = None
    positions: dict[TopicPartition, int] = field(default_factory=dict)
    read_lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    member_lock: asyncio.Lock = field(default_factory=asyncio.Lock)

    def subscription(self) -> list[str]:
        return list(self.topics or [])


class ConsumerRegistry:
    def __init__(self, state: BrokerState, groups: GroupClient, timeout_ms: int) -> None:
        self.state = state
        self.groups = groups
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

    async def delete(self, group: str, name: str) -> None:
        instance = self.get(group, name)
        del self._instances[(group, name)]
        await self._leave(instance)

    async def expire(self, now: float | None = None) -> list[ConsumerInstance]:
        """Remove instances idle longer than the timeout (leaving their groups)."""
        now = time.monotonic() if now is None else now
        limit = self.timeout_ms / 1000
        gone = [i for i in self._instances.values()
                if now - i.last_used > limit and not i.read_lock.locked()]
        for instance in gone:
            del self._instances[(instance.group, instance.name)]
            await self._leave(instance)
        return gone

    async def close(self) -> None:
        """The gateway is stopping: every subscribed instance commits (when auto-commit is
        on) and leaves its group, so its partitions move on at once."""
        for instance in list(self._instances.values()):
            with contextlib.suppress(RestError):
                await self._leave(instance)

    async def heartbeat_due(self) -> None:
        """Background heartbeats of subscribed instances (called periodically)."""
        for instance in list(self._instances.values()):
            if instance.member is not None:
                with contextlib.suppress(RestError):
                    await self.sync(instance)

    def __len__(self) -> int:
        return len(self._instances)

    # ------------------------------------------------------------------ assignment

    async def subscribe(self, instance: ConsumerInstance, topics: list[str] | None,
                        pattern: str | None) -> None:
        if instance.manual is not None:
            raise _illegal_state()
        if (topics is None) == (pattern is None):
            raise errors.unprocessable("Give exactly one of topics and topic_pattern.")
        if pattern is not None:
            try:
                re.compile(pattern)
            except re.error as exc:
                raise errors.unprocessable(f"Invalid topic_pattern: {exc}") from None
        await self._leave(instance)
        instance.topics = None if topics is None else list(dict.fromkeys(topics))
        instance.pattern = pattern
        instance.member = Membership()
        await self.sync(instance, force=True)

    async def unsubscribe(self, instance: ConsumerInstance) -> None:
        await self._leave(instance)
        instance.topics = instance.pattern = None

    def assign(self, instance: ConsumerInstance, partitions: list[TopicPartition]) -> None:
        if instance.member is not None:
            raise _illegal_state()
        instance.manual = list(dict.fromkeys(partitions))
        keep = set(instance.manual)
        instance.positions = {tp: p for tp, p in instance.positions.items() if tp in keep}

    def assignment(self, instance: ConsumerInstance) -> list[TopicPartition]:
        if instance.manual is not None:
            return list(instance.manual)
        if instance.member is not None:
            return list(instance.member.assigned)
        return []

    async def sync(self, instance: ConsumerInstance, *, force: bool = False,
                   spacing_s: float | None = None) -> None:
        """Heartbeat when due (or ``force``d) and apply the assignment it brings.

        Giving partitions up is acknowledged by heartbeating again at once, so that the
        member waiting for them gets them without waiting a heartbeat interval.
        """
        member = instance.member
        if member is None:
            return
        async with instance.member_lock:
            for _ in range(3):
                wait = member.interval_s if spacing_s is None else spacing_s
                if not force and time.monotonic() - member.last_heartbeat < wait:
                    return
                new = await self.groups.heartbeat(instance.group, member, instance.topics,
                                                  instance.pattern)
                if new is None or not await self._apply(instance, member, new):
                    return
                force = True

    async def _apply(self, instance: ConsumerInstance, member: Membership,
                     new: list[TopicPartition]) -> bool:
        """Take on ``new``; True when partitions were given up."""
        keep = set(new)
        lost = [tp for tp in member.assigned if tp not in keep]
        if lost and instance.auto_commit and member.epoch > 0:
            done = {tp: (instance.positions[tp], "") for tp in lost if tp in instance.positions}
            with contextlib.suppress(RestError):
                await self.groups.commit(instance.group, done, member)
        for tp in lost:
            instance.positions.pop(tp, None)
        member.assigned = list(new)
        return bool(lost)

    async def _leave(self, instance: ConsumerInstance) -> None:
        member = instance.member
        if member is None:
            return
        async with instance.member_lock:
            if instance.auto_commit and member.epoch > 0:
                with contextlib.suppress(RestError):
                    await self.groups.commit(instance.group, self._current(instance), member,
                                             stopping_ok=True)
            instance.member = None
            instance.positions.clear()
            await self.groups.leave(instance.group, member)

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

    def _log(self, tp: TopicPartition) -> PartitionLog:
        try:
            return self.state.logs.partition(*tp)
        except UnknownTopicOrPartition:
            raise errors.partition_not_found(*tp) from None

    def _reset(self, instance: ConsumerInstance, tp: TopicPartition) -> int:
        log = self._log(tp)
        if instance.reset == "earliest":
            return log.log_start_offset
        if instance.reset == "latest":
            return log.log_end_offset
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
        committed = self.groups.committed(instance.group, missing)
        for tp in missing:
            found = committed.get(tp)
            instance.positions[tp] = found[0] if found else self._reset(instance, tp)

    def _current(self, instance: ConsumerInstance) -> dict[TopicPartition, Committed]:
        return {tp: (p, "") for tp, p in instance.positions.items()}

    # ------------------------------------------------------------------ reading

    async def records(self, instance: ConsumerInstance, timeout_ms: int | None,
                      max_bytes: int | None, fmt: Format) -> list[dict[str, Any]]:
        # As REST Proxy: ``timeout`` can shorten the instance's consumer.request.timeout.ms.
        wait_ms = instance.request_timeout_ms
        if timeout_ms is not None:
            wait_ms = min(wait_ms, timeout_ms)
        wait_s = wait_ms / 1000
        budget = max_bytes if max_bytes is not None else DEFAULT_MAX_BYTES
        async with instance.read_lock:
            await self.sync(instance, spacing_s=READ_HEARTBEAT_SPACING_S)
            if instance.auto_commit:
                await self.commit(instance, None)
            deadline = time.monotonic() + wait_s
            while True:
                assigned = self.assignment(instance)
                self._positions(instance, assigned)
                out = await self._read(instance, assigned, budget, fmt)
                remaining = deadline - time.monotonic()
                if out or remaining <= 0 or self.state.stopping:
                    instance.last_used = time.monotonic()
                    return out
                if instance.member is not None:
                    remaining = min(remaining, instance.member.interval_s)
                await self.state.waiters.wait_any(assigned, remaining)
                await self.sync(instance)

    async def _read(self, instance: ConsumerInstance, assigned: list[TopicPartition],
                    budget: int, fmt: Format) -> list[dict[str, Any]]:
        out: list[dict[str, Any]] = []
        for tp in assigned:
            if budget <= 0:
                break
            log = self._log(tp)
            position = instance.positions[tp]
            try:
                found, next_position = await read_records(self.state, log, position, budget)
            except OffsetOutOfRange:
                instance.positions[tp] = self._reset(instance, tp)
                continue
            for record in found:
                where = f"{tp[0]}-{tp[1]}@{record.offset}"
                item = {
                    "topic": tp[0],
                    "key": decode_field(fmt, record.key, where),
                    "value": decode_field(fmt, record.value, where),
                    "partition": tp[1],
                    "offset": record.offset,
                    "timestamp": record.timestamp,
                }
                if record.headers:
                    item["headers"] = decode_headers(record.headers)
                out.append(item)
                budget -= len(record.key or b"") + len(record.value or b"") + RECORD_OVERHEAD
            instance.positions[tp] = next_position
        return out

    # ------------------------------------------------------------------ offsets

    async def commit(self, instance: ConsumerInstance,
                     offsets: dict[TopicPartition, Committed] | None) -> None:
        """Commit ``offsets`` (None: the current positions) for the instance's group."""
        if offsets is None:
            offsets = self._current(instance)
        member = instance.member
        if member is not None and member.epoch == 0:
            await self.sync(instance, force=True)
        await self.groups.commit(instance.group, offsets, instance.member)

    def committed(self, instance: ConsumerInstance,
                  partitions: list[TopicPartition]) -> dict[TopicPartition, Committed]:
        return self.groups.committed(instance.group, partitions)


def _illegal_state() -> RestError:
    return RestError(409, errors.ILLEGAL_STATE, "Illegal state: Subscription to topics, "
                     "partitions and pattern are mutually exclusive.")


def _not_assigned(tp: TopicPartition) -> RestError:
    return RestError(409, errors.ILLEGAL_STATE,
                     f"Illegal state: No current assignment for partition {tp[0]}-{tp[1]}.")
