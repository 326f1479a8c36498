"""REST Proxy v2 consumer instances: cursors, assignment, long-polled reads, commits.

Theory of operation
-------------------
A consumer instance is state the door keeps between HTTP requests: its group, embedded
format, reset policy (``auto.offset.reset``), either a manual *assignment* or a
*subscription*, and a core ``Cursor`` per partition it reads (the cursor's position is the
next offset to return).  ``GET .../records`` reads each assigned partition's cursor, and when
nothing is there waits on ``Core.wait_any`` for all of them until an append lands or
``timeout`` passes.

Where a cursor starts, first match wins: a seek (``positions``, ``positions/beginning``,
``positions/end``); the records already returned; the group's committed offset; then
``auto.offset.reset`` (earliest or latest; ``none`` answers 422).  A position that fell out of
the log (retention) is reset by the cursor's policy — earliest also for a position past the
log end (a seek too far), as Kafka's consumers do.

Commits go to the broker's group coordinator through the core, so HTTP and Kafka consumers of
one group see each other's commits: an explicit offset means "this record is processed" and
commits offset + 1, as REST Proxy does; an empty body commits the current positions;
``auto.commit.enable`` commits the positions of what was returned before, at the start of the
next read (at-least-once).  A manual-assignment instance commits through ``Core.offsets``
(as Kafka's ``assign()`` consumers: generation -1, accepted while the group has no members).

A subscribed instance is a core ``GroupMember`` (a KIP-848 member, ``topics`` or
``topic_pattern`` as its subscription): its partitions are whatever the coordinator assigns
it, shared with the group's other HTTP instances and Kafka consumers.  It heartbeats on every
records read (unless one was sent in the last ``READ_HEARTBEAT_SPACING_S``) and in the
background (``heartbeat_due``, called by the server's maintenance task: at the coordinator's
interval, faster while the group reconciles).  Partitions taken away are revoked through the
member's ``on_revoke``: their positions are committed first when auto-commit is on, then their
cursors dropped, and the member tells the coordinator at once.  A partition gained starts from
the group's committed offset.  Deleting, unsubscribing, expiring an instance and the broker's
shutdown make the member leave (auto-commit first), so partitions move on at once.

Instances unused for ``consumer_instance_timeout_ms`` are removed by ``expire``.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import time
from dataclasses import dataclass, field
from typing import Any

from bayou.core import Committed, Core, Cursor, GroupMember, Reset, StartSpec, TopicPartition
from bayou.core.cursor import RECORD_OVERHEAD
from bayou.core.groups import GroupCoordinatorError
from bayou.errors import ErrorCode, OffsetOutOfRange, UnknownTopicOrPartition
from bayou.gateways.http import errors
from bayou.gateways.http.errors import RestError
from bayou.gateways.http.payloads import CreateConsumer, Format, decode_field, decode_headers
from bayou.protocol.kafka.records import DecodedRecord

DEFAULT_REQUEST_TIMEOUT_MS = 1000
DEFAULT_MAX_BYTES = 64 * 1024 * 1024
READ_HEARTBEAT_SPACING_S = 0.1  # a records read heartbeats unless one was this recent
REBALANCE_HEARTBEAT_S = 0.1  # background heartbeats while the group reconciles
CLIENT_ID = "bayou-http"
CLIENT_HOST = "/http-gateway"
RESETS: dict[str, Reset] = {
    "earliest": "earliest",
    "smallest": "earliest",
    "latest": "latest",
    "largest": "latest",
    "none": "none",
}


@dataclass
class ConsumerInstance:
    group: str
    name: str
    format: Format
    reset: Reset
    auto_commit: bool
    request_timeout_ms: int
    last_used: float = field(default_factory=time.monotonic)
    topics: list[str] | None = None
    pattern: str | None = None
    manual: list[TopicPartition] | None = None
    member: GroupMember | None = None
    cursors: dict[TopicPartition, Cursor] = field(default_factory=dict)
    read_lock: asyncio.Lock = field(default_factory=asyncio.Lock)

    def subscription(self) -> list[str]:
        return list(self.topics or [])

    def positions(self) -> dict[TopicPartition, Committed]:
        return {tp: (cursor.position, "") for tp, cursor in self.cursors.items()}


class ConsumerRegistry:
    def __init__(self, core: Core, timeout_ms: int) -> None:
        self.core = core
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
            raise RestError(
                409,
                errors.CONSUMER_ALREADY_EXISTS,
                f"Consumer instance with the specified name {name} already exists.",
            )
        instance = ConsumerInstance(
            group,
            name,
            body.format,
            RESETS[body.auto_offset_reset],
            body.auto_commit_enable == "true",
            body.consumer_request_timeout_ms or DEFAULT_REQUEST_TIMEOUT_MS,
        )
        self._instances[(group, name)] = instance
        return instance

    def get(self, group: str, name: str) -> ConsumerInstance:
        instance = self._instances.get((group, name))
        if instance is None:
            raise RestError(
                404,
                errors.CONSUMER_INSTANCE_NOT_FOUND,
                f"Consumer instance {name} of group {group} not found.",
            )
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
        gone = [
            i
            for i in self._instances.values()
            if now - i.last_used > limit and not i.read_lock.locked()
        ]
        for instance in gone:
            del self._instances[(instance.group, instance.name)]
            await self._leave(instance)
        return gone

    async def close(self) -> None:
        """The door is stopping: every subscribed instance commits (when auto-commit is
        on) and leaves its group, so its partitions move on at once."""
        for instance in list(self._instances.values()):
            await self._leave(instance)

    async def heartbeat_due(self) -> None:
        """Background heartbeats of subscribed instances (called periodically)."""
        for instance in list(self._instances.values()):
            member = instance.member
            if member is not None:
                with contextlib.suppress(GroupCoordinatorError):
                    await member.poll(spacing_s=_spacing(member))

    def __len__(self) -> int:
        return len(self._instances)

    # ------------------------------------------------------------------ assignment

    async def subscribe(
        self, instance: ConsumerInstance, topics: list[str] | None, pattern: str | None
    ) -> None:
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

        async def on_revoke(lost: frozenset[TopicPartition]) -> None:
            await self._revoked(instance, lost)

        member = self.core.group_member(
            instance.group,
            topics=instance.topics,
            pattern=pattern,
            client_id=CLIENT_ID,
            client_host=CLIENT_HOST,
            on_revoke=on_revoke,
        )
        instance.member = member
        await self._poll(member, force=True)

    async def unsubscribe(self, instance: ConsumerInstance) -> None:
        await self._leave(instance)
        instance.topics = instance.pattern = None

    def assign(self, instance: ConsumerInstance, partitions: list[TopicPartition]) -> None:
        if instance.member is not None:
            raise _illegal_state()
        instance.manual = list(dict.fromkeys(partitions))
        keep = set(instance.manual)
        instance.cursors = {tp: c for tp, c in instance.cursors.items() if tp in keep}

    def assignment(self, instance: ConsumerInstance) -> list[TopicPartition]:
        if instance.manual is not None:
            return list(instance.manual)
        if instance.member is not None:
            return sorted(instance.member.assignment)
        return []

    async def _poll(
        self, member: GroupMember, *, force: bool = False, spacing_s: float | None = None
    ) -> None:
        """Heartbeat when due (or ``force``d) and reconcile; REST errors."""
        self._coordinator_running()
        try:
            await member.poll(force=force, spacing_s=spacing_s)
        except GroupCoordinatorError as exc:
            raise errors.from_coordinator(exc) from None

    async def _revoked(self, instance: ConsumerInstance, lost: frozenset[TopicPartition]) -> None:
        """The member gives ``lost`` up: commit their positions first (auto-commit), then
        forget their cursors."""
        member = instance.member
        if instance.auto_commit and member is not None and member.epoch > 0:
            done = {tp: (c.position, "") for tp, c in instance.cursors.items() if tp in lost}
            if done:
                with contextlib.suppress(GroupCoordinatorError):
                    await member.commit(done)
        for tp in lost:
            instance.cursors.pop(tp, None)

    async def _leave(self, instance: ConsumerInstance) -> None:
        member = instance.member
        if member is None:
            return
        await member.leave()  # revokes everything first: ``_revoked`` commits
        instance.member = None
        instance.cursors.clear()

    def _coordinator_running(self) -> None:
        if self.core.stopping:
            raise errors.from_coordinator(
                GroupCoordinatorError(ErrorCode.COORDINATOR_NOT_AVAILABLE)
            )

    # ------------------------------------------------------------------ positions

    def seek(self, instance: ConsumerInstance, offsets: dict[TopicPartition, int]) -> None:
        self._check_assigned(instance, offsets)
        for (topic, p), offset in offsets.items():
            cursor = instance.cursors.get((topic, p))
            if cursor is None:
                instance.cursors[(topic, p)] = self.core.cursor(
                    topic, p, offset, reset=instance.reset
                )
            else:
                cursor.position = offset

    async def seek_edge(
        self, instance: ConsumerInstance, partitions: list[TopicPartition], *, end: bool
    ) -> None:
        self._check_assigned(instance, partitions)
        start = StartSpec.latest() if end else StartSpec.earliest()
        for topic, p in partitions:
            try:
                cursor = await self.core.cursor_at(topic, p, start, reset=instance.reset)
            except UnknownTopicOrPartition:
                raise errors.partition_not_found(topic, p) from None
            instance.cursors[(topic, p)] = cursor

    def _check_assigned(
        self,
        instance: ConsumerInstance,
        partitions: list[TopicPartition] | dict[TopicPartition, int],
    ) -> None:
        assigned = set(self.assignment(instance))
        for tp in partitions:
            if tp not in assigned:
                raise _not_assigned(tp)

    async def _cursors(self, instance: ConsumerInstance) -> list[Cursor]:
        """A cursor for every assigned partition (the others forgotten), in assignment
        order."""
        assigned = self.assignment(instance)
        keep = set(assigned)
        for tp in [tp for tp in instance.cursors if tp not in keep]:
            del instance.cursors[tp]
        missing = [tp for tp in assigned if tp not in instance.cursors]
        if missing:
            committed = await self._committed(instance.group, missing)
            for topic, p in missing:
                found = committed.get((topic, p))
                cursor = await self._start(instance, topic, p, None if found is None else found[0])
                instance.cursors.setdefault((topic, p), cursor)  # unless a seek came first
        return [c for tp in assigned if (c := instance.cursors.get(tp)) is not None]

    async def _start(
        self, instance: ConsumerInstance, topic: str, p: int, committed: int | None
    ) -> Cursor:
        """A cursor at the committed offset, else where ``auto.offset.reset`` says."""
        if instance.reset == "none" and committed is None:
            raise errors.unprocessable(
                f"No committed offset for {topic}-{p} and auto.offset.reset is none.",
                errors.OFFSET_OUT_OF_RANGE,
            )
        if committed is not None:  # as it is: a read resets it when it is out of the log
            return self.core.cursor(topic, p, committed, reset=instance.reset)
        spec = StartSpec.earliest() if instance.reset == "earliest" else StartSpec.latest()
        try:
            return await self.core.cursor_at(topic, p, spec, reset=instance.reset)
        except UnknownTopicOrPartition:
            raise errors.partition_not_found(topic, p) from None

    # ------------------------------------------------------------------ reading

    async def records(
        self, instance: ConsumerInstance, timeout_ms: int | None, max_bytes: int | None, fmt: Format
    ) -> list[dict[str, Any]]:
        # As REST Proxy: ``timeout`` can shorten the instance's consumer.request.timeout.ms.
        wait_ms = instance.request_timeout_ms
        if timeout_ms is not None:
            wait_ms = min(wait_ms, timeout_ms)
        budget = max_bytes if max_bytes is not None else DEFAULT_MAX_BYTES
        async with instance.read_lock:
            if instance.member is not None:
                await self._poll(instance.member, spacing_s=READ_HEARTBEAT_SPACING_S)
            if instance.auto_commit:
                await self.commit(instance, None)
            deadline = time.monotonic() + wait_ms / 1000
            while True:
                cursors = await self._cursors(instance)
                out = await self._read(instance, cursors, budget, fmt)
                remaining = deadline - time.monotonic()
                if out or remaining <= 0 or self.core.stopping:
                    instance.last_used = time.monotonic()
                    return out
                member = instance.member
                if member is not None:  # a heartbeat may bring partitions
                    remaining = min(remaining, _spacing(member) or member.interval_s)
                if cursors:
                    try:
                        await self.core.wait_any(cursors, remaining)
                    except UnknownTopicOrPartition:
                        continue  # the next read says which
                else:  # nothing assigned: nothing can land before the next heartbeat
                    await asyncio.sleep(remaining)
                if member is not None and instance.member is member and not self.core.stopping:
                    await self._poll(member, spacing_s=_spacing(member))

    async def _read(
        self, instance: ConsumerInstance, cursors: list[Cursor], budget: int, fmt: Format
    ) -> list[dict[str, Any]]:
        """Records from ``cursors`` within ``budget``; on an error nothing moves (a record a
        json instance cannot decode stays where it is, and so does everything read with
        it)."""
        out: list[dict[str, Any]] = []
        before = [(cursor, cursor.position) for cursor in cursors]
        delivered: list[tuple[str, list[DecodedRecord]]] = []
        topic, p = "", 0
        try:
            for cursor in cursors:
                if budget <= 0:
                    break
                topic, p = cursor.key
                records = await cursor.read(budget)
                if records:
                    delivered.append((topic, records))
                for record in records:
                    where = f"{topic}-{p}@{record.offset}"
                    item = {
                        "topic": topic,
                        "key": decode_field(fmt, record.key, where),
                        "value": decode_field(fmt, record.value, where),
                        "partition": p,
                        "offset": record.offset,
                        "timestamp": record.timestamp,
                    }
                    if record.headers:
                        item["headers"] = decode_headers(record.headers)
                    out.append(item)
                    budget -= len(record.key or b"") + len(record.value or b"") + RECORD_OVERHEAD
        except (RestError, UnknownTopicOrPartition, OffsetOutOfRange) as exc:
            for cursor, position in before:
                cursor.position = position
            if isinstance(exc, UnknownTopicOrPartition):
                raise errors.partition_not_found(topic, p) from None
            if isinstance(exc, OffsetOutOfRange):  # auto.offset.reset is none
                raise errors.unprocessable(
                    f"{exc.message}; auto.offset.reset is none.", errors.OFFSET_OUT_OF_RANGE
                ) from None
            raise
        traffic = self.core.metrics.door("http")
        for name, records in delivered:
            traffic.sent_records(name, records)
        return out

    # ------------------------------------------------------------------ offsets

    async def commit(
        self, instance: ConsumerInstance, offsets: dict[TopicPartition, Committed] | None
    ) -> None:
        """Commit ``offsets`` (None: the current positions) for the instance's group: as
        its group member when subscribed, else as an ``assign()`` consumer."""
        if offsets is None:
            offsets = instance.positions()
        topics = self.core.topics()
        for topic, p in offsets:
            meta = topics.get(topic)
            if meta is None or p >= meta.partitions:
                raise errors.partition_not_found(topic, p)
        self._coordinator_running()
        try:
            if instance.member is not None:
                await instance.member.commit(offsets)
            else:
                await self.core.offsets(instance.group).commit(offsets)
        except GroupCoordinatorError as exc:
            raise errors.from_coordinator(exc) from None

    async def committed(
        self, instance: ConsumerInstance, partitions: list[TopicPartition]
    ) -> dict[TopicPartition, Committed]:
        return await self._committed(instance.group, partitions)

    async def _committed(
        self, group: str, partitions: list[TopicPartition]
    ) -> dict[TopicPartition, Committed]:
        self._coordinator_running()
        try:
            return await self.core.offsets(group).fetch_committed(partitions)
        except GroupCoordinatorError as exc:
            raise errors.from_coordinator(exc) from None


def _spacing(member: GroupMember) -> float | None:
    """Heartbeat spacing: quick while the group reconciles, else the coordinator's."""
    return REBALANCE_HEARTBEAT_S if member.reconciling else None


def _illegal_state() -> RestError:
    return RestError(
        409,
        errors.ILLEGAL_STATE,
        "Illegal state: Subscription to topics, partitions and pattern are mutually exclusive.",
    )


def _not_assigned(tp: TopicPartition) -> RestError:
    return RestError(
        409,
        errors.ILLEGAL_STATE,
        f"Illegal state: No current assignment for partition {tp[0]}-{tp[1]}.",
    )
