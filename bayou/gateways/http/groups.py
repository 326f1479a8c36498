"""The HTTP gateway as a client of the broker's group coordinator.

Theory of operation
-------------------
Consumer instances use the same coordinator (``BrokerState.groups``) as Kafka consumers, so
HTTP and Kafka consumers of one group see each other's commits and can share partitions.

- **Offsets**: ``commit`` is the OffsetCommit path (durable before it returns) and
  ``committed`` the OffsetFetch path.  An instance with a manual assignment commits as
  Kafka's ``assign()`` consumers do (generation -1, no member): accepted while the group has
  no members.  A subscribed instance commits with its member id and epoch.
- **Membership**: a subscribed instance is a member of a KIP-848 consumer group.  It joins
  with epoch 0 and its topics (or ``topic_pattern`` as the subscription regex) and then
  heartbeats — on every records read and in the background at the coordinator's heartbeat
  interval — reporting the partitions it owns.  The coordinator's server-side assignor
  answers with the member's assignment.  Partitions taken away are given up at once (their
  positions committed first when auto-commit is on) and the next heartbeat, sent right away,
  tells the coordinator so, which lets another member (HTTP or Kafka) take them.  A fenced or
  unknown member rejoins with epoch 0; deleting, unsubscribing or expiring an instance leaves
  the group (epoch -1).  Kafka consumers using the classic protocol in the same group are
  refused by the coordinator, as Kafka does (409).
"""

from __future__ import annotations

import contextlib
import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field

from bayou.core.groups import ConsumerHeartbeatResponse, GroupCoordinatorError, OffsetCommit
from bayou.core.groups.driver import GroupDriver
from bayou.errors import ErrorCode
from bayou.gateways.http import errors
from bayou.gateways.http.errors import RestError
from bayou.gateways.legacy_state import LegacyState as BrokerState

TopicPartition = tuple[str, int]
Committed = tuple[int, str | None]  # (next offset to read, metadata)

REBALANCE_TIMEOUT_MS = 30_000
LEAVE_EPOCH = -1
E = ErrorCode


@dataclass
class Membership:
    """A subscribed instance's standing in its consumer group."""

    member_id: str = field(default_factory=lambda: uuid.uuid4().hex)
    epoch: int = 0
    assigned: list[TopicPartition] = field(default_factory=list)
    interval_s: float = 5.0
    last_heartbeat: float = 0.0

    def owned(self) -> dict[str, frozenset[int]]:
        out: dict[str, set[int]] = {}
        for topic, p in self.assigned:
            out.setdefault(topic, set()).add(p)
        return {t: frozenset(ps) for t, ps in out.items()}


def _error(exc: GroupCoordinatorError | ErrorCode, message: str = "") -> RestError:
    code = exc.code if isinstance(exc, GroupCoordinatorError) else exc
    text = message or (str(exc) if isinstance(exc, GroupCoordinatorError) else code.name)
    if code in (E.COORDINATOR_NOT_AVAILABLE, E.COORDINATOR_LOAD_IN_PROGRESS, E.NOT_COORDINATOR):
        return RestError(503, errors.KAFKA_RETRIABLE, f"Group coordinator not available: {text}")
    if code == E.INVALID_REQUEST:
        return errors.unprocessable(text)
    if code == E.OFFSET_METADATA_TOO_LARGE:
        return errors.unprocessable(f"Offset metadata too large: {text}")
    if code == E.UNKNOWN_TOPIC_OR_PARTITION:
        return RestError(404, errors.PARTITION_NOT_FOUND, text)
    return RestError(409, errors.ILLEGAL_STATE, f"Illegal state: {code.name}: {text}")


class GroupClient:
    def __init__(self, state: BrokerState) -> None:
        self.state = state

    def _driver(self, *, stopping_ok: bool = False) -> GroupDriver:
        groups = self.state.groups
        if groups is None or (self.state.stopping and not stopping_ok):
            raise _error(E.COORDINATOR_NOT_AVAILABLE)
        return groups

    # ------------------------------------------------------------------ offsets

    async def commit(self, group: str, offsets: Mapping[TopicPartition, Committed],
                     member: Membership | None, *, stopping_ok: bool = False) -> None:
        if not offsets:
            return
        driver = self._driver(stopping_ok=stopping_ok)
        topics = self.state.logs.topics()
        for topic, p in offsets:
            meta = topics.get(topic)
            if meta is None or p >= meta.partitions:
                raise errors.partition_not_found(topic, p)
        commits = [OffsetCommit(t, p, offset, -1, metadata if metadata is not None else "")
                   for (t, p), (offset, metadata) in offsets.items()]
        try:
            codes: list[ErrorCode] = await driver.run(
                lambda now, _token: driver.coordinator.commit_offsets(
                    now, group_id=group,
                    generation=member.epoch if member is not None else -1,
                    member_id=member.member_id if member is not None else "",
                    instance_id=None, offsets=commits,
                )
            )
        except GroupCoordinatorError as exc:
            raise _error(exc) from None
        for code in codes:
            if code != E.NONE:
                raise _error(code)

    def committed(self, group: str, partitions: list[TopicPartition]
                  ) -> dict[TopicPartition, Committed]:
        error, fetched = self._driver().read().fetch_offsets(group, partitions)
        if error != E.NONE:
            raise _error(error)
        return {(f.topic, f.partition): (f.offset, f.metadata)
                for f in fetched if f.offset >= 0}

    # ------------------------------------------------------------------ membership

    async def heartbeat(self, group: str, member: Membership, topics: list[str] | None,
                        pattern: str | None) -> list[TopicPartition] | None:
        """One heartbeat; the new assignment when it changed, else None."""
        driver = self._driver()
        sizes = {name: meta.partitions for name, meta in self.state.logs.topics().items()}
        joining = member.epoch == 0
        try:
            resp: ConsumerHeartbeatResponse = await driver.run(
                lambda now, _token: driver.coordinator.consumer_heartbeat(
                    now, group_id=group, member_id=member.member_id, member_epoch=member.epoch,
                    instance_id=None, rack_id=None, rebalance_timeout_ms=REBALANCE_TIMEOUT_MS,
                    subscribed=(topics if topics is not None else ([] if joining else None)),
                    server_assignor=None, owned=None if joining else member.owned(),
                    client_id="bayou-http", client_host="/http-gateway", topic_sizes=sizes,
                    subscribed_regex=pattern,
                )
            )
        except GroupCoordinatorError as exc:
            raise _error(exc) from None
        member.last_heartbeat = time.monotonic()
        if resp.error in (E.UNKNOWN_MEMBER_ID, E.FENCED_MEMBER_EPOCH):
            member.epoch = 0  # rejoin on the next heartbeat, owning nothing
            return []
        if resp.error != E.NONE:
            raise _error(resp.error, resp.message or "")
        member.epoch = resp.member_epoch
        if resp.heartbeat_interval_ms > 0:
            member.interval_s = resp.heartbeat_interval_ms / 1000
        if resp.assignment is None:
            return None
        return [(t, p) for t, ps in sorted(resp.assignment.items()) for p in sorted(ps)]

    async def leave(self, group: str, member: Membership) -> None:
        if member.epoch == 0 and not member.assigned:
            return
        driver = self.state.groups
        if driver is None:
            return
        sizes = {name: meta.partitions for name, meta in self.state.logs.topics().items()}
        with contextlib.suppress(GroupCoordinatorError):  # else the session timeout cleans up
            await driver.run(
                lambda now, _token: driver.coordinator.consumer_heartbeat(
                    now, group_id=group, member_id=member.member_id, member_epoch=LEAVE_EPOCH,
                    instance_id=None, rack_id=None, rebalance_timeout_ms=-1, subscribed=None,
                    server_assignor=None, owned=None, client_id="bayou-http",
                    client_host="/http-gateway", topic_sizes=sizes,
                )
            )
        member.epoch = 0
        member.assigned = []
