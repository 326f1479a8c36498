"""The coordinator's state and the one place durable state changes: ``replay``.

Theory of operation
-------------------
The durable state is two maps: committed offsets (``offsets[group][(topic, partition)]``) and
group snapshots.  Loading after a restart is ``replay`` of every record of the internal log,
in order; the latest record of a key wins, a ``None`` value deletes.  So the state is a
function of the last record of each key, and replaying the log after the cleaner compacted
it (the last record per key kept, in the same order; tombstones dropped once
``delete.retention.ms`` has passed) rebuilds the same state: every group that exists has a
group record (``commit_offsets`` writes one for a "simple" group it creates), and a group's
tombstone is written only after tombstones for all of its offsets.

Offsets committed inside a transaction (TxnOffsetCommit, KIP-447) are *pending*: kept per
producer id (``pending[producer_id][(group, topic, partition)]``) and invisible to
OffsetFetch until the transaction ends.  The transaction coordinator then calls
``complete_txn`` (the commit or abort marker of the offsets partition), which writes the
committed offsets (commit) and tombstones for the pending keys (both outcomes) in one batch.
A regular commit or a tombstone of the same partition replayed *after* a pending offset
supersedes it: that pending offset is dropped when its transaction commits, exactly as
Kafka keeps "the most recent record" (by log position) of the partition's offset.

Live operations build records and call ``emit``, which replays offset records and tombstones
at once and queues every record for the driver to write.  A group snapshot is *taken from*
the live group (which also carries soft state that is never written: who is waiting in a join
phase, session deadlines), so emitting it does not rebuild the live group; replaying it on a
fresh coordinator reproduces the group's durable part (the unit tests check exactly that).
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from typing import Any

from bayou.core.groups.model import (
    ClassicGroup,
    ConsumerGroup,
    GroupSettings,
    Result,
)
from bayou.core.groups.records import GroupKey, GroupRecord, OffsetKey, OffsetValue, PendingKey

Group = ClassicGroup | ConsumerGroup
TopicPartition = tuple[str, int]
GroupPartition = tuple[str, str, int]  # group, topic, partition


class PendingOffset:
    """An offset committed inside a transaction (see the module docstring)."""

    __slots__ = ("superseded", "value")

    def __init__(self, value: OffsetValue) -> None:
        self.value = value
        self.superseded = False


def random_id() -> str:
    return str(uuid.uuid4())


def _never(_group_id: str) -> bool:
    return False


class CoordinatorState:
    def __init__(
        self, settings: GroupSettings | None = None, new_id: Callable[[], str] = random_id
    ) -> None:
        self.settings = settings or GroupSettings()
        self.new_id = new_id
        self.groups: dict[str, Group] = {}
        self.offsets: dict[str, dict[TopicPartition, OffsetValue]] = {}
        self.pending: dict[int, dict[GroupPartition, PendingOffset]] = {}
        self.pending_by_group: dict[str, set[int]] = {}  # group -> producer ids
        self.next_expiry_check_ms: int | None = None
        #: whether a group id is taken by another kind of group (a share group: one name
        #: space for every kind, as in Kafka); set by whoever runs both coordinators
        self.reserved: Callable[[str], bool] = _never

    # ------------------------------------------------------------------ replay

    def replay(self, record: GroupRecord, now_ms: int) -> None:
        """Apply one record (loading, or an offset/tombstone emitted live)."""
        key, value = record.key, record.value
        if isinstance(key, PendingKey):
            self._replay_pending(key, value)
            return
        if isinstance(key, OffsetKey):
            tp = (key.topic, key.partition)
            for pid in self.pending_by_group.get(key.group, ()):
                superseded = self.pending[pid].get((key.group, key.topic, key.partition))
                if superseded is not None:
                    superseded.superseded = True
            if value is None:
                group_offsets = self.offsets.get(key.group)
                if group_offsets is not None:
                    group_offsets.pop(tp, None)
                    if not group_offsets:
                        del self.offsets[key.group]
                return
            assert isinstance(value, OffsetValue)
            self.offsets.setdefault(key.group, {})[tp] = value
            if key.group not in self.groups:
                # A "simple" group (offsets, no members) in a log written before commits
                # recorded its snapshot (``commit_offsets`` does now); for such a log this
                # is the one inference that reads across keys.
                self.groups[key.group] = ClassicGroup(key.group, state_ms=value.commit_ms)
            return
        if value is None:
            self.groups.pop(key.group, None)
            return
        assert isinstance(value, dict)
        self.groups[key.group] = self._group_from_snapshot(key.group, value, now_ms)

    def _replay_pending(self, key: PendingKey, value: object) -> None:
        gp = (key.group, key.topic, key.partition)
        if value is None:
            offsets = self.pending.get(key.producer_id)
            if offsets is not None and offsets.pop(gp, None) is not None:
                if not offsets:
                    del self.pending[key.producer_id]
                if not any(g == key.group for g, _t, _p in offsets):
                    pids = self.pending_by_group.get(key.group)
                    if pids is not None:
                        pids.discard(key.producer_id)
                        if not pids:
                            del self.pending_by_group[key.group]
            return
        assert isinstance(value, OffsetValue)
        self.pending.setdefault(key.producer_id, {})[gp] = PendingOffset(value)
        self.pending_by_group.setdefault(key.group, set()).add(key.producer_id)

    def held_groups(self) -> set[str]:
        """The group ids this coordinator holds any state of."""
        return {*self.groups, *self.offsets, *self.pending_by_group}

    def drop_groups(self, dropped: Callable[[str], bool]) -> list[str]:
        """Forget every group ``dropped`` names (its coordinator moved to another broker:
        the state log has it); returns their ids."""
        gone = [g for g in self.held_groups() if dropped(g)]
        for group_id in gone:
            self.groups.pop(group_id, None)
            self.offsets.pop(group_id, None)
            for pid in self.pending_by_group.pop(group_id, set()):
                offsets = self.pending.get(pid, {})
                for gp in [gp for gp in offsets if gp[0] == group_id]:
                    del offsets[gp]
                if not offsets:
                    self.pending.pop(pid, None)
        return gone

    def has_pending(self, group_id: str, topic: str, partition: int) -> bool:
        """Whether an open transaction committed an offset of this partition (KIP-447)."""
        return any(
            (group_id, topic, partition) in self.pending[pid]
            for pid in self.pending_by_group.get(group_id, ())
        )

    def _group_from_snapshot(self, group_id: str, snap: dict[str, Any], now_ms: int) -> Group:
        if snap.get("type") == "consumer":
            group = ConsumerGroup.from_snapshot(group_id, snap, now_ms)
            for member in group.members.values():
                member.deadline_ms = now_ms + self.settings.consumer_session_timeout_ms
            return group
        return ClassicGroup.from_snapshot(group_id, snap, now_ms)

    # ------------------------------------------------------------------ emitting

    def emit(self, result: Result[Any], record: GroupRecord, now_ms: int) -> None:
        if isinstance(record.key, OffsetKey | PendingKey) or record.value is None:
            self.replay(record, now_ms)
        result.records.append(record)

    def emit_group(self, result: Result[Any], group: Group, now_ms: int) -> None:
        snap = group.snapshot()
        if isinstance(group, ConsumerGroup):
            group.last_snapshot = snap
        self.emit(result, GroupRecord(GroupKey(group.group_id), snap), now_ms)

    def durable_view(self) -> dict[str, Any]:
        """Everything a restart must reproduce (tests compare live vs. replayed)."""
        view: dict[str, Any] = {"offsets": {}, "groups": {}, "pending": {}}
        for pid, pending in sorted(self.pending.items()):
            view["pending"][pid] = {
                f"{g}:{t}:{p}": (o.value, o.superseded) for (g, t, p), o in sorted(pending.items())
            }
        for group_id, offsets in sorted(self.offsets.items()):
            view["offsets"][group_id] = {f"{t}:{p}": v for (t, p), v in sorted(offsets.items())}
        for group_id, group in sorted(self.groups.items()):
            snap = group.snapshot()
            snap.pop("state_ms", None)
            view["groups"][group_id] = snap
        return view
