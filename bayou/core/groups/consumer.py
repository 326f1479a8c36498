"""The consumer group protocol (KIP-848): ConsumerGroupHeartbeat, with server-side assignors.

Theory of operation
-------------------
There is no join or sync phase: every member heartbeats, and the coordinator answers each
heartbeat with the member's epoch and, when it changed, its assignment.

- **Group epoch**: bumped when a member joins or leaves, a subscription or the chosen
  assignor changes, or a subscribed topic's partition count changes.
- **Target assignment**: when the assignment epoch lags the group epoch, the assignor
  (``uniform`` or ``range``; the one most members ask for, else the first configured) computes
  every member's target at once, and the assignment epoch catches up.
- **Reconciliation**, per member, on its own heartbeats: partitions it owns but is no longer
  targeted for are revoked first (the member keeps the rest, its epoch stays, and it must
  report that it let them go — within its rebalance timeout, or it is fenced).  Then it moves
  to the target epoch and receives the new partitions that no other member still owns or is
  revoking; the rest arrive on later heartbeats once released.  So only partitions that must
  move are ever taken away, and none is owned twice.
- **Fencing**: unknown member → UNKNOWN_MEMBER_ID; an epoch newer than the member's, or older
  than its previous one → FENCED_MEMBER_EPOCH (the client rejoins with epoch 0).  A member
  that stops heartbeating is removed after ``group.consumer.session.timeout.ms``.
- **Static members** (``group.instance.id``): leaving with epoch -2 keeps the assignment for
  the session timeout; a new member id with the same instance id takes it over unchanged.
  An instance id held by a live member → UNRELEASED_INSTANCE_ID.

Persistence: after every heartbeat the group's durable snapshot is compared with the last one
written; only a change writes a record, so steady heartbeats cost no I/O.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Mapping
from typing import Any

from bayou.core.groups import assignors
from bayou.core.groups.model import (
    ClassicGroup,
    ConsumerGroup,
    ConsumerHeartbeatResponse,
    ConsumerMember,
    GroupCoordinatorError,
    Partitions,
    Result,
)
from bayou.core.groups.state import CoordinatorState
from bayou.errors import ErrorCode

E = ErrorCode
GCE = GroupCoordinatorError
LEAVE = -1
STATIC_LEAVE = -2


class ConsumerOps(CoordinatorState):
    def consumer_heartbeat(
        self,
        now: int,
        *,
        group_id: str,
        member_id: str,
        member_epoch: int,
        instance_id: str | None,
        rack_id: str | None,
        rebalance_timeout_ms: int,
        subscribed: list[str] | None,
        server_assignor: str | None,
        owned: Partitions | None,
        client_id: str,
        client_host: str,
        topic_sizes: Mapping[str, int],
        subscribed_regex: str | None = None,
    ) -> Result[ConsumerHeartbeatResponse]:
        result: Result[ConsumerHeartbeatResponse] = Result()
        try:
            result.response = self._heartbeat(
                result,
                now,
                group_id,
                member_id,
                member_epoch,
                instance_id,
                rack_id,
                rebalance_timeout_ms,
                subscribed,
                server_assignor,
                owned,
                client_id,
                client_host,
                topic_sizes,
                subscribed_regex,
            )
        except GCE as exc:
            result.response = ConsumerHeartbeatResponse(exc.code, str(exc))
        return result

    def _heartbeat(
        self,
        result: Result[ConsumerHeartbeatResponse],
        now: int,
        group_id: str,
        member_id: str,
        epoch: int,
        instance_id: str | None,
        rack_id: str | None,
        rebalance_timeout_ms: int,
        subscribed: list[str] | None,
        server_assignor: str | None,
        owned: Partitions | None,
        client_id: str,
        client_host: str,
        topic_sizes: Mapping[str, int],
        regex: str | None,
    ) -> ConsumerHeartbeatResponse:
        s = self.settings
        pattern: re.Pattern[str] | None = None
        if regex:
            try:
                pattern = re.compile(regex)
            except re.error as exc:
                raise GCE(E.INVALID_REQUEST, f"Invalid regex {regex}: {exc}") from None
        if not group_id:
            raise GCE(E.INVALID_REQUEST, "GroupId can't be empty.")
        if server_assignor is not None and server_assignor not in s.consumer_assignors:
            raise GCE(E.UNSUPPORTED_ASSIGNOR, f"Assignor {server_assignor} is not supported.")
        existing = self.groups.get(group_id)
        if isinstance(existing, ClassicGroup):
            if not existing.is_empty():
                raise GCE(E.GROUP_ID_NOT_FOUND, f"Group {group_id} is not a consumer group.")
            if epoch != 0:
                raise GCE(E.UNKNOWN_MEMBER_ID)
            del self.groups[group_id]  # an empty classic group turns consumer; offsets stay
            existing = None
        if existing is None:
            if self.reserved(group_id):
                raise GCE(E.GROUP_ID_NOT_FOUND, f"Group {group_id} is not a consumer group.")
            if epoch != 0:
                raise GCE(E.UNKNOWN_MEMBER_ID, f"Group {group_id} has no member {member_id}.")
            existing = ConsumerGroup(group_id, state_ms=now)
            self.groups[group_id] = existing
        group = existing
        assert isinstance(group, ConsumerGroup)

        if epoch in (LEAVE, STATIC_LEAVE):
            return self._consumer_leave(result, now, group, member_id, instance_id, epoch)

        bump = False
        full = False
        if epoch == 0:
            if subscribed is None and regex is None:
                raise GCE(E.INVALID_REQUEST, "SubscribedTopicNames must be set when joining.")
            member, bump = self._consumer_join(
                now,
                group,
                member_id,
                instance_id,
                rack_id,
                client_id,
                client_host,
                rebalance_timeout_ms,
                server_assignor,
            )
            full = True
        elif epoch > 0:
            found = group.members.get(member_id)
            if found is None:
                raise GCE(E.UNKNOWN_MEMBER_ID, f"Unknown member {member_id}.")
            member = found
            if epoch > member.epoch or (
                epoch < member.epoch
                and not (
                    epoch == member.previous_epoch
                    and owned is not None
                    and _subset(owned, member.assigned)
                )
            ):
                raise GCE(E.FENCED_MEMBER_EPOCH, "The member epoch is fenced.")
        else:
            raise GCE(E.INVALID_REQUEST, f"Invalid member epoch {epoch}.")

        member.deadline_ms = now + s.consumer_session_timeout_ms
        member.left = False
        if rebalance_timeout_ms > 0:
            member.rebalance_timeout_ms = rebalance_timeout_ms
        if subscribed is not None:
            member.subscribed_names = tuple(sorted(set(subscribed)))
        if regex is not None:
            member.subscribed_regex = regex or None
        elif epoch == 0:
            member.subscribed_regex = None
        if member.subscribed_regex and pattern is None:
            pattern = re.compile(member.subscribed_regex)
        wanted = set(member.subscribed_names)
        if pattern is not None:
            wanted.update(t for t in topic_sizes if pattern.fullmatch(t))
        if tuple(sorted(wanted)) != member.subscribed:
            member.subscribed = tuple(sorted(wanted))
            bump = True
        if server_assignor is not None and server_assignor != member.server_assignor:
            member.server_assignor = server_assignor
            bump = True
        if rack_id is not None:
            member.rack_id = rack_id
        sizes = {t: topic_sizes[t] for t in group.subscribed_topics() if t in topic_sizes}
        if sizes != group.topic_sizes:
            group.topic_sizes = sizes
            bump = True
        if bump:
            group.epoch += 1
        if group.assignment_epoch < group.epoch:
            self._assign(group)
        before = (member.epoch, dict(member.assigned))
        self._reconcile(now, group, member, owned)
        changed = (member.epoch, member.assigned) != before
        send = full or changed or (owned is not None and owned != member.assigned)
        self._persist(result, now, group)
        return ConsumerHeartbeatResponse(
            E.NONE,
            member_id=member.member_id,
            member_epoch=member.epoch,
            heartbeat_interval_ms=s.consumer_heartbeat_interval_ms,
            assignment=dict(member.assigned) if send else None,
        )

    def _consumer_join(
        self,
        now: int,
        group: ConsumerGroup,
        member_id: str,
        instance_id: str | None,
        rack_id: str | None,
        client_id: str,
        client_host: str,
        rebalance_timeout_ms: int,
        server_assignor: str | None,
    ) -> tuple[ConsumerMember, bool]:
        member_id = member_id or self.new_id()
        previous: ConsumerMember | None = None
        if instance_id is not None:
            previous = next(
                (m for m in group.members.values() if m.instance_id == instance_id), None
            )
            if previous is not None and previous.member_id != member_id and not previous.left:
                raise GCE(
                    E.UNRELEASED_INSTANCE_ID,
                    f"Static member {instance_id} is still held by another member.",
                )
        member = group.members.get(member_id)
        if member is not None:  # rejoining after losing its assignment
            member.epoch = 0
            member.previous_epoch = 0
            member.assigned = {}
            member.revoking = {}
            return member, False
        member = ConsumerMember(
            member_id=member_id,
            instance_id=instance_id,
            rack_id=rack_id,
            client_id=client_id,
            client_host=client_host,
            subscribed=(),
            server_assignor=server_assignor,
            rebalance_timeout_ms=rebalance_timeout_ms if rebalance_timeout_ms > 0 else 300_000,
        )
        if previous is not None:  # a static member's restart: take over, no rebalance
            del group.members[previous.member_id]
            member.subscribed = previous.subscribed
            member.subscribed_names = previous.subscribed_names
            member.subscribed_regex = previous.subscribed_regex
            member.server_assignor = server_assignor or previous.server_assignor
            member.epoch = previous.epoch
            member.previous_epoch = previous.previous_epoch
            member.assigned = previous.assigned
            member.revoking = previous.revoking
            if previous.member_id in group.target:
                group.target[member_id] = group.target.pop(previous.member_id)
            group.members[member_id] = member
            return member, False
        group.members[member_id] = member
        return member, True

    def _consumer_leave(
        self,
        result: Result[ConsumerHeartbeatResponse],
        now: int,
        group: ConsumerGroup,
        member_id: str,
        instance_id: str | None,
        epoch: int,
    ) -> ConsumerHeartbeatResponse:
        member = group.members.get(member_id)
        if member is None and instance_id is not None:
            member = next((m for m in group.members.values() if m.instance_id == instance_id), None)
        if member is None:
            raise GCE(E.UNKNOWN_MEMBER_ID, f"Unknown member {member_id}.")
        if epoch == STATIC_LEAVE and member.instance_id is not None:
            member.left = True
            member.deadline_ms = now + self.settings.consumer_session_timeout_ms
        else:
            self._remove_member(now, group, member)
        self._persist(result, now, group)
        return ConsumerHeartbeatResponse(E.NONE, member_id=member.member_id, member_epoch=epoch)

    def _remove_member(self, now: int, group: ConsumerGroup, member: ConsumerMember) -> None:
        group.members.pop(member.member_id, None)
        group.target.pop(member.member_id, None)
        group.epoch += 1
        if not group.members:
            group.state_ms = now

    def _assign(self, group: ConsumerGroup) -> None:
        votes = Counter(m.server_assignor for m in group.members.values() if m.server_assignor)
        name = votes.most_common(1)[0][0] if votes else self.settings.consumer_assignors[0]
        subs = {mid: m.subscribed for mid, m in group.members.items()}
        group.target = assignors.assign(name, subs, group.topic_sizes, group.target)
        group.assignment_epoch = group.epoch

    def _reconcile(
        self, now: int, group: ConsumerGroup, member: ConsumerMember, owned: Partitions | None
    ) -> None:
        target = group.target.get(member.member_id, {})
        if member.revoking:
            if owned is None or _overlaps(owned, member.revoking):
                return  # still waiting for the member to let go
            member.revoking = {}
            member.revoke_deadline_ms = None
        if member.epoch == group.assignment_epoch and member.assigned == target:
            return
        keep = _intersect(member.assigned, target)
        revoke = _minus(member.assigned, target)
        if revoke:
            member.assigned = keep
            member.revoking = revoke
            member.revoke_deadline_ms = now + member.rebalance_timeout_ms
            return
        taken: dict[str, set[int]] = {}
        for other in group.members.values():
            if other is not member:
                for parts in (other.assigned, other.revoking):
                    for t, ps in parts.items():
                        taken.setdefault(t, set()).update(ps)
        free = _minus(_minus(target, keep), {t: frozenset(ps) for t, ps in taken.items()})
        if member.epoch != group.assignment_epoch:
            member.previous_epoch = member.epoch
            member.epoch = group.assignment_epoch
        member.assigned = _union(keep, free)

    def _persist(
        self, result: Result[ConsumerHeartbeatResponse], now: int, group: ConsumerGroup
    ) -> None:
        if group.snapshot() != group.last_snapshot:
            self.emit_group(result, group, now)

    # ------------------------------------------------------------------ timers

    def consumer_deadline(self, group: ConsumerGroup) -> int | None:
        times = [m.deadline_ms for m in group.members.values()]
        times.extend(
            m.revoke_deadline_ms for m in group.members.values() if m.revoke_deadline_ms is not None
        )
        return min(times, default=None)

    def consumer_tick(self, result: Result[Any], now: int, group: ConsumerGroup) -> None:
        gone = [
            m
            for m in group.members.values()
            if m.deadline_ms <= now
            or (m.revoke_deadline_ms is not None and m.revoke_deadline_ms <= now)
        ]
        for m in gone:
            self._remove_member(now, group, m)
        if gone and group.snapshot() != group.last_snapshot:
            self.emit_group(result, group, now)


def _subset(a: Partitions, b: Partitions) -> bool:
    return all(ps <= b.get(t, frozenset()) for t, ps in a.items())


def _overlaps(a: Partitions, b: Partitions) -> bool:
    return any(ps & b.get(t, frozenset()) for t, ps in a.items())


def _intersect(a: Partitions, b: Partitions) -> Partitions:
    out = {t: ps & b.get(t, frozenset()) for t, ps in a.items()}
    return {t: ps for t, ps in out.items() if ps}


def _minus(a: Partitions, b: Partitions) -> Partitions:
    out = {t: ps - b.get(t, frozenset()) for t, ps in a.items()}
    return {t: ps for t, ps in out.items() if ps}


def _union(a: Partitions, b: Partitions) -> Partitions:
    out = dict(a)
    for t, ps in b.items():
        out[t] = out.get(t, frozenset()) | ps
    return out
