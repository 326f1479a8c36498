"""Share groups' data: settings, record states, groups, members and what operations return.

Nothing here knows Kafka's wire format: the Kafka handlers (and later the AMQP and MQTT
doors) translate their requests into the coordinator's calls and its answers into theirs.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field, replace
from typing import Any, Generic, TypeVar

from bayou.errors import ErrorCode

T = TypeVar("T")

Partitions = dict[str, frozenset[int]]  # topic name -> partition indexes
TopicPartition = tuple[str, int]

#: Kafka's group-level configs of share groups (IncrementalAlterConfigs on GROUP resources),
#: with the broker defaults ``ShareSettings`` holds.
GROUP_CONFIGS = (
    "share.record.lock.duration.ms",
    "share.delivery.count.limit",
    "share.auto.offset.reset",
    "share.isolation.level",
    "share.record.lock.partition.limit",
    "share.session.timeout.ms",
    "share.heartbeat.interval.ms",
)


class RecordState(enum.IntEnum):
    """A record's state in a share partition (Kafka's numbering, as ``kafka-share-groups``
    and the state log show it)."""

    AVAILABLE = 0
    ACQUIRED = 1
    ACKNOWLEDGED = 2
    ARCHIVED = 4

    @property
    def terminal(self) -> bool:
        return self in (RecordState.ACKNOWLEDGED, RecordState.ARCHIVED)


class AckType(enum.IntEnum):
    """How a consumer acknowledges a record (ShareFetch/ShareAcknowledge's types)."""

    GAP = 0  # no record at this offset (compacted away, a marker): archive it
    ACCEPT = 1
    RELEASE = 2
    REJECT = 3
    RENEW = 4  # KIP-1222: keep the record, extend its acquisition lock


@dataclass(frozen=True)
class ShareSettings:
    """Broker-wide defaults of share groups (Kafka's ``group.share.*`` names and defaults);
    a group's own configs (``share.*``) override the per-group ones."""

    record_lock_duration_ms: int = 30_000  # group.share.record.lock.duration.ms
    min_record_lock_duration_ms: int = 1_000
    max_record_lock_duration_ms: int = 3_600_000
    delivery_count_limit: int = 5  # group.share.delivery.count.limit
    min_delivery_count_limit: int = 2
    max_delivery_count_limit: int = 10
    record_lock_partition_limit: int = 2000  # group.share.partition.max.record.locks
    max_record_lock_partition_limit: int = 10_000
    auto_offset_reset: str = "latest"  # share.auto.offset.reset
    isolation_level: str = "read_uncommitted"  # share.isolation.level
    session_timeout_ms: int = 45_000  # group.share.session.timeout.ms
    heartbeat_interval_ms: int = 5_000  # group.share.heartbeat.interval.ms
    min_session_timeout_ms: int = 1_000
    min_heartbeat_interval_ms: int = 100
    # Bounds on what clients can make the coordinator hold (GROUP_MAX_SIZE_REACHED beyond):
    # Kafka's group.share.max.size default; group.share.max.groups is 10 in Kafka, far
    # more here because every AMQP queue and MQTT $share group is a share group.
    max_members_per_group: int = 200  # group.share.max.size
    max_groups: int = 10_000  # group.share.max.groups


@dataclass(frozen=True)
class GroupConfig:
    """The settings in force for one group: the broker's, overridden by the group's."""

    record_lock_duration_ms: int
    delivery_count_limit: int
    record_lock_partition_limit: int
    auto_offset_reset: str
    isolation_level: str
    session_timeout_ms: int
    heartbeat_interval_ms: int

    @classmethod
    def resolve(cls, settings: ShareSettings, overrides: dict[str, str]) -> GroupConfig:
        base = cls(
            settings.record_lock_duration_ms,
            settings.delivery_count_limit,
            settings.record_lock_partition_limit,
            settings.auto_offset_reset,
            settings.isolation_level,
            settings.session_timeout_ms,
            settings.heartbeat_interval_ms,
        )
        names = {
            "share.record.lock.duration.ms": "record_lock_duration_ms",
            "share.delivery.count.limit": "delivery_count_limit",
            "share.record.lock.partition.limit": "record_lock_partition_limit",
            "share.auto.offset.reset": "auto_offset_reset",
            "share.isolation.level": "isolation_level",
            "share.session.timeout.ms": "session_timeout_ms",
            "share.heartbeat.interval.ms": "heartbeat_interval_ms",
        }
        changes: dict[str, Any] = {}
        for name, raw in overrides.items():
            attr = names.get(name)
            if attr is None:
                continue
            changes[attr] = raw if attr in ("auto_offset_reset", "isolation_level") else int(raw)
        return replace(base, **changes)


def validate_group_config(
    settings: ShareSettings, name: str, raw: str, *, bounded: bool = True
) -> str | None:
    """Why ``raw`` is not a valid value of group config ``name`` (None: it is); with
    ``bounded`` False a number may lie outside Kafka's range (a door's own settings)."""
    if name not in GROUP_CONFIGS:
        return f"Unknown group config name: {name}"
    if name == "share.auto.offset.reset":
        ok = raw in ("latest", "earliest") or raw.startswith("by_duration:")
        return None if ok else f"Invalid value {raw} for configuration {name}"
    if name == "share.isolation.level":
        ok = raw in ("read_uncommitted", "read_committed")
        return None if ok else f"Invalid value {raw} for configuration {name}"
    try:
        value = int(raw)
    except ValueError:
        return f"Invalid value {raw} for configuration {name}: not a number"
    bounds = {
        "share.record.lock.duration.ms": (
            settings.min_record_lock_duration_ms,
            settings.max_record_lock_duration_ms,
        ),
        "share.delivery.count.limit": (
            settings.min_delivery_count_limit,
            settings.max_delivery_count_limit,
        ),
        "share.record.lock.partition.limit": (100, settings.max_record_lock_partition_limit),
        "share.session.timeout.ms": (settings.min_session_timeout_ms, 1_800_000),
        "share.heartbeat.interval.ms": (settings.min_heartbeat_interval_ms, 1_800_000),
    }
    lo, hi = bounds[name] if bounded else (1, 2**31 - 1)
    if not lo <= value <= hi:
        return f"Invalid value {raw} for configuration {name}: must be in [{lo}, {hi}]"
    return None


# --------------------------------------------------------------------------- groups


@dataclass
class ShareMember:
    member_id: str
    rack_id: str | None
    client_id: str
    client_host: str
    subscribed: tuple[str, ...]
    epoch: int = 0
    assigned: Partitions = field(default_factory=dict)
    deadline_ms: int = 0  # soft: the session timeout (reset on reload)

    def durable(self) -> dict[str, Any]:
        return {
            "id": self.member_id,
            "rack": self.rack_id,
            "client_id": self.client_id,
            "client_host": self.client_host,
            "subscribed": list(self.subscribed),
            "epoch": self.epoch,
            "assigned": dump_partitions(self.assigned),
        }

    @classmethod
    def from_durable(cls, raw: dict[str, Any]) -> ShareMember:
        return cls(
            member_id=str(raw["id"]),
            rack_id=raw["rack"],
            client_id=str(raw["client_id"]),
            client_host=str(raw["client_host"]),
            subscribed=tuple(raw["subscribed"]),
            epoch=int(raw["epoch"]),
            assigned=load_partitions(raw["assigned"]),
        )


@dataclass
class ShareGroup:
    """A share group: members, the target assignment (every member gets its assignment at
    once: a partition may be shared, so nothing is revoked first), the group epoch."""

    group_id: str
    epoch: int = 0
    assignment_epoch: int = 0
    members: dict[str, ShareMember] = field(default_factory=dict)
    topic_sizes: dict[str, int] = field(default_factory=dict)  # as of the last assignment
    state_ms: int = 0
    last_snapshot: dict[str, Any] | None = None

    @property
    def state(self) -> str:
        return "Stable" if self.members else "Empty"

    def is_empty(self) -> bool:
        return not self.members

    def subscribed_topics(self) -> set[str]:
        return {t for m in self.members.values() for t in m.subscribed}

    def snapshot(self) -> dict[str, Any]:
        return {
            "epoch": self.epoch,
            "assignment_epoch": self.assignment_epoch,
            "state_ms": self.state_ms,
            "topic_sizes": dict(sorted(self.topic_sizes.items())),
            "members": [m.durable() for _id, m in sorted(self.members.items())],
        }

    @classmethod
    def from_snapshot(cls, group_id: str, snap: dict[str, Any]) -> ShareGroup:
        group = cls(
            group_id,
            epoch=int(snap["epoch"]),
            assignment_epoch=int(snap["assignment_epoch"]),
            state_ms=int(snap["state_ms"]),
            topic_sizes={str(k): int(v) for k, v in snap["topic_sizes"].items()},
        )
        for raw in snap["members"]:
            member = ShareMember.from_durable(raw)
            group.members[member.member_id] = member
        group.last_snapshot = snap
        return group


# --------------------------------------------------------------------------- results


@dataclass(frozen=True)
class ShareRecord:
    """One entry of the state log: ``kind`` ``g`` (a group snapshot), ``p`` (a share
    partition's state) or ``c`` (a group's configs); ``value`` None is a tombstone."""

    kind: str
    group_id: str
    topic: str = ""
    partition: int = -1
    value: dict[str, Any] | None = None


@dataclass
class Result(Generic[T]):
    """What an operation returns: records to make durable, then the answer."""

    response: T | None = None
    records: list[ShareRecord] = field(default_factory=list)
    #: records became Available (released, expired, reset): waiting consumers should look
    available: bool = False

    def absorb(self, other: Result[Any]) -> None:
        self.records.extend(other.records)
        self.available = self.available or other.available


class ShareCoordinatorError(Exception):
    """An operation refused with a Kafka error code."""

    def __init__(self, code: ErrorCode, message: str = "") -> None:
        super().__init__(message or code.name)
        self.code = code


@dataclass(frozen=True)
class HeartbeatResponse:
    error: ErrorCode
    message: str | None = None
    member_id: str | None = None
    member_epoch: int = -1
    heartbeat_interval_ms: int = 0
    assignment: Partitions | None = None


@dataclass(frozen=True)
class AcquiredRange:
    """Offsets ``first``..``last`` acquired by one consumer, each delivered ``count`` times
    (this delivery included)."""

    first: int
    last: int
    count: int


@dataclass(frozen=True)
class Batch:
    """What a read found in the log, as far as acquisition cares: the offsets of one stored
    batch and whether its records may be delivered (not a transaction marker, not an aborted
    transaction's under read_committed)."""

    base: int
    last: int
    deliverable: bool


@dataclass(frozen=True)
class Ack:
    """An acknowledgement of ``first``..``last``: one type for every offset, or one per
    offset (``types`` as long as the range)."""

    first: int
    last: int
    types: tuple[int, ...]

    def type_at(self, offset: int) -> int:
        return self.types[0] if len(self.types) == 1 else self.types[offset - self.first]


@dataclass(frozen=True)
class PartitionOffsets:
    """A share partition as DescribeShareGroupOffsets shows it."""

    topic: str
    partition: int
    start_offset: int  # -1: not initialized
    lag: int  # -1: unknown
    in_flight: int = 0
    acquired: int = 0


# --------------------------------------------------------------------------- helpers


def dump_partitions(parts: Partitions) -> dict[str, list[int]]:
    return {t: sorted(ps) for t, ps in sorted(parts.items()) if ps}


def load_partitions(raw: dict[str, list[int]]) -> Partitions:
    return {str(t): frozenset(int(p) for p in ps) for t, ps in raw.items() if ps}
