"""The coordinator's data: groups, members, settings, and what operations return.

Nothing here knows Kafka's wire format: the Kafka handlers translate requests into these
calls and these results into responses, and the MQTT/AMQP gateways can do the same.
"""

from __future__ import annotations

import base64
import enum
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

from bayou.core.groups.records import GroupRecord
from bayou.errors import ErrorCode

T = TypeVar("T")

Partitions = dict[str, frozenset[int]]  # topic name -> partition indexes


@dataclass(frozen=True)
class GroupSettings:
    """Kafka's group-coordinator broker options (Kafka's names, Kafka's defaults)."""

    initial_rebalance_delay_ms: int = 3000  # group.initial.rebalance.delay.ms
    min_session_timeout_ms: int = 6000  # group.min.session.timeout.ms
    max_session_timeout_ms: int = 1_800_000  # group.max.session.timeout.ms
    offsets_retention_ms: int = 7 * 24 * 3600 * 1000  # offsets.retention.minutes
    offsets_retention_check_interval_ms: int = 600_000
    offset_metadata_max_bytes: int = 4096
    consumer_session_timeout_ms: int = 45_000  # group.consumer.session.timeout.ms
    consumer_heartbeat_interval_ms: int = 5000  # group.consumer.heartbeat.interval.ms
    consumer_assignors: tuple[str, ...] = ("uniform", "range")  # the first is the default


@dataclass
class Result(Generic[T]):
    """What an operation returns: records to make durable, then the answers to give.

    ``response`` is None when the request is parked (JoinGroup/SyncGroup waiting for the
    rebalance); ``completions`` answers earlier parked requests by their token.  The driver
    writes ``records`` (and fsyncs them) before delivering either.
    """

    response: T | None = None
    records: list[GroupRecord] = field(default_factory=list)
    completions: list[tuple[int, Any]] = field(default_factory=list)

    def absorb(self, other: Result[Any]) -> None:
        self.records.extend(other.records)
        self.completions.extend(other.completions)


class GroupCoordinatorError(Exception):
    """An operation refused with a Kafka error code (caught inside the coordinator)."""

    def __init__(self, code: ErrorCode, message: str = "") -> None:
        super().__init__(message or code.name)
        self.code = code


# --------------------------------------------------------------------------- classic groups


class ClassicState(enum.StrEnum):
    EMPTY = "Empty"
    PREPARING_REBALANCE = "PreparingRebalance"
    COMPLETING_REBALANCE = "CompletingRebalance"
    STABLE = "Stable"
    DEAD = "Dead"


@dataclass
class ClassicMember:
    member_id: str
    instance_id: str | None
    client_id: str
    client_host: str
    session_timeout_ms: int
    rebalance_timeout_ms: int
    protocol_type: str
    protocols: list[tuple[str, bytes]]
    subscribed_topics: frozenset[str] = frozenset()
    assignment: bytes = b""
    deadline_ms: int = 0
    join_token: int | None = None
    join_skip_ok: bool = False  # this join's version can carry SkipAssignment (v9+)
    sync_token: int | None = None

    def metadata(self, protocol: str | None) -> bytes:
        for name, meta in self.protocols:
            if name == protocol:
                return meta
        return b""


@dataclass
class ClassicGroup:
    group_id: str
    state: ClassicState = ClassicState.EMPTY
    state_ms: int = 0
    protocol_type: str | None = None
    protocol_name: str | None = None
    generation: int = 0
    leader: str | None = None
    members: dict[str, ClassicMember] = field(default_factory=dict)
    pending: dict[str, int] = field(default_factory=dict)  # MEMBER_ID_REQUIRED ids -> deadline
    static: dict[str, str] = field(default_factory=dict)  # group.instance.id -> member id
    join_deadline_ms: int | None = None
    initial_delay_left_ms: int = 0  # rebalance time still allowed after the initial delay
    initial_delay_ms: int = 0
    joined_during_delay: bool = False
    pending_sync: set[str] = field(default_factory=set)
    sync_deadline_ms: int | None = None

    @property
    def type_name(self) -> str:
        return "classic"

    def is_empty(self) -> bool:
        return not self.members and not self.pending

    def max_rebalance_timeout(self) -> int:
        return max((m.rebalance_timeout_ms for m in self.members.values()), default=0)

    def snapshot(self) -> dict[str, Any]:
        """The durable part (Kafka's GroupMetadata record), taken at a generation boundary."""
        return {
            "type": "classic",
            "protocol_type": self.protocol_type,
            "protocol_name": self.protocol_name,
            "generation": self.generation,
            "leader": self.leader,
            "state_ms": self.state_ms,
            "members": [
                {
                    "id": m.member_id,
                    "instance": m.instance_id,
                    "client_id": m.client_id,
                    "client_host": m.client_host,
                    "session_ms": m.session_timeout_ms,
                    "rebalance_ms": m.rebalance_timeout_ms,
                    "topics": sorted(m.subscribed_topics),
                    "metadata": _b64(m.metadata(self.protocol_name)),
                    "assignment": _b64(m.assignment),
                }
                for m in self.members.values()
            ],
        }

    @classmethod
    def from_snapshot(cls, group_id: str, snap: dict[str, Any], now_ms: int) -> ClassicGroup:
        group = cls(
            group_id,
            protocol_type=snap["protocol_type"],
            protocol_name=snap["protocol_name"],
            generation=int(snap["generation"]),
            leader=snap["leader"],
            state_ms=int(snap["state_ms"]),
        )
        for raw in snap["members"]:
            member = ClassicMember(
                member_id=raw["id"],
                instance_id=raw["instance"],
                client_id=raw["client_id"],
                client_host=raw["client_host"],
                session_timeout_ms=int(raw["session_ms"]),
                rebalance_timeout_ms=int(raw["rebalance_ms"]),
                protocol_type=group.protocol_type or "",
                protocols=[(group.protocol_name or "", _unb64(raw["metadata"]))],
                subscribed_topics=frozenset(raw["topics"]),
                assignment=_unb64(raw["assignment"]),
                deadline_ms=now_ms + int(raw["session_ms"]),
            )
            group.members[member.member_id] = member
            if member.instance_id is not None:
                group.static[member.instance_id] = member.member_id
        group.state = ClassicState.STABLE if group.members else ClassicState.EMPTY
        return group


@dataclass(frozen=True)
class JoinResponse:
    error: ErrorCode
    member_id: str = ""
    generation: int = -1
    protocol_type: str | None = None
    protocol_name: str | None = None
    leader: str = ""
    members: tuple[tuple[str, str | None, bytes], ...] = ()  # (member id, instance id, metadata)
    skip_assignment: bool = False


@dataclass(frozen=True)
class SyncResponse:
    error: ErrorCode
    assignment: bytes = b""
    protocol_type: str | None = None
    protocol_name: str | None = None


# --------------------------------------------------------------------------- consumer groups


class ConsumerState(enum.StrEnum):
    EMPTY = "Empty"
    ASSIGNING = "Assigning"
    RECONCILING = "Reconciling"
    STABLE = "Stable"
    DEAD = "Dead"


@dataclass
class ConsumerMember:
    member_id: str
    instance_id: str | None
    rack_id: str | None
    client_id: str
    client_host: str
    subscribed: tuple[str, ...]  # names plus the topics the regex matches
    server_assignor: str | None
    rebalance_timeout_ms: int
    subscribed_names: tuple[str, ...] = ()
    subscribed_regex: str | None = None
    epoch: int = 0
    previous_epoch: int = 0
    assigned: Partitions = field(default_factory=dict)
    revoking: Partitions = field(default_factory=dict)
    deadline_ms: int = 0
    revoke_deadline_ms: int | None = None
    left: bool = False  # a static member that left temporarily (epoch -2)

    def durable(self) -> dict[str, Any]:
        return {
            "id": self.member_id,
            "instance": self.instance_id,
            "rack": self.rack_id,
            "client_id": self.client_id,
            "client_host": self.client_host,
            "subscribed": list(self.subscribed),
            "names": list(self.subscribed_names),
            "regex": self.subscribed_regex,
            "assignor": self.server_assignor,
            "rebalance_ms": self.rebalance_timeout_ms,
            "epoch": self.epoch,
            "previous_epoch": self.previous_epoch,
            "assigned": dump_partitions(self.assigned),
            "revoking": dump_partitions(self.revoking),
            "left": self.left,
        }


@dataclass
class ConsumerGroup:
    group_id: str
    epoch: int = 0
    assignment_epoch: int = 0
    members: dict[str, ConsumerMember] = field(default_factory=dict)
    target: dict[str, Partitions] = field(default_factory=dict)
    topic_sizes: dict[str, int] = field(default_factory=dict)  # as of the last assignment
    state_ms: int = 0
    last_snapshot: dict[str, Any] | None = None

    @property
    def type_name(self) -> str:
        return "consumer"

    @property
    def protocol_type(self) -> str:
        return "consumer"

    def is_empty(self) -> bool:
        return not self.members

    @property
    def state(self) -> ConsumerState:
        if not self.members:
            return ConsumerState.EMPTY
        if self.assignment_epoch < self.epoch:
            return ConsumerState.ASSIGNING
        for m in self.members.values():
            if m.epoch != self.assignment_epoch or m.revoking:
                return ConsumerState.RECONCILING
            if m.assigned != self.target.get(m.member_id, {}):
                return ConsumerState.RECONCILING
        return ConsumerState.STABLE

    def subscribed_topics(self) -> set[str]:
        return {t for m in self.members.values() for t in m.subscribed}

    def snapshot(self) -> dict[str, Any]:
        return {
            "type": "consumer",
            "epoch": self.epoch,
            "assignment_epoch": self.assignment_epoch,
            "state_ms": self.state_ms,
            "topic_sizes": dict(sorted(self.topic_sizes.items())),
            "members": [m.durable() for m in self.members.values()],
            "target": {k: dump_partitions(v) for k, v in sorted(self.target.items())},
        }

    @classmethod
    def from_snapshot(cls, group_id: str, snap: dict[str, Any], now_ms: int) -> ConsumerGroup:
        group = cls(
            group_id,
            epoch=int(snap["epoch"]),
            assignment_epoch=int(snap["assignment_epoch"]),
            state_ms=int(snap["state_ms"]),
            topic_sizes={str(k): int(v) for k, v in snap["topic_sizes"].items()},
            target={k: load_partitions(v) for k, v in snap["target"].items()},
        )
        for raw in snap["members"]:
            member = ConsumerMember(
                member_id=raw["id"],
                instance_id=raw["instance"],
                rack_id=raw["rack"],
                client_id=raw["client_id"],
                client_host=raw["client_host"],
                subscribed=tuple(raw["subscribed"]),
                subscribed_names=tuple(raw["names"]),
                subscribed_regex=raw["regex"],
                server_assignor=raw["assignor"],
                rebalance_timeout_ms=int(raw["rebalance_ms"]),
                epoch=int(raw["epoch"]),
                previous_epoch=int(raw["previous_epoch"]),
                assigned=load_partitions(raw["assigned"]),
                revoking=load_partitions(raw["revoking"]),
                left=bool(raw["left"]),
            )
            member.deadline_ms = now_ms + 45_000  # reset below by the coordinator's setting
            group.members[member.member_id] = member
        group.last_snapshot = snap
        return group


@dataclass(frozen=True)
class ConsumerHeartbeatResponse:
    error: ErrorCode
    message: str | None = None
    member_id: str | None = None
    member_epoch: int = -1
    heartbeat_interval_ms: int = 0
    assignment: Partitions | None = None


# --------------------------------------------------------------------------- helpers


def dump_partitions(parts: Partitions) -> dict[str, list[int]]:
    return {t: sorted(ps) for t, ps in sorted(parts.items()) if ps}


def load_partitions(raw: dict[str, list[int]]) -> Partitions:
    return {str(t): frozenset(int(p) for p in ps) for t, ps in raw.items() if ps}


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def _unb64(text: str) -> bytes:
    return base64.b64decode(text)
