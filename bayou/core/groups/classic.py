"""The classic group protocol: JoinGroup, SyncGroup, Heartbeat, LeaveGroup, as Kafka does it.

Theory of operation
-------------------
A classic group moves Empty → PreparingRebalance → CompletingRebalance → Stable, and back to
PreparingRebalance whenever membership or a subscription changes.

- **Join phase** (PreparingRebalance): every JoinGroup is parked (its token kept on the
  member).  The phase ends when every known member has rejoined, or at the deadline: the
  largest rebalance timeout of the members; for a group that was Empty,
  ``group.initial.rebalance.delay.ms``, extended by the same amount while new members keep
  arriving, up to the rebalance timeout.  Dynamic members that did not rejoin are then
  removed (static ones stay, keeping their partitions until their session expires); the
  generation is bumped, a protocol every member supports is voted, a leader picked, and every
  parked JoinGroup answered — the leader's answer lists the members and their metadata.
- **Sync phase** (CompletingRebalance): SyncGroups are parked until the leader's arrives with
  the assignment; then the group metadata is written (one snapshot record), the group is
  Stable and every parked SyncGroup gets its member's assignment.  A member that never syncs
  is removed after the rebalance timeout, which restarts the rebalance.
- **Fencing**: an unknown member id → UNKNOWN_MEMBER_ID; a stale generation →
  ILLEGAL_GENERATION; a heartbeat during the join phase → REBALANCE_IN_PROGRESS (the client
  rejoins); a ``group.instance.id`` held by another member id → FENCED_INSTANCE_ID.
- **Session timeouts**: a member that neither heartbeats nor waits in a join/sync phase is
  removed when its session timeout passes, which starts a rebalance.
- **Static membership**: a JoinGroup with a known ``group.instance.id`` and no member id
  replaces the old member (which is fenced) under a new member id, keeps its assignment and,
  in a Stable group whose protocol stays the same, causes no rebalance.
- **MEMBER_ID_REQUIRED** (JoinGroup v4+): a new dynamic member first gets its id, then
  joins with it; ids handed out but never used expire after the session timeout.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from typing import Any

from bayou.core.groups.model import (
    ClassicGroup,
    ClassicMember,
    ClassicState,
    ConsumerGroup,
    GroupCoordinatorError,
    JoinResponse,
    Result,
    SyncResponse,
)
from bayou.core.groups.state import CoordinatorState
from bayou.errors import ErrorCode

E = ErrorCode
GCE = GroupCoordinatorError


class ClassicOps(CoordinatorState):
    # ------------------------------------------------------------------ lookups

    def _classic(self, group_id: str) -> ClassicGroup | None:
        group = self.groups.get(group_id)
        if group is None:
            return None
        if not isinstance(group, ClassicGroup):
            raise GCE(E.INCONSISTENT_GROUP_PROTOCOL, f"Group {group_id} is a consumer group")
        return group

    def _validate_member(
        self, group: ClassicGroup, member_id: str, instance_id: str | None
    ) -> ClassicMember:
        if instance_id is not None:
            owner = group.static.get(instance_id)
            if owner is not None and owner != member_id:
                raise GCE(E.FENCED_INSTANCE_ID)
        member = group.members.get(member_id)
        if member is None:
            raise GCE(E.UNKNOWN_MEMBER_ID)
        return member

    # ------------------------------------------------------------------ JoinGroup

    def join_group(
        self,
        now: int,
        token: int,
        *,
        group_id: str,
        member_id: str,
        instance_id: str | None,
        protocol_type: str,
        protocols: list[tuple[str, bytes]],
        session_timeout_ms: int,
        rebalance_timeout_ms: int,
        client_id: str,
        client_host: str,
        require_known_member_id: bool,
        supports_skip_assignment: bool = False,
        subscribed_topics: frozenset[str] = frozenset(),
    ) -> Result[JoinResponse]:
        result: Result[JoinResponse] = Result()
        try:
            self._join(
                result,
                now,
                token,
                group_id,
                member_id,
                instance_id,
                protocol_type,
                protocols,
                session_timeout_ms,
                rebalance_timeout_ms,
                client_id,
                client_host,
                require_known_member_id,
                supports_skip_assignment,
                subscribed_topics,
            )
        except GCE as exc:
            result.response = JoinResponse(exc.code, member_id=member_id)
        return result

    def _join(
        self,
        result: Result[JoinResponse],
        now: int,
        token: int,
        group_id: str,
        member_id: str,
        instance_id: str | None,
        protocol_type: str,
        protocols: list[tuple[str, bytes]],
        session_timeout_ms: int,
        rebalance_timeout_ms: int,
        client_id: str,
        client_host: str,
        require_known: bool,
        skip_ok: bool,
        topics: frozenset[str],
    ) -> None:
        s = self.settings
        if not group_id:
            raise GCE(E.INVALID_GROUP_ID)
        if not s.min_session_timeout_ms <= session_timeout_ms <= s.max_session_timeout_ms:
            raise GCE(E.INVALID_SESSION_TIMEOUT)
        if not protocol_type or not protocols:
            raise GCE(E.INCONSISTENT_GROUP_PROTOCOL)
        existing = self.groups.get(group_id)
        if isinstance(existing, ConsumerGroup):
            if existing.members:
                raise GCE(E.INCONSISTENT_GROUP_PROTOCOL)
            del self.groups[group_id]  # an empty consumer group turns classic; offsets stay
            existing = None
        group = existing
        if group is None:
            if self.reserved(group_id):
                raise GCE(E.INCONSISTENT_GROUP_PROTOCOL)
            if member_id:
                raise GCE(E.UNKNOWN_MEMBER_ID)
            group = ClassicGroup(group_id, state_ms=now)
            self.groups[group_id] = group
        assert isinstance(group, ClassicGroup)
        if group.state == ClassicState.DEAD:
            raise GCE(E.COORDINATOR_NOT_AVAILABLE)
        names = {name for name, _ in protocols}
        others = [m for m in group.members.values() if m.member_id != member_id]
        if others and (group.protocol_type != protocol_type or not names & _common(others)):
            raise GCE(E.INCONSISTENT_GROUP_PROTOCOL)

        def new_member(mid: str) -> ClassicMember:
            return ClassicMember(
                member_id=mid,
                instance_id=instance_id,
                client_id=client_id,
                client_host=client_host,
                session_timeout_ms=session_timeout_ms,
                rebalance_timeout_ms=rebalance_timeout_ms,
                protocol_type=protocol_type,
                protocols=list(protocols),
                subscribed_topics=topics,
            )

        if not member_id:
            if instance_id is not None and instance_id in group.static:
                self._replace_static(result, now, token, group, new_member, skip_ok)
                return
            new_id = f"{instance_id or client_id}-{self.new_id()}"
            if instance_id is None and require_known:
                group.pending[new_id] = now + session_timeout_ms
                result.response = JoinResponse(E.MEMBER_ID_REQUIRED, member_id=new_id)
                return
            member = new_member(new_id)
            self._add_member(result, now, group, member, token, skip_ok)
            return

        if member_id in group.pending:
            if instance_id is not None:
                raise GCE(E.FENCED_INSTANCE_ID)
            del group.pending[member_id]
            self._add_member(result, now, group, new_member(member_id), token, skip_ok)
            return
        member = self._validate_member(group, member_id, instance_id)
        if group.state == ClassicState.EMPTY:
            raise GCE(E.UNKNOWN_MEMBER_ID)
        changed = member.protocols != protocols
        member.protocols = list(protocols)
        member.subscribed_topics = topics
        member.session_timeout_ms = session_timeout_ms
        member.rebalance_timeout_ms = rebalance_timeout_ms
        member.client_id, member.client_host = client_id, client_host
        if group.state == ClassicState.PREPARING_REBALANCE:
            self._park_join(result, member, token, skip_ok)
            self._maybe_complete_join(result, now, group)
        elif group.state == ClassicState.COMPLETING_REBALANCE and not changed:
            # The member lost our answer: repeat the current generation's.
            result.response = self._join_answer(group, member, skip_ok=False)
        elif group.state == ClassicState.STABLE and not changed and member_id != group.leader:
            result.response = self._join_answer(group, member, skip_ok=False)
        else:
            self._park_join(result, member, token, skip_ok)
            self._prepare_rebalance(result, now, group)

    def _add_member(
        self,
        result: Result[JoinResponse],
        now: int,
        group: ClassicGroup,
        member: ClassicMember,
        token: int,
        skip_ok: bool,
    ) -> None:
        if not group.members:
            group.protocol_type = member.protocol_type
        group.members[member.member_id] = member
        if member.instance_id is not None:
            group.static[member.instance_id] = member.member_id
        member.deadline_ms = now + member.session_timeout_ms
        self._park_join(result, member, token, skip_ok)
        if group.state == ClassicState.PREPARING_REBALANCE:
            if group.initial_delay_ms:
                group.joined_during_delay = True
            self._maybe_complete_join(result, now, group)
        else:
            self._prepare_rebalance(result, now, group)

    def _park_join(
        self, result: Result[JoinResponse], member: ClassicMember, token: int, skip_ok: bool
    ) -> None:
        if member.join_token is not None and member.join_token != token:
            result.completions.append(
                (member.join_token, JoinResponse(E.REBALANCE_IN_PROGRESS, member.member_id))
            )
        member.join_token = token
        member.join_skip_ok = skip_ok

    def _replace_static(
        self,
        result: Result[JoinResponse],
        now: int,
        token: int,
        group: ClassicGroup,
        make: Callable[[str], ClassicMember],
        skip_ok: bool,
    ) -> None:
        replacement = make("")
        instance_id = replacement.instance_id
        assert instance_id is not None
        old = group.members[group.static[instance_id]]
        new_id = f"{instance_id}-{self.new_id()}"
        replacement.member_id = new_id
        replacement.assignment = old.assignment
        replacement.deadline_ms = now + replacement.session_timeout_ms
        old_protocol_ok = group.protocol_name in {n for n, _ in replacement.protocols}
        self._fence(result, old, E.FENCED_INSTANCE_ID)
        del group.members[old.member_id]
        group.pending_sync.discard(old.member_id)
        group.members[new_id] = replacement
        group.static[instance_id] = new_id
        if group.leader == old.member_id:
            group.leader = new_id
        if group.state == ClassicState.STABLE and old_protocol_ok:
            # A quick restart of a static member: same assignment, no rebalance.
            self.emit_group(result, group, now)
            lead = new_id == group.leader
            result.response = self._join_answer(
                group, replacement, skip_ok=lead and skip_ok, members=lead and skip_ok
            )
            return
        self._park_join(result, replacement, token, skip_ok)
        if group.state == ClassicState.PREPARING_REBALANCE:
            self._maybe_complete_join(result, now, group)
        else:
            self._prepare_rebalance(result, now, group)

    def _fence(self, result: Result[Any], member: ClassicMember, code: ErrorCode) -> None:
        if member.join_token is not None:
            result.completions.append((member.join_token, JoinResponse(code, member.member_id)))
            member.join_token = None
        if member.sync_token is not None:
            result.completions.append((member.sync_token, SyncResponse(code)))
            member.sync_token = None

    def _join_answer(
        self, group: ClassicGroup, member: ClassicMember, *, skip_ok: bool, members: bool = False
    ) -> JoinResponse:
        listed: tuple[tuple[str, str | None, bytes], ...] = ()
        if members:
            listed = tuple(
                (m.member_id, m.instance_id, m.metadata(group.protocol_name))
                for m in group.members.values()
            )
        return JoinResponse(
            E.NONE,
            member_id=member.member_id,
            generation=group.generation,
            protocol_type=group.protocol_type,
            protocol_name=group.protocol_name,
            leader=group.leader or "",
            members=listed,
            skip_assignment=skip_ok,
        )

    # ------------------------------------------------------------------ rebalance phases

    def _prepare_rebalance(self, result: Result[Any], now: int, group: ClassicGroup) -> None:
        if group.state == ClassicState.COMPLETING_REBALANCE:
            for m in group.members.values():
                m.assignment = b""
                if m.sync_token is not None:
                    result.completions.append((m.sync_token, SyncResponse(E.REBALANCE_IN_PROGRESS)))
                    m.sync_token = None
        was_empty = group.state == ClassicState.EMPTY
        group.pending_sync.clear()
        group.sync_deadline_ms = None
        group.state = ClassicState.PREPARING_REBALANCE
        group.state_ms = now
        delay = self.settings.initial_rebalance_delay_ms
        rebalance = group.max_rebalance_timeout()
        if was_empty and delay > 0:
            first = min(delay, rebalance)
            group.initial_delay_ms = first
            group.initial_delay_left_ms = max(rebalance - first, 0)
            group.joined_during_delay = False
            group.join_deadline_ms = now + first
        else:
            group.initial_delay_ms = 0
            group.join_deadline_ms = now + rebalance
            self._maybe_complete_join(result, now, group)

    def _all_joined(self, group: ClassicGroup) -> bool:
        return not group.pending and all(m.join_token is not None for m in group.members.values())

    def _maybe_complete_join(self, result: Result[Any], now: int, group: ClassicGroup) -> None:
        if group.state != ClassicState.PREPARING_REBALANCE or group.initial_delay_ms:
            return
        if self._all_joined(group):
            self._complete_join(result, now, group)

    def _join_deadline(self, result: Result[Any], now: int, group: ClassicGroup) -> None:
        if group.initial_delay_ms:
            if group.joined_during_delay and group.initial_delay_left_ms > 0:
                step = min(group.initial_delay_ms, group.initial_delay_left_ms)
                group.initial_delay_left_ms -= step
                group.joined_during_delay = False
                group.join_deadline_ms = now + step
                return
            group.initial_delay_ms = 0
        self._complete_join(result, now, group)

    def _complete_join(self, result: Result[Any], now: int, group: ClassicGroup) -> None:
        for m in list(group.members.values()):
            if m.join_token is None and m.instance_id is None:
                self._remove(group, m)
        group.pending.clear()
        group.join_deadline_ms = None
        group.initial_delay_ms = 0
        group.generation += 1
        group.state_ms = now
        if not group.members:
            group.state = ClassicState.EMPTY
            group.protocol_name = None
            group.leader = None
            self.emit_group(result, group, now)
            return
        group.protocol_name = self._vote(group)
        joined = [m for m in group.members.values() if m.join_token is not None]
        leader = group.members.get(group.leader or "")
        if leader is None or leader.join_token is None:
            group.leader = (joined[0] if joined else next(iter(group.members.values()))).member_id
        group.state = ClassicState.COMPLETING_REBALANCE
        group.pending_sync = set(group.members)
        group.sync_deadline_ms = now + group.max_rebalance_timeout()
        for m in joined:
            lead = m.member_id == group.leader
            assert m.join_token is not None
            result.completions.append(
                (m.join_token, self._join_answer(group, m, skip_ok=False, members=lead))
            )
            m.join_token = None
            m.deadline_ms = now + m.session_timeout_ms

    def _vote(self, group: ClassicGroup) -> str:
        common = _common(list(group.members.values()))
        votes: Counter[str] = Counter()
        order: list[str] = []
        for m in group.members.values():
            for name, _ in m.protocols:
                if name in common:
                    votes[name] += 1
                    if name not in order:
                        order.append(name)
                    break
        return max(order, key=lambda n: (votes[n], -order.index(n)))

    def _remove(self, group: ClassicGroup, member: ClassicMember) -> None:
        group.members.pop(member.member_id, None)
        group.pending_sync.discard(member.member_id)
        if member.instance_id is not None and group.static.get(member.instance_id) == (
            member.member_id
        ):
            del group.static[member.instance_id]
        if group.leader == member.member_id:
            group.leader = next(iter(group.members), None)

    def _member_gone(self, result: Result[Any], now: int, group: ClassicGroup) -> None:
        """After removals: rebalance, finish a join phase, or fall empty."""
        if group.state in (ClassicState.STABLE, ClassicState.COMPLETING_REBALANCE):
            self._prepare_rebalance(result, now, group)
        elif group.state == ClassicState.PREPARING_REBALANCE:
            if not group.members and not group.pending:
                self._complete_join(result, now, group)
            else:
                self._maybe_complete_join(result, now, group)

    # ------------------------------------------------------------------ SyncGroup

    def sync_group(
        self,
        now: int,
        token: int,
        *,
        group_id: str,
        generation: int,
        member_id: str,
        instance_id: str | None,
        protocol_type: str | None,
        protocol_name: str | None,
        assignments: dict[str, bytes],
    ) -> Result[SyncResponse]:
        result: Result[SyncResponse] = Result()
        try:
            group = self._classic(group_id)
            if group is None:
                raise GCE(E.UNKNOWN_MEMBER_ID)
            member = self._validate_member(group, member_id, instance_id)
            if generation != group.generation:
                raise GCE(E.ILLEGAL_GENERATION)
            if (protocol_type is not None and protocol_type != group.protocol_type) or (
                protocol_name is not None and protocol_name != group.protocol_name
            ):
                raise GCE(E.INCONSISTENT_GROUP_PROTOCOL)
            if group.state == ClassicState.PREPARING_REBALANCE:
                raise GCE(E.REBALANCE_IN_PROGRESS)
            if group.state == ClassicState.EMPTY:
                raise GCE(E.UNKNOWN_MEMBER_ID)
            member.deadline_ms = now + member.session_timeout_ms
            group.pending_sync.discard(member_id)
            if group.state == ClassicState.STABLE:
                result.response = self._sync_answer(group, member)
                return result
            if member.sync_token is not None and member.sync_token != token:
                result.completions.append(
                    (member.sync_token, SyncResponse(E.REBALANCE_IN_PROGRESS))
                )
            member.sync_token = token
            if member_id == group.leader:
                for m in group.members.values():
                    m.assignment = assignments.get(m.member_id, b"")
                group.state = ClassicState.STABLE
                group.state_ms = now
                group.sync_deadline_ms = None
                self.emit_group(result, group, now)
                for m in group.members.values():
                    if m.sync_token is not None:
                        answer = self._sync_answer(group, m)
                        if m.sync_token == token:
                            result.response = answer
                        else:
                            result.completions.append((m.sync_token, answer))
                        m.sync_token = None
        except GCE as exc:
            result.response = SyncResponse(exc.code)
        return result

    def _sync_answer(self, group: ClassicGroup, member: ClassicMember) -> SyncResponse:
        return SyncResponse(E.NONE, member.assignment, group.protocol_type, group.protocol_name)

    # ------------------------------------------------------------------ Heartbeat, LeaveGroup

    def heartbeat(
        self,
        now: int,
        *,
        group_id: str,
        generation: int,
        member_id: str,
        instance_id: str | None,
    ) -> Result[ErrorCode]:
        result: Result[ErrorCode] = Result()
        try:
            group = self._classic(group_id)
            if group is None or group.state == ClassicState.EMPTY:
                raise GCE(E.UNKNOWN_MEMBER_ID)
            member = self._validate_member(group, member_id, instance_id)
            if generation != group.generation:
                raise GCE(E.ILLEGAL_GENERATION)
            member.deadline_ms = now + member.session_timeout_ms
            if group.state == ClassicState.PREPARING_REBALANCE:
                raise GCE(E.REBALANCE_IN_PROGRESS)
            result.response = E.NONE
        except GCE as exc:
            result.response = exc.code
        return result

    def leave_group(
        self, now: int, *, group_id: str, members: list[tuple[str, str | None]]
    ) -> Result[tuple[ErrorCode, list[ErrorCode]]]:
        """``members``: (member id, group instance id); answers a code per member."""
        result: Result[tuple[ErrorCode, list[ErrorCode]]] = Result()
        try:
            group = self._classic(group_id)
        except GCE as exc:
            result.response = (exc.code, [exc.code] * len(members))
            return result
        if group is None:
            result.response = (E.UNKNOWN_MEMBER_ID, [E.UNKNOWN_MEMBER_ID] * len(members))
            return result
        codes: list[ErrorCode] = []
        removed = False
        for member_id, instance_id in members:
            if instance_id is not None:
                owner = group.static.get(instance_id)
                if owner is None:
                    codes.append(E.UNKNOWN_MEMBER_ID)
                    continue
                if member_id and owner != member_id:
                    codes.append(E.FENCED_INSTANCE_ID)
                    continue
                member_id = owner
            if member_id in group.pending:
                del group.pending[member_id]
                codes.append(E.NONE)
                removed = True
                continue
            member = group.members.get(member_id)
            if member is None:
                codes.append(E.UNKNOWN_MEMBER_ID)
                continue
            self._fence(result, member, E.UNKNOWN_MEMBER_ID)
            self._remove(group, member)
            codes.append(E.NONE)
            removed = True
        if removed:
            self._member_gone(result, now, group)
        top = codes[0] if len(members) == 1 else E.NONE
        result.response = (top, codes)
        return result

    # ------------------------------------------------------------------ timers

    def classic_deadline(self, group: ClassicGroup) -> int | None:
        times = [
            m.deadline_ms
            for m in group.members.values()
            if m.join_token is None and m.sync_token is None
        ]
        times.extend(group.pending.values())
        if group.join_deadline_ms is not None:
            times.append(group.join_deadline_ms)
        if group.sync_deadline_ms is not None:
            times.append(group.sync_deadline_ms)
        return min(times, default=None)

    def classic_tick(self, result: Result[Any], now: int, group: ClassicGroup) -> None:
        expired_pending = [mid for mid, t in group.pending.items() if t <= now]
        for mid in expired_pending:
            del group.pending[mid]
        gone = [
            m
            for m in group.members.values()
            if m.deadline_ms <= now and m.join_token is None and m.sync_token is None
        ]
        for m in gone:
            self._remove(group, m)
        if gone or expired_pending:
            self._member_gone(result, now, group)
        if (
            group.state == ClassicState.PREPARING_REBALANCE
            and group.join_deadline_ms is not None
            and group.join_deadline_ms <= now
        ):
            self._join_deadline(result, now, group)
        if (
            group.state == ClassicState.COMPLETING_REBALANCE
            and group.sync_deadline_ms is not None
            and group.sync_deadline_ms <= now
        ):
            late = [group.members[mid] for mid in group.pending_sync if mid in group.members]
            for m in late:
                self._fence(result, m, E.UNKNOWN_MEMBER_ID)
                self._remove(group, m)
            group.sync_deadline_ms = None
            self._prepare_rebalance(result, now, group)


def _common(members: list[ClassicMember]) -> set[str]:
    """Protocol names every one of ``members`` supports."""
    common = {n for n, _ in members[0].protocols} if members else set()
    for m in members[1:]:
        common &= {n for n, _ in m.protocols}
    return common
