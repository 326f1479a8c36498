"""Offsets, admin operations, expiry, and durability: records replayed from the real log."""

from __future__ import annotations

from pathlib import Path

from bayou.core.groups import GroupCoordinator, GroupSettings, OffsetCommit
from bayou.core.groups.records import (
    GroupKey,
    GroupRecord,
    OffsetKey,
    OffsetValue,
    decode,
    encode_key,
    encode_value,
)
from bayou.errors import ErrorCode as E
from tests.support.group_log import GroupLog as GroupStore

DAY = 24 * 3600 * 1000


def commit(
    c: GroupCoordinator,
    now: int,
    group: str,
    offsets: dict[tuple[str, int], int],
    generation: int = -1,
    member: str = "",
) -> list[E]:
    result = c.commit_offsets(
        now,
        group_id=group,
        generation=generation,
        member_id=member,
        instance_id=None,
        offsets=[OffsetCommit(t, p, o, metadata="m") for (t, p), o in offsets.items()],
    )
    assert result.response is not None
    return result.response


def test_admin_commit_creates_an_empty_group_and_fetch_returns_it() -> None:
    c = GroupCoordinator()
    assert commit(c, 0, "g", {("t", 0): 5, ("t", 1): 7}) == [E.NONE, E.NONE]
    error, fetched = c.fetch_offsets("g", [("t", 0), ("t", 2)])
    assert error == E.NONE
    assert [(f.partition, f.offset) for f in fetched] == [(0, 5), (2, -1)]
    _, everything = c.fetch_offsets("g", None)
    assert [(f.topic, f.partition, f.offset) for f in everything] == [("t", 0, 5), ("t", 1, 7)]
    assert c.list_groups()[0].state == "Empty"


def test_commit_with_a_generation_for_an_unknown_group_is_refused() -> None:
    c = GroupCoordinator()
    for version, code in ((8, E.ILLEGAL_GENERATION), (9, E.GROUP_ID_NOT_FOUND)):
        result = c.commit_offsets(
            0,
            group_id="g",
            generation=3,
            member_id="m",
            instance_id=None,
            offsets=[OffsetCommit("t", 0, 1)],
            version=version,
        )
        assert result.response == [code]
    assert c.list_groups() == []


def test_metadata_too_large() -> None:
    c = GroupCoordinator()
    result = c.commit_offsets(
        0,
        group_id="g",
        generation=-1,
        member_id="",
        instance_id=None,
        offsets=[OffsetCommit("t", 0, 1, metadata="x" * 5000)],
    )
    assert result.response == [E.OFFSET_METADATA_TOO_LARGE]


def test_delete_groups_and_offset_delete() -> None:
    c = GroupCoordinator()
    commit(c, 0, "g", {("t", 0): 5, ("u", 0): 1})
    result = c.delete_offsets(0, "g", [("t", 0)])
    assert result.response == (E.NONE, [E.NONE])
    assert [f.topic for f in c.fetch_offsets("g", None)[1]] == ["u"]
    assert c.delete_groups(0, ["g", "nope"]).response == [E.NONE, E.GROUP_ID_NOT_FOUND]
    assert c.list_groups() == [] and c.fetch_offsets("g", None)[1] == []


def test_offsets_of_an_empty_group_expire_after_the_retention() -> None:
    c = GroupCoordinator(
        GroupSettings(offsets_retention_ms=7 * DAY, offsets_retention_check_interval_ms=60_000)
    )
    commit(c, 0, "g", {("t", 0): 5})
    c.tick(0)
    c.tick(7 * DAY - 1)
    assert c.fetch_offsets("g", None)[1]
    result = c.tick(7 * DAY + 60_000)
    assert c.fetch_offsets("g", None)[1] == [] and c.list_groups() == []
    assert {type(r.key) for r in result.records} == {OffsetKey, GroupKey}


def test_record_encoding_round_trips() -> None:
    for record in (
        GroupRecord(OffsetKey("g", "t", 3), OffsetValue(10, 2, None, 123, 456)),
        GroupRecord(OffsetKey("g", "t", 3), None),
        GroupRecord(GroupKey("g"), {"type": "classic", "members": []}),
        GroupRecord(GroupKey("g"), None),
    ):
        assert decode(encode_key(record.key), encode_value(record)) == record


def test_store_replays_what_was_appended_after_a_crash(tmp_path: Path) -> None:
    c = GroupCoordinator()
    store = GroupStore(tmp_path, lambda: 1000)
    store.open()
    for i in range(50):
        result = c.commit_offsets(
            i,
            group_id=f"g{i % 3}",
            generation=-1,
            member_id="",
            instance_id=None,
            offsets=[OffsetCommit("t", i % 4, i)],
        )
        store.append(result.records)
    store.flush()
    assert store.log is not None
    store.log.close_without_flush()  # kill -9: no checkpoint, no clean close
    again = GroupStore(tmp_path, lambda: 2000)
    again.open()
    fresh = GroupCoordinator()
    assert fresh.load(again.records(), 2000) == 50 + 3  # and the 3 simple groups' records
    assert fresh.durable_view() == c.durable_view()
    again.close()
