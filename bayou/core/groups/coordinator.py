"""GroupCoordinator: the deterministic core every door (Kafka, MQTT, AMQP) drives.

Theory of operation
-------------------
Modelled on Kafka's group coordinator runtime: every operation is a plain method taking the
current time (``now``, milliseconds — the clock is injected by whoever calls) and returning a
``Result``: the records to write, the response (or None when the request is parked), and
answers for earlier parked requests.  Nothing here does I/O, sleeps or reads a clock; ids
come from an injected ``new_id``.  Timers are data: ``next_deadline()`` says when ``tick(now)``
must run next, and ``tick`` expires sessions, ends join phases, and expires offsets.

Durable state changes through ``replay`` (see ``state.py``): loading is replaying the log.

The classic protocol lives in ``classic.py``, the consumer protocol (KIP-848) in
``consumer.py``; this module adds offsets (also those committed inside transactions,
KIP-447: ``txn_commit_offsets`` keeps them pending, ``complete_txn`` applies the transaction's
outcome) and the group admin operations.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from bayou.core.groups.classic import ClassicOps
from bayou.core.groups.consumer import ConsumerOps
from bayou.core.groups.model import (
    ClassicGroup,
    ClassicState,
    ConsumerGroup,
    GroupCoordinatorError,
    Result,
)
from bayou.core.groups.records import GroupKey, GroupRecord, OffsetKey, OffsetValue, PendingKey
from bayou.core.groups.state import Group
from bayou.errors import ErrorCode

E = ErrorCode
GCE = GroupCoordinatorError


@dataclass(frozen=True)
class OffsetCommit:
    topic: str
    partition: int
    offset: int
    leader_epoch: int = -1
    metadata: str | None = ""


@dataclass(frozen=True)
class FetchedOffset:
    topic: str
    partition: int
    offset: int  # -1: nothing committed
    leader_epoch: int
    metadata: str | None
    error: ErrorCode = E.NONE


@dataclass(frozen=True)
class GroupListing:
    group_id: str
    protocol_type: str
    state: str
    group_type: str


class GroupCoordinator(ClassicOps, ConsumerOps):
    # ------------------------------------------------------------------ loading

    def load(self, records: Iterable[GroupRecord], now: int) -> int:
        """Replay the internal log; returns how many records were applied."""
        count = 0
        for record in records:
            self.replay(record, now)
            count += 1
        return count

    # ------------------------------------------------------------------ offsets

    def _validate_commit(
        self,
        group: Group | None,
        group_id: str,
        generation: int,
        member_id: str,
        instance_id: str | None,
        version: int,
    ) -> None:
        if group is None:
            if self.reserved(group_id):
                raise GCE(E.GROUP_ID_NOT_FOUND)
            if generation < 0:
                return
            raise GCE(E.GROUP_ID_NOT_FOUND if version >= 9 else E.ILLEGAL_GENERATION)
        if isinstance(group, ConsumerGroup):
            if generation < 0 and not member_id:
                if group.members:
                    raise GCE(E.UNKNOWN_MEMBER_ID)
                return
            member = group.members.get(member_id)
            if member is None:
                raise GCE(E.UNKNOWN_MEMBER_ID)
            if generation > member.epoch:
                raise GCE(E.FENCED_MEMBER_EPOCH)
            if generation < member.epoch and generation != member.previous_epoch:
                raise GCE(E.STALE_MEMBER_EPOCH)
            return
        if group.state == ClassicState.DEAD:
            raise GCE(E.COORDINATOR_NOT_AVAILABLE)
        if generation < 0 and group.state == ClassicState.EMPTY:
            return
        if generation >= 0 or member_id or instance_id is not None:
            self._validate_member(group, member_id, instance_id)
            if generation != group.generation:
                raise GCE(E.ILLEGAL_GENERATION)
        elif group.state != ClassicState.EMPTY:
            raise GCE(E.UNKNOWN_MEMBER_ID)
        if group.state == ClassicState.COMPLETING_REBALANCE:
            raise GCE(E.REBALANCE_IN_PROGRESS)

    def commit_offsets(
        self,
        now: int,
        *,
        group_id: str,
        generation: int,
        member_id: str,
        instance_id: str | None,
        offsets: list[OffsetCommit],
        retention_ms: int = -1,
        version: int = 9,
    ) -> Result[list[ErrorCode]]:
        """Commit offsets; one error code per entry of ``offsets``."""
        result: Result[list[ErrorCode]] = Result()
        if not group_id:
            result.response = [E.INVALID_GROUP_ID] * len(offsets)
            return result
        group = self.groups.get(group_id)
        try:
            self._validate_commit(group, group_id, generation, member_id, instance_id, version)
        except GCE as exc:
            result.response = [exc.code] * len(offsets)
            return result
        if group is None:
            # A "simple" group (offsets, no members).  Its snapshot is written, not left to
            # replay to infer from the first offset record: compaction may drop that record
            # (superseded by a later commit or an OffsetDelete tombstone), and the group's
            # existence must not depend on which records of *other* keys survive.
            simple = ClassicGroup(group_id, state_ms=now)
            self.groups[group_id] = simple
            self.emit_group(result, simple, now)
        elif isinstance(group, ConsumerGroup) and generation >= 0:
            member = group.members.get(member_id)
            if member is not None:
                member.deadline_ms = now + self.settings.consumer_session_timeout_ms
        elif isinstance(group, ClassicGroup) and member_id in group.members:
            m = group.members[member_id]
            m.deadline_ms = max(m.deadline_ms, now + m.session_timeout_ms)
        codes: list[ErrorCode] = []
        limit = self.settings.offset_metadata_max_bytes
        for c in offsets:
            if c.metadata is not None and len(c.metadata.encode()) > limit:
                codes.append(E.OFFSET_METADATA_TOO_LARGE)
                continue
            value = OffsetValue(
                c.offset,
                c.leader_epoch,
                c.metadata,
                now,
                now + retention_ms if retention_ms >= 0 else None,
            )
            self.emit(result, GroupRecord(OffsetKey(group_id, c.topic, c.partition), value), now)
            codes.append(E.NONE)
        result.response = codes
        return result

    def txn_commit_offsets(
        self,
        now: int,
        *,
        group_id: str,
        producer_id: int,
        generation: int,
        member_id: str,
        instance_id: str | None,
        offsets: list[OffsetCommit],
    ) -> Result[list[ErrorCode]]:
        """TxnOffsetCommit: offsets that become visible when ``producer_id``'s transaction
        commits (KIP-447: fenced by generation and member id as OffsetCommit is, a stale
        consumer-group epoch answered ILLEGAL_GENERATION as Kafka does)."""
        result: Result[list[ErrorCode]] = Result()
        if not group_id:
            result.response = [E.INVALID_GROUP_ID] * len(offsets)
            return result
        group = self.groups.get(group_id)
        try:
            self._validate_commit(group, group_id, generation, member_id, instance_id, 0)
        except GCE as exc:
            code = E.ILLEGAL_GENERATION if exc.code == E.STALE_MEMBER_EPOCH else exc.code
            result.response = [code] * len(offsets)
            return result
        if group is None:
            simple = ClassicGroup(group_id, state_ms=now)
            self.groups[group_id] = simple
            self.emit_group(result, simple, now)
        codes: list[ErrorCode] = []
        limit = self.settings.offset_metadata_max_bytes
        for c in offsets:
            if c.metadata is not None and len(c.metadata.encode()) > limit:
                codes.append(E.OFFSET_METADATA_TOO_LARGE)
                continue
            value = OffsetValue(c.offset, c.leader_epoch, c.metadata, now)
            key = PendingKey(producer_id, group_id, c.topic, c.partition)
            self.emit(result, GroupRecord(key, value), now)
            codes.append(E.NONE)
        result.response = codes
        return result

    def complete_txn(self, now: int, producer_id: int, commit: bool) -> Result[int]:
        """The transaction of ``producer_id`` ended (its marker on the offsets partition):
        on commit its pending offsets become the committed ones — unless a later commit of
        the same partition superseded them — and in both cases they stop being pending.
        One batch: a crash leaves either all of it or none.  Answers how many offsets
        became visible."""
        result: Result[int] = Result(response=0)
        pending = self.pending.get(producer_id)
        if not pending:
            return result
        entries = sorted(pending.items())
        if commit:
            for (group_id, topic, partition), p in entries:
                if p.superseded:
                    continue
                if group_id not in self.groups:  # deleted meanwhile: a simple group again
                    simple = ClassicGroup(group_id, state_ms=now)
                    self.groups[group_id] = simple
                    self.emit_group(result, simple, now)
                self.emit(result, GroupRecord(OffsetKey(group_id, topic, partition), p.value), now)
                result.response = (result.response or 0) + 1
        for (group_id, topic, partition), _p in entries:
            self.emit(
                result, GroupRecord(PendingKey(producer_id, group_id, topic, partition), None), now
            )
        return result

    def fetch_offsets(
        self,
        group_id: str,
        partitions: list[tuple[str, int]] | None,
        *,
        member_id: str | None = None,
        member_epoch: int = -1,
        require_stable: bool = False,
    ) -> tuple[ErrorCode, list[FetchedOffset]]:
        """Committed offsets of ``partitions`` (None: every partition with a commit);
        ``require_stable`` (KIP-447): UNSTABLE_OFFSET_COMMIT for a partition with an offset
        committed inside a transaction still open, so the reader retries until it ended."""
        group = self.groups.get(group_id)
        if member_id is not None and isinstance(group, ConsumerGroup):
            member = group.members.get(member_id)
            if member is None:
                return E.UNKNOWN_MEMBER_ID, []
            if member_epoch != member.epoch:
                return E.STALE_MEMBER_EPOCH, []
        committed = self.offsets.get(group_id, {})
        if partitions is None:
            partitions = sorted(committed)
        out = []
        for topic, partition in partitions:
            value = committed.get((topic, partition))
            if require_stable and self.has_pending(group_id, topic, partition):
                out.append(FetchedOffset(topic, partition, -1, -1, "", E.UNSTABLE_OFFSET_COMMIT))
            elif value is None:
                out.append(FetchedOffset(topic, partition, -1, -1, ""))
            else:
                out.append(
                    FetchedOffset(
                        topic, partition, value.offset, value.leader_epoch, value.metadata
                    )
                )
        return E.NONE, out

    def delete_offsets(
        self, now: int, group_id: str, partitions: list[tuple[str, int]]
    ) -> Result[tuple[ErrorCode, list[ErrorCode]]]:
        """OffsetDelete: refused per partition while the group is subscribed to its topic."""
        result: Result[tuple[ErrorCode, list[ErrorCode]]] = Result()
        group = self.groups.get(group_id)
        if group is None:
            result.response = (E.GROUP_ID_NOT_FOUND, [])
            return result
        subscribed: set[str] = set()
        if isinstance(group, ConsumerGroup):
            subscribed = group.subscribed_topics()
        elif group.state != ClassicState.EMPTY:
            if group.protocol_type != "consumer":
                result.response = (E.NON_EMPTY_GROUP, [])
                return result
            subscribed = {t for m in group.members.values() for t in m.subscribed_topics}
        codes = []
        for topic, partition in partitions:
            if topic in subscribed:
                codes.append(E.GROUP_SUBSCRIBED_TO_TOPIC)
                continue
            if (topic, partition) in self.offsets.get(group_id, {}) or self.has_pending(
                group_id, topic, partition
            ):
                self.emit(result, GroupRecord(OffsetKey(group_id, topic, partition), None), now)
            codes.append(E.NONE)
        result.response = (E.NONE, codes)
        return result

    # ------------------------------------------------------------------ admin

    def list_groups(
        self, states: Iterable[str] = (), types: Iterable[str] = ()
    ) -> list[GroupListing]:
        wanted_states = {s.lower() for s in states}
        wanted_types = {t.lower() for t in types}
        out = []
        for group_id, group in sorted(self.groups.items()):
            state = str(group.state)
            if wanted_states and state.lower() not in wanted_states:
                continue
            if wanted_types and group.type_name not in wanted_types:
                continue
            out.append(GroupListing(group_id, group.protocol_type or "", state, group.type_name))
        return out

    def delete_groups(self, now: int, group_ids: list[str]) -> Result[list[ErrorCode]]:
        result: Result[list[ErrorCode]] = Result()
        codes = []
        for group_id in group_ids:
            group = self.groups.get(group_id)
            if not group_id:
                codes.append(E.INVALID_GROUP_ID)
            elif group is None:
                codes.append(E.GROUP_ID_NOT_FOUND)
            elif not group.is_empty():
                codes.append(E.NON_EMPTY_GROUP)
            else:
                self._delete_group(result, now, group_id)
                codes.append(E.NONE)
        result.response = codes
        return result

    def _delete_group(self, result: Result[Any], now: int, group_id: str) -> None:
        # offsets committed inside open transactions go too (their tombstone supersedes them)
        parts = set(self.offsets.get(group_id, {}))
        for pid in self.pending_by_group.get(group_id, ()):
            parts.update((t, p) for g, t, p in self.pending[pid] if g == group_id)
        for topic, partition in sorted(parts):
            self.emit(result, GroupRecord(OffsetKey(group_id, topic, partition), None), now)
        self.emit(result, GroupRecord(GroupKey(group_id), None), now)

    # ------------------------------------------------------------------ timers

    def next_deadline(self) -> int | None:
        times: list[int] = []
        if self.next_expiry_check_ms is not None:
            times.append(self.next_expiry_check_ms)
        for group in self.groups.values():
            t = (
                self.classic_deadline(group)
                if isinstance(group, ClassicGroup)
                else self.consumer_deadline(group)
            )
            if t is not None:
                times.append(t)
        return min(times, default=None)

    def tick(self, now: int) -> Result[None]:
        """Run every timer that is due at ``now``."""
        result: Result[None] = Result()
        sub: Result[Any] = Result()
        for group in list(self.groups.values()):
            if isinstance(group, ClassicGroup):
                self.classic_tick(sub, now, group)
            else:
                self.consumer_tick(sub, now, group)
        if self.next_expiry_check_ms is None:
            self.next_expiry_check_ms = now + self.settings.offsets_retention_check_interval_ms
        elif self.next_expiry_check_ms <= now:
            self.expire_offsets(sub, now)
            self.next_expiry_check_ms = now + self.settings.offsets_retention_check_interval_ms
        result.absorb(sub)
        return result

    def expire_offsets(self, result: Result[Any], now: int) -> None:
        """offsets.retention.minutes: an empty group's offsets expire that long after it
        emptied (for groups that never had members, after their commit); a group left with
        neither offsets nor members is deleted."""
        retention = self.settings.offsets_retention_ms
        for group_id in sorted(set(self.offsets) | set(self.groups)):
            group = self.groups.get(group_id)
            if group is not None and not group.is_empty():
                continue
            committed = self.offsets.get(group_id, {})
            uses_group_time = group is not None and group.protocol_type
            for (topic, partition), value in sorted(committed.items()):
                if value.expire_ms is not None:
                    due = value.expire_ms
                elif uses_group_time and group is not None:
                    due = max(group.state_ms, value.commit_ms) + retention
                else:
                    due = value.commit_ms + retention
                if due <= now and not self.has_pending(group_id, topic, partition):
                    self.emit(result, GroupRecord(OffsetKey(group_id, topic, partition), None), now)
            if (
                group is not None
                and not self.offsets.get(group_id)
                and group_id not in self.pending_by_group
            ):
                self.emit(result, GroupRecord(GroupKey(group_id), None), now)

    # ------------------------------------------------------------------ reading

    def group(self, group_id: str) -> Group | None:
        return self.groups.get(group_id)

    def topic_sizes_wanted(self, group_id: str) -> set[str]:
        group = self.groups.get(group_id)
        return group.subscribed_topics() if isinstance(group, ConsumerGroup) else set()


def partitions_of(parts: Mapping[str, frozenset[int]]) -> list[tuple[str, int]]:
    return [(t, p) for t, ps in sorted(parts.items()) for p in sorted(ps)]
