"""RemoteMember: a door's share-group member whose group another broker coordinates.

Theory of operation
-------------------
An AMQP consumer of a classic queue or an MQTT shared subscriber lives on the broker its
client is connected to (a ``ShareConsumer``); in a cluster its share group's state lives on
the group's coordinator (``docs/design/cluster.md``).  When that is another broker, the
member's calls go there as a Kafka share consumer's would, over **a connection of the
member's own** to the coordinator's Kafka listener (``forwarding.BrokerConnection``, with
the client id ``SHARE_MEMBER_CLIENT_ID`` — or ``SHARE_READER_CLIENT_ID`` for a member that
reads every partition it names, whatever its assignment, as an MQTT shared subscriber does
in its own broker):

- ``heartbeat`` — ShareGroupHeartbeat v1 (join with epoch 0, leave with -1); the
  coordinator ties the membership to this connection: when it closes (the member's broker
  killed, the member closed) the member leaves at once and its records go to the others,
  without waiting for the group's session timeout;
- ``acquire`` — ShareFetch v2 in ``record_limit`` mode (exactly the records asked for: a
  door bounds what a member holds by its prefetch) within one share session, opened with
  epoch 0 and then carrying the partitions added and forgotten; the records come back as
  stored batches and are decoded here;
- ``acknowledge`` — ShareAcknowledge v2 within the session;
- ``release`` — ShareAcknowledge with epoch -1: the session closes, the coordinator
  releases what it held;
- ``close`` — the connection closes (whatever is left is released there).

The member's calls are serialised (one lock): a session's epochs must follow each other.
A call the coordinator does not answer (it died, moved, the connection broke) raises
NOT_COORDINATOR as a ``ShareCoordinatorError``, which the doors treat as retriable; the
session is gone with the connection (the coordinator released it), so what was acquired
counts as released, and the next ``acquire`` opens a new one.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Any

from bayou.core.forwarding import (
    SHARE_MEMBER_CLIENT_ID,
    SHARE_READER_CLIENT_ID,
    BrokerConnection,
    Credentials,
    GroupLink,
    assignment_by_name,
)
from bayou.core.groups import GroupCoordinatorError
from bayou.core.shares.model import Ack, HeartbeatResponse, ShareCoordinatorError
from bayou.errors import ErrorCode
from bayou.protocol.kafka import messages as m
from bayou.protocol.kafka.records import DecodedRecord, iter_batches, iter_records
from bayou.storage.cluster import BrokerAddress
from bayou.storage.metadata import TopicMeta

SHARE_GROUP_HEARTBEAT, SHARE_FETCH, SHARE_ACKNOWLEDGE = 76, 78, 79
HEARTBEAT_VERSION, FETCH_VERSION, ACKNOWLEDGE_VERSION = 1, 2, 2
RECORD_LIMIT = 1  # ShareFetch v2's ShareAcquireMode: exactly MaxRecords
OPEN, CLOSE = 0, -1
MAX_BYTES = 16 * 1024 * 1024
SESSION_ERRORS = (ErrorCode.SHARE_SESSION_NOT_FOUND, ErrorCode.INVALID_SHARE_SESSION_EPOCH)
E = ErrorCode

TopicPartition = tuple[str, int]
Acquired = tuple[str, int, int, int, DecodedRecord | None]
"""(topic, partition, offset, delivery count, record — None where the log holds none)"""


def next_epoch(epoch: int) -> int:
    return 1 if epoch == 2**31 - 1 else epoch + 1


class RemoteMember:
    """One door member's share-group calls, sent to the coordinating broker."""

    def __init__(
        self,
        address: BrokerAddress,
        credentials: Credentials,
        topics: Callable[[], Mapping[str, TopicMeta]],
        group_id: str,
        member_id: str,
        *,
        every_partition: bool = False,
    ) -> None:
        self.address = address
        self._client_id = SHARE_READER_CLIENT_ID if every_partition else SHARE_MEMBER_CLIENT_ID
        self.group_id = group_id
        self.member_id = member_id
        self._topics = topics
        self._link = BrokerConnection(address, credentials)
        self._lock = asyncio.Lock()
        self._session: int | None = None  # the epoch the session's next request carries
        self._named: set[TopicPartition] = set()  # the session's partitions
        self.held: set[tuple[str, int, int]] = set()  # acquired, not acknowledged yet

    async def _call(self, api_key: int, version: int, request: Any, timeout_s: float) -> Any:
        try:
            return await self._link.call(
                api_key, version, request, self._client_id, timeout_s + 10.0
            )
        except GroupCoordinatorError as exc:
            self._lost()
            raise ShareCoordinatorError(exc.code, str(exc)) from None

    def _lost(self) -> None:
        """The connection is gone, and with it the session and what it held."""
        self._session = None
        self._named.clear()
        self.held.clear()

    def _ids(self) -> dict[str, uuid.UUID]:
        return {name: meta.topic_id for name, meta in self._topics().items()}

    # ------------------------------------------------------------------ membership

    async def heartbeat(self, epoch: int, subscribed: list[str] | None) -> HeartbeatResponse:
        request = m.ShareGroupHeartbeatRequest(
            group_id=self.group_id,
            member_id=self.member_id,
            member_epoch=epoch,
            subscribed_topic_names=subscribed,
        )
        async with self._lock:
            answer: m.ShareGroupHeartbeatResponse = await self._call(
                SHARE_GROUP_HEARTBEAT, HEARTBEAT_VERSION, request, 0.0
            )
        names = {tid: name for name, tid in self._ids().items()}
        assignment = assignment_by_name(answer.assignment, names)
        return HeartbeatResponse(
            E(answer.error_code),
            answer.error_message,
            answer.member_id,
            answer.member_epoch,
            answer.heartbeat_interval_ms,
            assignment,
        )

    # ------------------------------------------------------------------ records

    async def acquire(
        self, partitions: Iterable[TopicPartition], max_records: int, timeout_s: float
    ) -> list[Acquired]:
        """Up to ``max_records`` records of ``partitions`` (the session follows them),
        waiting on the coordinator up to ``timeout_s`` for some."""
        ids = self._ids()
        wanted = {tp for tp in partitions if tp[0] in ids}
        if not wanted and self._session is None:
            return []
        async with self._lock:
            epoch = OPEN if self._session is None else self._session
            added = wanted if epoch == OPEN else wanted - self._named
            forgotten = set() if epoch == OPEN else self._named - wanted
            request = m.ShareFetchRequest(
                group_id=self.group_id,
                member_id=self.member_id,
                share_session_epoch=epoch,
                max_wait_ms=int(max(0.0, timeout_s) * 1000),
                min_bytes=1,
                max_bytes=MAX_BYTES,
                max_records=max_records,
                batch_size=max_records,
                share_acquire_mode=RECORD_LIMIT,
                topics=[
                    m.ShareFetchRequestFetchTopic(
                        topic_id=ids[t],
                        partitions=[m.ShareFetchRequestFetchPartition(partition_index=p)],
                    )
                    for t, p in sorted(added)
                ],
                forgotten_topics_data=[
                    m.ShareFetchRequestForgottenTopic(topic_id=ids[t], partitions=[p])
                    for t, p in sorted(forgotten)
                    if t in ids
                ],
            )
            answer: m.ShareFetchResponse = await self._call(
                SHARE_FETCH, FETCH_VERSION, request, timeout_s
            )
            if answer.error_code in SESSION_ERRORS:
                self._lost()  # it closed on the coordinator: the next call opens another
                return []
            if answer.error_code != E.NONE:
                raise ShareCoordinatorError(E(answer.error_code), answer.error_message or "")
            self._session = next_epoch(epoch)
            self._named = wanted
            names = {tid: name for name, tid in ids.items()}
            out: list[Acquired] = []
            for topic in answer.responses:
                name = names.get(topic.topic_id)
                if name is None:
                    continue
                for part in topic.partitions:
                    out.extend(acquired_records(name, part))
            self.held.update((t, p, o) for t, p, o, _c, _r in out)
            return out

    async def acknowledge(self, topic: str, partition: int, acks: list[Ack]) -> ErrorCode:
        ids = self._ids()
        if topic not in ids:
            return E.UNKNOWN_TOPIC_OR_PARTITION
        async with self._lock:
            if self._session is None:  # the session closed: what it held went back
                return E.INVALID_RECORD_STATE
            epoch = self._session
            request = m.ShareAcknowledgeRequest(
                group_id=self.group_id,
                member_id=self.member_id,
                share_session_epoch=epoch,
                topics=[
                    m.ShareAcknowledgeRequestAcknowledgeTopic(
                        topic_id=ids[topic],
                        partitions=[
                            m.ShareAcknowledgeRequestAcknowledgePartition(
                                partition_index=partition,
                                acknowledgement_batches=[
                                    m.ShareAcknowledgeRequestAcknowledgementBatch(
                                        first_offset=a.first,
                                        last_offset=a.last,
                                        acknowledge_types=list(a.types),
                                    )
                                    for a in acks
                                ],
                            )
                        ],
                    )
                ],
            )
            answer: m.ShareAcknowledgeResponse = await self._call(
                SHARE_ACKNOWLEDGE, ACKNOWLEDGE_VERSION, request, 0.0
            )
            if answer.error_code in SESSION_ERRORS:
                self._lost()
                return E(answer.error_code)
            if answer.error_code != E.NONE:
                return E(answer.error_code)
            self._session = next_epoch(epoch)
            for a in acks:
                for offset in range(a.first, a.last + 1):
                    self.held.discard((topic, partition, offset))
            codes = [p.error_code for t in answer.responses for p in t.partitions]
            return E(next((c for c in codes if c), E.NONE))

    async def release(self) -> int:
        """Close the session: the coordinator releases everything it held."""
        async with self._lock:
            count = len(self.held)
            if self._session is not None:
                request = m.ShareAcknowledgeRequest(
                    group_id=self.group_id, member_id=self.member_id, share_session_epoch=CLOSE
                )
                await self._call(SHARE_ACKNOWLEDGE, ACKNOWLEDGE_VERSION, request, 0.0)
            self._lost()
            return count

    def close(self) -> None:
        """Drop the connection (the coordinator releases the session and the member)."""
        self._link.close()
        self._lost()


def acquired_records(topic: str, part: m.ShareFetchResponsePartitionData) -> Iterator[Acquired]:
    """Every acquired offset of a partition's answer, with its record (None for offsets
    the batches sent hold no record of: compacted away, a transaction's marker)."""
    counts: dict[int, int] = {}
    for r in part.acquired_records or ():
        for offset in range(r.first_offset, r.last_offset + 1):
            counts[offset] = r.delivery_count
    if not counts:
        return
    data = memoryview(part.records or b"")
    for pos, header in iter_batches(data):
        if header.last_offset < min(counts) or header.base_offset > max(counts):
            continue
        for record in iter_records(data[pos : pos + header.size]):
            count = counts.pop(record.offset, None)
            if count is not None:
                yield topic, part.partition_index, record.offset, count, record
    for offset, count in sorted(counts.items()):
        yield topic, part.partition_index, offset, count, None


DESCRIBE_SHARE_GROUP_OFFSETS, ALTER_SHARE_GROUP_OFFSETS, INCREMENTAL_ALTER_CONFIGS = 90, 91, 44
GROUP_RESOURCE, SET = 32, 0
EARLIEST, LATEST = 0, 2**63 - 1  # the coordinator clamps a start offset to the log


async def set_up_remotely(
    link: GroupLink,
    address: BrokerAddress,
    group_id: str,
    *,
    configs: Mapping[str, str],
    partitions: Iterable[TopicPartition],
    reset: str,
) -> None:
    """What a door sets up for its share group before its members join (an AMQP queue
    declared, an MQTT shared subscription made), done by the coordinator at ``address``:
    the group's ``configs`` set (IncrementalAlterConfigs; the coordinator takes values a
    door may set beyond Kafka's ranges from this client id), and every partition of
    ``partitions`` that has no share partition yet started at ``reset`` ("latest": the log
    end now, "earliest": its start) with AlterShareGroupOffsets — refused once the group
    has members (NON_EMPTY_GROUP), when the partitions a member reads start where the
    group's ``share.auto.offset.reset`` says.  Failures raise ShareCoordinatorError."""
    try:
        if configs:
            entry = m.IncrementalAlterConfigsRequestAlterableConfig
            answer = await link.call(
                address,
                INCREMENTAL_ALTER_CONFIGS,
                1,
                m.IncrementalAlterConfigsRequest(
                    resources=[
                        m.IncrementalAlterConfigsRequestAlterConfigsResource(
                            resource_type=GROUP_RESOURCE,
                            resource_name=group_id,
                            configs=[
                                entry(name=n, config_operation=SET, value=v)
                                for n, v in sorted(configs.items())
                            ],
                        )
                    ]
                ),
                SHARE_MEMBER_CLIENT_ID,
            )
            for resource in answer.responses:
                if resource.error_code != E.NONE:
                    raise ShareCoordinatorError(
                        E(resource.error_code), resource.error_message or ""
                    )
        by_topic: dict[str, list[int]] = {}
        for topic, index in sorted(set(partitions)):
            by_topic.setdefault(topic, []).append(index)
        if not by_topic:
            return
        described: m.DescribeShareGroupOffsetsResponse = await link.call(
            address,
            DESCRIBE_SHARE_GROUP_OFFSETS,
            0,
            m.DescribeShareGroupOffsetsRequest(
                groups=[
                    m.DescribeShareGroupOffsetsRequestGroup(
                        group_id=group_id,
                        topics=[
                            m.DescribeShareGroupOffsetsRequestTopic(topic_name=t, partitions=ps)
                            for t, ps in by_topic.items()
                        ],
                    )
                ]
            ),
            SHARE_MEMBER_CLIENT_ID,
        )
        missing: dict[str, list[int]] = {}
        for group in described.groups:
            if group.error_code == E.GROUP_ID_NOT_FOUND:  # no share group yet
                missing = by_topic
                break
            if group.error_code != E.NONE:
                raise ShareCoordinatorError(E(group.error_code), group.error_message or "")
            for t in group.topics:
                for part in t.partitions:
                    if part.error_code == E.NONE and part.start_offset < 0:
                        missing.setdefault(t.topic_name, []).append(part.partition_index)
        if not missing:
            return
        start = LATEST if reset == "latest" else EARLIEST
        altered: m.AlterShareGroupOffsetsResponse = await link.call(
            address,
            ALTER_SHARE_GROUP_OFFSETS,
            0,
            m.AlterShareGroupOffsetsRequest(
                group_id=group_id,
                topics=[
                    m.AlterShareGroupOffsetsRequestTopic(
                        topic_name=t,
                        partitions=[
                            m.AlterShareGroupOffsetsRequestPartition(
                                partition_index=p, start_offset=start
                            )
                            for p in ps
                        ],
                    )
                    for t, ps in missing.items()
                ],
            ),
            SHARE_MEMBER_CLIENT_ID,
        )
        if altered.error_code not in (E.NONE, E.NON_EMPTY_GROUP):
            raise ShareCoordinatorError(E(altered.error_code), altered.error_message or "")
    except GroupCoordinatorError as exc:
        raise ShareCoordinatorError(exc.code, str(exc)) from None
