"""The classic group state machine, driven with a fake clock: no I/O, no sleeps."""

from __future__ import annotations

import itertools
from typing import Any

from bayou.core.groups import (
    ClassicState,
    GroupCoordinator,
    GroupSettings,
    JoinResponse,
    SyncResponse,
)
from bayou.core.groups.model import ClassicGroup, Result
from bayou.errors import ErrorCode as E

SESSION = 10_000
REBALANCE = 30_000


class Harness:
    """A coordinator, a clock, and every answer it has given, by token."""

    def __init__(self, delay_ms: int = 3000) -> None:
        ids = itertools.count(1)
        self.c = GroupCoordinator(
            GroupSettings(initial_rebalance_delay_ms=delay_ms), new_id=lambda: f"id{next(ids)}"
        )
        self.now = 1_000_000
        self.tokens = itertools.count(1)
        self.answers: dict[int, Any] = {}
        self.records: list[Any] = []

    def _take(self, token: int, result: Result[Any]) -> Any:
        self.records.extend(result.records)
        for t, answer in result.completions:
            self.answers[t] = answer
        if result.response is not None:
            self.answers[token] = result.response
        return token

    def join(
        self,
        member: str = "",
        group: str = "g",
        instance: str | None = None,
        protocols: list[tuple[str, bytes]] | None = None,
        version: int = 5,
    ) -> int:
        token = next(self.tokens)
        result = self.c.join_group(
            self.now,
            token,
            group_id=group,
            member_id=member,
            instance_id=instance,
            protocol_type="consumer",
            protocols=protocols or [("range", b"m")],
            session_timeout_ms=SESSION,
            rebalance_timeout_ms=REBALANCE,
            client_id="c",
            client_host="/h",
            require_known_member_id=version >= 4,
        )
        return self._take(token, result)

    def sync(
        self,
        member: str,
        generation: int,
        assignments: dict[str, bytes] | None = None,
        group: str = "g",
        instance: str | None = None,
    ) -> int:
        token = next(self.tokens)
        result = self.c.sync_group(
            self.now,
            token,
            group_id=group,
            generation=generation,
            member_id=member,
            instance_id=instance,
            protocol_type=None,
            protocol_name=None,
            assignments=assignments or {},
        )
        return self._take(token, result)

    def heartbeat(self, member: str, generation: int, instance: str | None = None) -> E:
        result = self.c.heartbeat(
            self.now, group_id="g", generation=generation, member_id=member, instance_id=instance
        )
        assert result.response is not None
        return result.response

    def advance(self, ms: int) -> None:
        """Move the clock, running every timer that falls due on the way."""
        end = self.now + ms
        for _ in range(1000):
            deadline = self.c.next_deadline()
            if deadline is None or deadline > end:
                break
            self.now = max(self.now, deadline)
            self._take(0, self.c.tick(self.now))
        self.now = end
        self._take(0, self.c.tick(self.now))

    def group(self) -> ClassicGroup:
        g = self.c.group("g")
        assert isinstance(g, ClassicGroup)
        return g


def join_new(h: Harness, **kw: Any) -> tuple[str, int]:
    """MEMBER_ID_REQUIRED round trip, then the real join (parked or answered)."""
    first = h.answers[h.join(**kw)]
    assert first.error == E.MEMBER_ID_REQUIRED
    return first.member_id, h.join(member=first.member_id, **kw)


def stable_group(h: Harness, n: int) -> list[str]:
    """n members, one generation, assignment synced: returns the member ids (leader first)."""
    members = []
    tokens = []
    for _ in range(n):
        mid, tok = join_new(h)
        members.append(mid)
        tokens.append(tok)
    h.advance(6000)  # the initial delay (extended once: members arrived) gathers them
    answers = [h.answers[t] for t in tokens]
    gen = answers[-1].generation
    leader = answers[0].leader
    assert all(a.error == E.NONE and a.generation == gen for a in answers)
    h.sync(leader, gen, {m: m.encode() for m in members})
    for mid in members:
        if mid != leader:
            assert h.answers[h.sync(mid, gen)].assignment == mid.encode()
    assert h.group().state == ClassicState.STABLE
    return [leader] + [m for m in members if m != leader]


def test_member_id_required_then_join_leads_a_one_member_group() -> None:
    h = Harness(delay_ms=0)
    mid, token = join_new(h)
    answer: JoinResponse = h.answers[token]
    assert answer.error == E.NONE and answer.member_id == mid and answer.leader == mid
    assert answer.generation == 1 and answer.protocol_name == "range"
    assert [m[0] for m in answer.members] == [mid]
    sync = h.answers[h.sync(mid, 1, {mid: b"assignment"})]
    assert sync == SyncResponse(E.NONE, b"assignment", "consumer", "range")
    assert h.heartbeat(mid, 1) == E.NONE


def test_join_waits_for_every_known_member_then_answers_all() -> None:
    h = Harness()
    a, b = stable_group(h, 2)
    ta = h.join(member=a)  # a rejoins: rebalance starts, a waits for b
    assert ta not in h.answers
    assert h.group().state == ClassicState.PREPARING_REBALANCE
    assert h.heartbeat(b, 1) == E.REBALANCE_IN_PROGRESS
    tb = h.join(member=b)
    assert h.answers[ta].generation == h.answers[tb].generation == 2
    assert len(h.answers[ta].members) == 2 and h.answers[tb].members == ()


def test_silent_member_is_expired_after_its_session_timeout() -> None:
    h = Harness()
    a, b = stable_group(h, 2)
    start = h.now
    for _ in range(10):  # a heartbeats, b is silent
        h.advance(SESSION // 4)
        if h.heartbeat(a, 1) == E.REBALANCE_IN_PROGRESS:
            break
    assert SESSION <= h.now - start <= SESSION + SESSION // 4
    assert b not in h.group().members
    answer = h.answers[h.join(member=a)]
    assert answer.generation == 2 and [m[0] for m in answer.members] == [a]


def test_member_that_does_not_rejoin_is_dropped_at_the_rebalance_timeout() -> None:
    h = Harness()
    a, b = stable_group(h, 2)
    ta = h.join(member=a)
    for _ in range(REBALANCE // 2000 + 1):  # b keeps heartbeating but never rejoins
        h.advance(2000)
        if ta in h.answers:
            break
        h.heartbeat(b, 1)
    assert h.answers[ta].generation == 2 and [m[0] for m in h.answers[ta].members] == [a]
    assert h.heartbeat(b, 2) == E.UNKNOWN_MEMBER_ID


def test_fencing_generation_member_and_rebalance() -> None:
    h = Harness()
    a, b = stable_group(h, 2)
    assert h.heartbeat(a, 0) == E.ILLEGAL_GENERATION
    assert h.heartbeat("nobody", 1) == E.UNKNOWN_MEMBER_ID
    assert h.answers[h.sync(a, 7)].error == E.ILLEGAL_GENERATION
    commit = h.c.commit_offsets(
        h.now, group_id="g", generation=0, member_id=a, instance_id=None, offsets=[]
    )
    assert commit.response == []
    h.join(member=a)
    assert h.answers[h.sync(b, 1)].error == E.REBALANCE_IN_PROGRESS


def test_leader_sync_releases_parked_followers() -> None:
    h = Harness()
    a, b = stable_group(h, 2)
    ta, tb = h.join(member=a), h.join(member=b)
    gen = h.answers[ta].generation
    leader = h.answers[ta].leader
    follower = b if leader == a else a
    tf = h.sync(follower, gen)
    assert tf not in h.answers
    h.sync(leader, gen, {a: b"A", b: b"B"})
    assert h.answers[tf].assignment == (b"B" if follower == b else b"A")
    assert tb in h.answers


def test_leave_group_batch_rebalances_the_rest() -> None:
    h = Harness()
    a, b, c = stable_group(h, 3)
    result = h.c.leave_group(h.now, group_id="g", members=[(b, None), (c, None), ("x", None)])
    assert result.response == (E.NONE, [E.NONE, E.NONE, E.UNKNOWN_MEMBER_ID])
    assert h.group().state == ClassicState.PREPARING_REBALANCE
    answer = h.answers[h.join(member=a)]
    assert answer.error == E.NONE and [m[0] for m in answer.members] == [a]


def test_last_member_leaving_empties_the_group() -> None:
    h = Harness()
    (a,) = stable_group(h, 1)
    h.c.leave_group(h.now, group_id="g", members=[(a, None)])
    assert h.group().state == ClassicState.EMPTY
    assert h.c.list_groups(states=["empty"])[0].group_id == "g"


def test_static_member_quick_restart_needs_no_rebalance() -> None:
    h = Harness()
    ta = h.join(instance="i-a")
    tb = h.join(instance="i-b")
    h.advance(6000)
    a, b = h.answers[ta].member_id, h.answers[tb].member_id
    gen = h.answers[ta].generation
    leader = h.answers[ta].leader
    h.sync(leader, gen, {a: b"A", b: b"B"})
    h.sync(b if leader == a else a, gen)
    # b's process restarts: it joins with no member id and the same instance id.
    answer = h.answers[h.join(instance="i-b")]
    assert answer.error == E.NONE and answer.generation == gen
    assert answer.member_id != b
    assert h.group().state == ClassicState.STABLE
    assert h.answers[h.sync(answer.member_id, gen, instance="i-b")].assignment == b"B"
    assert h.heartbeat(a, gen) == E.NONE  # the other member sees no rebalance
    assert h.heartbeat(b, gen, instance="i-b") == E.FENCED_INSTANCE_ID


def test_initial_rebalance_delay_gathers_members_into_one_generation() -> None:
    h = Harness(delay_ms=3000)
    t1 = h.join(instance="s1")
    h.advance(1000)
    t2 = h.join(instance="s2")
    h.advance(2500)  # first delay ends; a member arrived meanwhile: extended by 3000
    assert t1 not in h.answers
    h.advance(6000)
    assert h.answers[t1].generation == h.answers[t2].generation == 1
    assert len(h.group().members) == 2


def test_inconsistent_protocols_are_refused() -> None:
    h = Harness()
    stable_group(h, 1)
    answer = h.answers[h.join(protocols=[("roundrobin", b"")], version=3)]
    assert answer.error == E.INCONSISTENT_GROUP_PROTOCOL


def test_protocol_vote_picks_the_one_every_member_supports() -> None:
    h = Harness()
    t1 = h.join(protocols=[("range", b"1"), ("roundrobin", b"1")], version=3)
    t2 = h.join(protocols=[("roundrobin", b"2")], version=3)
    h.advance(6000)
    assert h.answers[t1].protocol_name == h.answers[t2].protocol_name == "roundrobin"
    leader = h.answers[t1].leader
    assert {m[2] for m in (h.answers[t1].members or h.answers[t2].members)} == {b"1", b"2"}
    assert leader in (h.answers[t1].member_id, h.answers[t2].member_id)


def test_one_member_group_completes_at_once_without_initial_delay() -> None:
    h = Harness(delay_ms=0)
    _mid, token = join_new(h)
    assert h.answers[token].generation == 1
