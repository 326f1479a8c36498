"""ShareCoordinator: the deterministic core of share groups (KIP-932).

Theory of operation
-------------------
One state machine holds what Kafka splits between its group coordinator (share groups'
membership and assignment) and its share coordinator (the share partitions' state):

- **groups** (``ShareGroup``): members join, heartbeat and leave with
  ShareGroupHeartbeat's epochs — the consumer protocol's shape without revocation: a
  partition may be shared, so the target assignment (``assignor.simple_assign``) is every
  member's assignment at once, at the group epoch; a member acquires only from what it is
  assigned now, and when it learns (on its heartbeat) that it lost partitions, what it still
  holds there is released.  A member that stops heartbeating is
  removed after the group's session timeout; a member leaving or removed releases every
  record it holds.
- **share partitions** (``SharePartition``, one per group, topic and partition): created
  when first assigned (or first read, or altered), starting where ``share.auto.offset.reset``
  says (``latest``: the log end then; ``earliest``: the log start); then acquisition,
  acknowledgement, lock expiry, release.
- **configs**: a group's ``share.*`` overrides of the broker's defaults.

Every operation is a method taking the time (``now``, ms) and returning a ``Result``: the
records to write and the answer.  Nothing here does I/O, sleeps or reads a clock: what it
needs of the log comes in as arguments — the partition counts, a ``log_bounds`` lookup (the
engine's in-memory offsets) and, for acquisition, the batches a read found (the driver reads
first, then acquires with no suspension in between; a state epoch guards against a reset in
between).  Durable state changes only by ``replay``: ``emit`` replays a record at once and
queues it, so loading after a restart is replaying ``__share_group_state``.  Soft state —
locks and their owners, session deadlines — is rebuilt empty: whatever was acquired is
Available again after a restart.

Timers are data: ``next_deadline`` says when ``tick`` must run (session expiry, lock expiry).

``foreign(group_id)`` says whether a group id is taken by a classic or consumer group: one
name space for every kind of group, as in Kafka.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from bayou.core.shares.assignor import simple_assign
from bayou.core.shares.model import (
    Ack,
    AcquiredRange,
    Batch,
    GroupConfig,
    HeartbeatResponse,
    PartitionOffsets,
    Partitions,
    Result,
    ShareCoordinatorError,
    ShareGroup,
    ShareMember,
    ShareRecord,
    ShareSettings,
    TopicPartition,
)
from bayou.core.shares.partition import SharePartition
from bayou.errors import ErrorCode

E = ErrorCode
SCE = ShareCoordinatorError
LEAVE = -1
PROTOCOL_TYPE = "share"
ASSIGNOR = "simple"

#: (log start, log end) of a partition, or None when it does not exist
LogBounds = Callable[[str, int], tuple[int, int] | None]
SharePartitionKey = tuple[str, str, int]  # group, topic, partition


@dataclass(frozen=True)
class ShareGroupListing:
    group_id: str
    state: str


def _never(_group_id: str) -> bool:
    return False


class ShareCoordinator:
    def __init__(
        self, settings: ShareSettings | None = None, foreign: Callable[[str], bool] = _never
    ) -> None:
        self.settings = settings or ShareSettings()
        self.foreign = foreign
        self.groups: dict[str, ShareGroup] = {}
        self.partitions: dict[SharePartitionKey, SharePartition] = {}
        self.by_group: dict[str, set[TopicPartition]] = {}
        self.configs: dict[str, dict[str, str]] = {}

    # ------------------------------------------------------------------ replay

    def held_groups(self) -> set[str]:
        """Every group id this coordinator holds anything of (members, partitions, configs)."""
        return {*self.groups, *self.by_group, *self.configs}

    def drop_groups(self, gone: Callable[[str], bool]) -> set[str]:
        """Forget every group ``gone`` names (another broker coordinates it now): its
        members, its partitions' states, its configs.  The group ids dropped."""
        dropped = {g for g in self.held_groups() if gone(g)}
        for group_id in dropped:
            self.groups.pop(group_id, None)
            self.configs.pop(group_id, None)
            for topic, partition in self.by_group.pop(group_id, set()):
                self.partitions.pop((group_id, topic, partition), None)
        return dropped

    def load(self, records: Iterable[ShareRecord], now: int) -> int:
        count = 0
        for record in records:
            self.replay(record, now)
            count += 1
        return count

    def replay(self, record: ShareRecord, now: int) -> None:
        group_id, value = record.group_id, record.value
        if record.kind == "c":
            if value is None:
                self.configs.pop(group_id, None)
            else:
                self.configs[group_id] = {str(k): str(v) for k, v in value.items()}
        elif record.kind == "g":
            if value is None:
                self.groups.pop(group_id, None)
            else:
                group = ShareGroup.from_snapshot(group_id, value)
                timeout = self.config(group_id).session_timeout_ms
                for member in group.members.values():
                    member.deadline_ms = now + timeout
                self.groups[group_id] = group
        else:
            key = (group_id, record.topic, record.partition)
            tp = (record.topic, record.partition)
            if value is None:
                self.partitions.pop(key, None)
                parts = self.by_group.get(group_id)
                if parts is not None:
                    parts.discard(tp)
                    if not parts:
                        del self.by_group[group_id]
            else:
                self.partitions[key] = SharePartition.from_snapshot(tp[0], tp[1], value)
                self.by_group.setdefault(group_id, set()).add(tp)

    def _emit_group(self, result: Result[Any], group: ShareGroup) -> None:
        snap = group.snapshot()
        if snap != group.last_snapshot:
            group.last_snapshot = snap
            result.records.append(ShareRecord("g", group.group_id, value=snap))

    def _emit_partition(self, result: Result[Any], group_id: str, sp: SharePartition) -> None:
        """A share partition changed live: its whole state is the record (replaying it
        would rebuild the same state minus the locks, which are not durable)."""
        result.records.append(
            ShareRecord("p", group_id, sp.topic, sp.partition, value=sp.snapshot())
        )

    def _emit(self, result: Result[Any], record: ShareRecord, now: int) -> None:
        """A record that changes state by replay (tombstones, configs)."""
        self.replay(record, now)
        result.records.append(record)

    def durable_view(self) -> dict[str, Any]:
        """Everything a restart must reproduce (tests compare live and replayed)."""
        return {
            "groups": {g: grp.snapshot() for g, grp in sorted(self.groups.items())},
            "partitions": {
                f"{g}:{t}:{p}": sp.snapshot() for (g, t, p), sp in sorted(self.partitions.items())
            },
            "configs": dict(sorted(self.configs.items())),
        }

    # ------------------------------------------------------------------ configs

    def config(self, group_id: str) -> GroupConfig:
        return GroupConfig.resolve(self.settings, self.configs.get(group_id, {}))

    def alter_configs(self, now: int, group_id: str, configs: Mapping[str, str]) -> Result[bool]:
        """Replace the group's overrides (validated by the caller); answers whether they
        changed."""
        result: Result[bool] = Result(response=False)
        value = dict(sorted(configs.items()))
        if value != self.configs.get(group_id, {}):
            self._emit(result, ShareRecord("c", group_id, value=value or None), now)
            result.response = True
        return result

    # ------------------------------------------------------------------ membership

    def is_share_group(self, group_id: str) -> bool:
        return group_id in self.groups

    def heartbeat(
        self,
        now: int,
        *,
        group_id: str,
        member_id: str,
        member_epoch: int,
        rack_id: str | None,
        subscribed: list[str] | None,
        client_id: str,
        client_host: str,
        topic_sizes: Mapping[str, int],
        log_bounds: LogBounds,
        topic_ids: Mapping[str, str],
    ) -> Result[HeartbeatResponse]:
        result: Result[HeartbeatResponse] = Result()
        try:
            result.response = self._heartbeat(
                result,
                now,
                group_id,
                member_id,
                member_epoch,
                rack_id,
                subscribed,
                client_id,
                client_host,
                topic_sizes,
                log_bounds,
                topic_ids,
            )
        except SCE as exc:
            result.response = HeartbeatResponse(exc.code, str(exc))
        return result

    def _heartbeat(
        self,
        result: Result[HeartbeatResponse],
        now: int,
        group_id: str,
        member_id: str,
        epoch: int,
        rack_id: str | None,
        subscribed: list[str] | None,
        client_id: str,
        client_host: str,
        topic_sizes: Mapping[str, int],
        log_bounds: LogBounds,
        topic_ids: Mapping[str, str],
    ) -> HeartbeatResponse:
        if not group_id:
            raise SCE(E.INVALID_REQUEST, "GroupId can't be empty.")
        if not member_id:
            raise SCE(E.INVALID_REQUEST, "MemberId can't be empty.")
        if self.foreign(group_id):
            raise SCE(E.GROUP_ID_NOT_FOUND, f"Group {group_id} is not a share group.")
        config = self.config(group_id)
        group = self.groups.get(group_id)
        if epoch == LEAVE:
            if group is None or member_id not in group.members:
                raise SCE(E.UNKNOWN_MEMBER_ID, f"Unknown member {member_id}.")
            self._remove_member(result, now, group, group.members[member_id])
            self._emit_group(result, group)
            return HeartbeatResponse(E.NONE, member_id=member_id, member_epoch=LEAVE)
        if group is None:
            if epoch != 0:
                raise SCE(E.UNKNOWN_MEMBER_ID, f"Group {group_id} has no member {member_id}.")
            group = self._new_group(group_id, now)
        bump = False
        full = False
        member = group.members.get(member_id)
        if epoch == 0:
            if subscribed is None:
                raise SCE(E.INVALID_REQUEST, "SubscribedTopicNames must be set when joining.")
            if member is None:
                if len(group.members) >= self.settings.max_members_per_group:
                    raise SCE(
                        E.GROUP_MAX_SIZE_REACHED,
                        f"Share group {group_id} has reached its maximum of "
                        f"{self.settings.max_members_per_group} members "
                        "(group.share.max.size).",
                    )
                member = ShareMember(member_id, rack_id, client_id, client_host, ())
                group.members[member_id] = member
                bump = True
            full = True
        elif epoch > 0:
            if member is None:
                raise SCE(E.UNKNOWN_MEMBER_ID, f"Unknown member {member_id}.")
            if epoch != member.epoch:
                raise SCE(E.FENCED_MEMBER_EPOCH, "The share group member has a stale epoch.")
        else:
            raise SCE(E.INVALID_REQUEST, f"Invalid member epoch {epoch}.")
        member.deadline_ms = now + config.session_timeout_ms
        if rack_id is not None:
            member.rack_id = rack_id
        if subscribed is not None and tuple(sorted(set(subscribed))) != member.subscribed:
            member.subscribed = tuple(sorted(set(subscribed)))
            bump = True
        sizes = {t: topic_sizes[t] for t in group.subscribed_topics() if t in topic_sizes}
        if sizes != group.topic_sizes:
            group.topic_sizes = sizes
            bump = True
        if bump:
            group.epoch += 1
        if group.assignment_epoch < group.epoch:
            self._assign(result, now, group, log_bounds, topic_ids)
        before = (member.epoch, member.assigned)
        if member.epoch != group.assignment_epoch:
            # the member learns its new assignment now: what it holds in partitions it lost
            # goes back to the group (whoever has them now takes it from there)
            member.epoch = group.assignment_epoch
            lost = [
                tp
                for tp in self.by_group.get(group_id, ())
                if tp[1] not in member.assigned.get(tp[0], ())
            ]
            if lost:
                self._release_member(result, group_id, member_id, lost)
        changed = (member.epoch, member.assigned) != before
        self._emit_group(result, group)
        return HeartbeatResponse(
            E.NONE,
            member_id=member.member_id,
            member_epoch=member.epoch,
            heartbeat_interval_ms=config.heartbeat_interval_ms,
            assignment=dict(member.assigned) if full or changed else None,
        )

    def _new_group(self, group_id: str, now: int) -> ShareGroup:
        """Create a group, within ``max_groups`` (replayed groups are never refused)."""
        if len(self.groups) >= self.settings.max_groups:
            raise SCE(
                E.GROUP_MAX_SIZE_REACHED,
                f"The broker holds its maximum of {self.settings.max_groups} share groups "
                "(group.share.max.groups); delete unused ones.",
            )
        group = ShareGroup(group_id, state_ms=now)
        self.groups[group_id] = group
        return group

    def _assign(
        self,
        result: Result[Any],
        now: int,
        group: ShareGroup,
        log_bounds: LogBounds,
        topic_ids: Mapping[str, str],
    ) -> None:
        subs = {mid: m.subscribed for mid, m in group.members.items()}
        current = {mid: m.assigned for mid, m in group.members.items()}
        target = simple_assign(subs, group.topic_sizes, current)
        for mid, member in group.members.items():
            member.assigned = target.get(mid, {})  # each learns it at its next heartbeat
        group.assignment_epoch = group.epoch
        for parts in target.values():
            for topic, ps in parts.items():
                for p in ps:
                    self._share_partition(
                        result, now, group.group_id, topic, p, log_bounds, topic_ids.get(topic)
                    )

    def _remove_member(
        self, result: Result[Any], now: int, group: ShareGroup, member: ShareMember
    ) -> None:
        del group.members[member.member_id]
        group.epoch += 1
        if not group.members:
            group.state_ms = now
        self._release_member(result, group.group_id, member.member_id)

    def _release_member(
        self,
        result: Result[Any],
        group_id: str,
        member_id: str,
        only: Iterable[TopicPartition] | None = None,
    ) -> int:
        limit = self.config(group_id).delivery_count_limit
        released = 0
        wanted = set(only) if only is not None else None
        for tp in sorted(self.by_group.get(group_id, ())):
            if wanted is not None and tp not in wanted:
                continue
            sp = self.partitions[(group_id, *tp)]
            n = sp.release_member(member_id, limit)
            if n:
                released += n
                self._emit_partition(result, group_id, sp)
        if released:
            result.available = True
        return released

    # ------------------------------------------------------------------ share partitions

    def _share_partition(
        self,
        result: Result[Any],
        now: int,
        group_id: str,
        topic: str,
        partition: int,
        log_bounds: LogBounds,
        topic_id: str | None,
    ) -> SharePartition | None:
        """The share partition, created (at ``share.auto.offset.reset``) or started over (its
        topic was recreated) when needed; None when the partition does not exist."""
        key = (group_id, topic, partition)
        sp = self.partitions.get(key)
        if sp is not None and (topic_id is None or sp.topic_id == topic_id):
            return sp
        bounds = log_bounds(topic, partition)
        if bounds is None or topic_id is None:
            return sp
        reset = self.config(group_id).auto_offset_reset
        start = bounds[0] if reset == "earliest" else bounds[1]
        if sp is None:
            sp = SharePartition(topic, partition, topic_id, start)
            self.partitions[key] = sp
            self.by_group.setdefault(group_id, set()).add((topic, partition))
        else:
            sp.topic_id = topic_id
            sp.reset(start)
        self._emit_partition(result, group_id, sp)
        return sp

    def plan(self, group_id: str, topic: str, partition: int) -> tuple[int, int] | None:
        """Where a read for acquisition starts and the state epoch it must be acquired at;
        None when nothing may be acquired now (not initialized, or the in-flight limit)."""
        sp = self.partitions.get((group_id, topic, partition))
        if sp is None:
            return None
        if not sp.can_acquire(self.config(group_id).record_lock_partition_limit):
            return None
        return sp.fetch_offset(), sp.state_epoch

    def ensure_partition(
        self,
        now: int,
        group_id: str,
        topic: str,
        partition: int,
        log_bounds: LogBounds,
        topic_id: str | None,
        reset: str | None = None,
    ) -> Result[bool]:
        """Create the share partition if needed (``reset``: where a new one starts, instead
        of the group's ``share.auto.offset.reset``); answers whether it exists."""
        result: Result[bool] = Result()
        if reset is not None and (group_id, topic, partition) not in self.partitions:
            overrides = dict(self.configs.get(group_id, {}))
            saved = self.configs.get(group_id)
            overrides["share.auto.offset.reset"] = reset
            self.configs[group_id] = overrides
            try:
                sp = self._share_partition(
                    result, now, group_id, topic, partition, log_bounds, topic_id
                )
            finally:
                if saved is None:
                    self.configs.pop(group_id, None)
                else:
                    self.configs[group_id] = saved
        else:
            sp = self._share_partition(
                result, now, group_id, topic, partition, log_bounds, topic_id
            )
        result.response = sp is not None
        return result

    def acquire(
        self,
        now: int,
        *,
        group_id: str,
        member_id: str,
        topic: str,
        partition: int,
        state_epoch: int,
        batches: Iterable[Batch],
        read_from: int,
        log_start: int,
        max_records: int,
        whole_batches: bool = True,
    ) -> Result[list[AcquiredRange]]:
        """Acquire for ``member_id`` from ``batches`` (a read from ``plan``'s offset)."""
        result: Result[list[AcquiredRange]] = Result(response=[])
        sp = self.partitions.get((group_id, topic, partition))
        if sp is None or sp.state_epoch != state_epoch or max_records <= 0:
            return result
        config = self.config(group_id)
        moved = sp.truncate(log_start)
        ranges, changed = sp.acquire(
            now,
            member_id,
            batches,
            read_from=read_from,
            max_records=max_records,
            lock_ms=config.record_lock_duration_ms,
            limit=config.record_lock_partition_limit,
            whole_batches=whole_batches,
        )
        if moved or changed:
            self._emit_partition(result, group_id, sp)
        result.response = ranges
        return result

    def acknowledge(
        self,
        now: int,
        *,
        group_id: str,
        member_id: str,
        topic: str,
        partition: int,
        acks: Iterable[Ack],
    ) -> Result[ErrorCode]:
        result: Result[ErrorCode] = Result()
        sp = self.partitions.get((group_id, topic, partition))
        if sp is None:
            result.response = E.INVALID_RECORD_STATE
            return result
        config = self.config(group_id)
        code, changed = sp.acknowledge(
            now,
            member_id,
            acks,
            delivery_limit=config.delivery_count_limit,
            lock_ms=config.record_lock_duration_ms,
        )
        if changed:
            self._emit_partition(result, group_id, sp)
            result.available = sp.available > 0
        result.response = code
        return result

    def release(
        self, now: int, group_id: str, member_id: str, only: Iterable[TopicPartition] | None = None
    ) -> Result[int]:
        """Release what ``member_id`` holds (in ``only``'s partitions, or everywhere): its
        share session closed, or its connection."""
        result: Result[int] = Result()
        result.response = self._release_member(result, group_id, member_id, only)
        return result

    def purge(
        self, now: int, group_id: str, log_end: Callable[[str, int], int | None]
    ) -> Result[int]:
        """Drop what the group's share partitions have ready (Available, and not yet
        handed out up to the log end), leaving what members hold: AMQP ``queue.purge``.
        Answers how many records were dropped."""
        result: Result[int] = Result(response=0)
        dropped = 0
        for topic, p in sorted(self.by_group.get(group_id, ())):
            end = log_end(topic, p)
            if end is None:
                continue
            sp = self.partitions[(group_id, topic, p)]
            before = (sp.start, sp.end, sp.available)
            dropped += sp.purge(end)
            if (sp.start, sp.end, sp.available) != before:
                self._emit_partition(result, group_id, sp)
        result.response = dropped
        return result

    def assigned(self, group_id: str, member_id: str) -> Partitions | None:
        """The member's assignment now (None: not a member)."""
        group = self.groups.get(group_id)
        member = None if group is None else group.members.get(member_id)
        return None if member is None else member.assigned

    def lock_duration_ms(self, group_id: str) -> int:
        return self.config(group_id).record_lock_duration_ms

    # ------------------------------------------------------------------ admin

    def list_groups(self) -> list[ShareGroupListing]:
        return [ShareGroupListing(g, grp.state) for g, grp in sorted(self.groups.items())]

    def group(self, group_id: str) -> ShareGroup | None:
        return self.groups.get(group_id)

    def delete_groups(self, now: int, group_ids: list[str]) -> Result[dict[str, ErrorCode]]:
        """Delete empty share groups and their share partitions (ids that are no share
        group are not answered: the caller asks the group coordinator about them)."""
        result: Result[dict[str, ErrorCode]] = Result(response={})
        assert result.response is not None
        for group_id in group_ids:
            group = self.groups.get(group_id)
            if group is None:
                continue
            if not group.is_empty():
                result.response[group_id] = E.NON_EMPTY_GROUP
                continue
            for topic, p in sorted(self.by_group.get(group_id, ())):
                self._emit(result, ShareRecord("p", group_id, topic, p, None), now)
            self._emit(result, ShareRecord("g", group_id, value=None), now)
            result.response[group_id] = E.NONE
        return result

    def forget_group(self, now: int, group_id: str) -> Result[bool]:
        """Remove everything kept of a group without members — the group, its share
        partitions (which may exist before anyone joined) and its configs: an AMQP queue
        deleted.  Answers False (and changes nothing) while it has members."""
        result: Result[bool] = Result(response=False)
        group = self.groups.get(group_id)
        if group is not None and not group.is_empty():
            return result
        for topic, p in sorted(self.by_group.get(group_id, ())):
            self._emit(result, ShareRecord("p", group_id, topic, p, None), now)
        if group is not None:
            self._emit(result, ShareRecord("g", group_id, value=None), now)
        if group_id in self.configs:
            self._emit(result, ShareRecord("c", group_id, value=None), now)
        result.response = True
        return result

    def offsets(
        self, group_id: str, log_end: Callable[[str, int], int | None]
    ) -> list[PartitionOffsets]:
        """Every share partition of the group: start offset and lag (records not yet
        acknowledged or archived, up to the log end)."""
        out = []
        for topic, p in sorted(self.by_group.get(group_id, ())):
            sp = self.partitions[(group_id, topic, p)]
            end = log_end(topic, p)
            lag = -1
            if end is not None:
                lag = max(0, end - sp.end) + sp.in_flight()
            out.append(PartitionOffsets(topic, p, sp.start, lag, sp.in_flight(), sp.acquired))
        return out

    def alter_offsets(
        self,
        now: int,
        group_id: str,
        offsets: Mapping[TopicPartition, int],
        log_bounds: LogBounds,
        topic_ids: Mapping[str, str],
    ) -> Result[tuple[ErrorCode, dict[TopicPartition, ErrorCode]]]:
        """AlterShareGroupOffsets: start partitions over at the given offsets (clamped to
        the log); the group must have no members."""
        result: Result[tuple[ErrorCode, dict[TopicPartition, ErrorCode]]] = Result()
        if self.foreign(group_id):
            result.response = (E.GROUP_ID_NOT_FOUND, {})
            return result
        group = self.groups.get(group_id)
        if group is not None and not group.is_empty():
            result.response = (E.NON_EMPTY_GROUP, {})
            return result
        if group is None:
            try:
                group = self._new_group(group_id, now)
            except SCE as exc:
                result.response = (exc.code, {})
                return result
            self._emit_group(result, group)
        codes: dict[TopicPartition, ErrorCode] = {}
        for (topic, p), offset in sorted(offsets.items()):
            bounds = log_bounds(topic, p)
            topic_id = topic_ids.get(topic)
            if bounds is None or topic_id is None:
                codes[(topic, p)] = E.UNKNOWN_TOPIC_OR_PARTITION
                continue
            start = min(max(offset, bounds[0]), bounds[1])
            key = (group_id, topic, p)
            sp = self.partitions.get(key)
            if sp is None:
                sp = SharePartition(topic, p, topic_id, start)
                self.partitions[key] = sp
                self.by_group.setdefault(group_id, set()).add((topic, p))
            else:
                sp.topic_id = topic_id
                sp.reset(start)
            self._emit_partition(result, group_id, sp)
            codes[(topic, p)] = E.NONE
        result.available = True
        result.response = (E.NONE, codes)
        return result

    def delete_offsets(
        self, now: int, group_id: str, topics: list[str]
    ) -> Result[tuple[ErrorCode, dict[str, ErrorCode]]]:
        """DeleteShareGroupOffsets: forget the group's share partitions of ``topics`` (they
        start over at ``share.auto.offset.reset`` when next assigned); no members allowed."""
        result: Result[tuple[ErrorCode, dict[str, ErrorCode]]] = Result()
        group = self.groups.get(group_id)
        if group is None:
            result.response = (E.GROUP_ID_NOT_FOUND, {})
            return result
        if not group.is_empty():
            result.response = (E.NON_EMPTY_GROUP, {})
            return result
        codes: dict[str, ErrorCode] = {}
        owned = self.by_group.get(group_id, set())
        for topic in topics:
            parts = sorted(p for t, p in owned if t == topic)
            for p in parts:
                self._emit(result, ShareRecord("p", group_id, topic, p, None), now)
            codes[topic] = E.NONE if parts else E.UNKNOWN_TOPIC_OR_PARTITION
        result.response = (E.NONE, codes)
        return result

    # ------------------------------------------------------------------ timers

    def next_deadline(self) -> int | None:
        times = [m.deadline_ms for g in self.groups.values() for m in g.members.values()]
        for sp in self.partitions.values():
            d = sp.next_deadline()
            if d is not None:
                times.append(d)
        return min(times, default=None)

    def tick(self, now: int) -> Result[None]:
        """Expire sessions and acquisition locks due by ``now``."""
        result: Result[None] = Result()
        for group in list(self.groups.values()):
            gone = [m for m in group.members.values() if m.deadline_ms <= now]
            for member in gone:
                self._remove_member(result, now, group, member)
            if gone:
                self._emit_group(result, group)
        for (group_id, _t, _p), sp in sorted(self.partitions.items()):
            d = sp.next_deadline()
            if d is not None and d <= now:
                limit = self.config(group_id).delivery_count_limit
                if sp.expire(now, limit):
                    self._emit_partition(result, group_id, sp)
                    result.available = True
        return result


def partitions_of(parts: Partitions) -> list[TopicPartition]:
    return [(t, p) for t, ps in sorted(parts.items()) for p in sorted(ps)]
