"""Rendezvous placement: every broker computes the same owner from the same live set; a
broker leaving moves only its own keys, one joining takes a share from every other; and a
coordinator drops exactly the groups it no longer owns."""

from __future__ import annotations

from collections import Counter

from bayou.core.groups.coordinator import GroupCoordinator, OffsetCommit
from bayou.storage.cluster import coordinator_key, partition_key, rendezvous

KEYS = [partition_key(f"topic-{t}", p) for t in range(20) for p in range(30)]


def test_the_owner_depends_only_on_the_set_of_live_nodes() -> None:
    for key in KEYS[:50]:
        assert rendezvous(key, [1, 2, 3]) == rendezvous(key, (3, 1, 2)) in (1, 2, 3)
    assert rendezvous("k", []) == -1


def test_keys_spread_evenly_and_a_leaving_node_moves_only_its_own() -> None:
    before = {k: rendezvous(k, [1, 2, 3]) for k in KEYS}
    counts = Counter(before.values())
    assert all(150 <= counts[n] <= 250 for n in (1, 2, 3)), counts  # 600 keys, ~200 each
    after = {k: rendezvous(k, [1, 3]) for k in KEYS}
    moved = {k for k in KEYS if before[k] != after[k]}
    assert moved == {k for k in KEYS if before[k] == 2}


def test_a_joining_node_takes_a_share_from_every_other() -> None:
    before = {k: rendezvous(k, [1, 2, 3]) for k in KEYS}
    after = {k: rendezvous(k, [1, 2, 3, 4]) for k in KEYS}
    moved = [k for k in KEYS if before[k] != after[k]]
    assert all(after[k] == 4 for k in moved)
    assert set(Counter(before[k] for k in moved)) == {1, 2, 3}


def test_groups_and_transactional_ids_are_placed_apart() -> None:
    assert coordinator_key(0, "x") != coordinator_key(1, "x")


def test_a_coordinator_drops_only_the_groups_it_no_longer_owns() -> None:
    coordinator = GroupCoordinator()
    for group in ("kept", "moved"):
        result = coordinator.commit_offsets(
            0,
            group_id=group,
            generation=-1,
            member_id="",
            instance_id=None,
            offsets=[OffsetCommit("t", 0, 5)],
        )
        assert result.response is not None
    assert coordinator.drop_groups(lambda g: g == "moved") == ["moved"]
    assert coordinator.held_groups() == {"kept"}
    assert coordinator.fetch_offsets("kept", None)[1][0].offset == 5
