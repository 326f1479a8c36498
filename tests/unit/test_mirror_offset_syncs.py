"""The offset map of ``bayou mirror``: syncs, where a restarted copy resumes, and group
offsets translated across gaps."""

from __future__ import annotations

from bayou.mirror.offset_syncs import OffsetMap, Sync
from bayou.mirror.state import MirrorState, progress_record, sync_record, topic_record


def test_without_syncs_offsets_are_the_same() -> None:
    m = OffsetMap()
    assert not m.needs_sync(0, 0)
    assert not m.needs_sync(41, 41)
    assert m.needs_sync(42, 41)
    assert m.resume(100) == 100
    assert m.translate(57, target_end=100) == 57
    assert m.translate(157, target_end=100) == 100  # never beyond what the target holds


def test_a_gap_shifts_what_follows_and_translation_skips_it() -> None:
    # source 0-7 copied at 0-7; 8-11 are markers and aborted records; 12 -> 8
    m = OffsetMap()
    m.add(Sync(12, 8))
    assert not m.needs_sync(13, 9)
    assert m.resume(8) == 12  # stored the sync, then crashed before copying 12
    assert m.resume(10) == 14
    assert m.resume(5) == 5
    assert m.translate(7, 12) == 7
    assert m.translate(8, 12) == 8  # at the marker: the next record is source 12, target 8
    assert m.translate(10, 12) == 8
    assert m.translate(12, 12) == 8
    assert m.translate(15, 12) == 11


def test_several_gaps() -> None:
    m = OffsetMap()
    for sync in (Sync(10, 5), Sync(30, 20), Sync(31, 21)):
        m.add(sync)
    m.add(Sync(30, 20))  # replayed twice
    assert m.syncs == [Sync(10, 5), Sync(30, 20), Sync(31, 21)]
    assert m.resume(20) == 30
    assert m.resume(25) == 35
    assert m.translate(3, 100) == 3
    assert m.translate(7, 100) == 5
    assert m.translate(12, 100) == 7
    assert m.translate(26, 100) == 20  # 10 + 15 would be 21: in the gap before source 30
    assert m.translate(40, 100) == 30


def test_state_records_replay() -> None:
    state = MirrorState()
    for key, value in (
        topic_record("orders", True),
        topic_record("shared", False),
        sync_record("orders", 2, Sync(12, 8)),
        progress_record("shared", 0, 77),
        (b"sync:orders:2:bad", b"not json"),
        (b"unknown:x", b"{}"),
    ):
        state.apply(key, value)
    assert state.mirror_only == {"orders": True, "shared": False}
    assert state.offset_map("orders", 2).syncs == [Sync(12, 8)]
    assert state.progress == {("shared", 0): 77}
