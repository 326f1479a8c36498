"""Forwarding: the doors' own group members served by the broker that coordinates their
group, from whichever broker they are connected to; and the transaction coordinator's calls
to the other brokers (``TxnLink``).

Theory of operation
-------------------
In a cluster a group is coordinated by one broker (``bayou/storage/cluster.py``).  An HTTP
consumer instance, an MQTT persistent session or an AMQP queue consumer lives on the broker
its client is connected to, which may not be that one.  Its coordinator calls — the KIP-848
heartbeat, OffsetCommit, OffsetFetch — then go to the coordinating broker as a Kafka client
would send them: over that broker's Kafka listener (the address its ``brokers`` row
advertises), with Bayou's own codec, one connection per broker kept open and one request at
a time on it (the members' calls are few: a heartbeat every few seconds, commits as they
happen).  The coordinating broker serves them exactly as it serves a Kafka consumer, so a
group may mix Kafka clients and door members connected to any broker.

``GroupLink`` is that client, answering in the coordinator's own types
(``ConsumerHeartbeatResponse``, error codes, ``FetchedOffset``): ``GroupMember`` and
``Offsets`` do not care which broker answered.  Any failure to reach the broker (refused,
closed, no answer within ``CALL_TIMEOUT_S``) is NOT_COORDINATOR, which every caller already
treats as retriable (the coordinator may have moved: the next call asks the cluster again).

With ``--authorizer acl`` the other broker's listener requires a login: the connection
first logs in with SASL PLAIN as the broker's internal user (``bayou.core.security``: a
super user whose secret every broker of the cluster reads from the shared engine), as
Kafka's inter-broker listener uses a principal of its own.

``TxnLink`` carries what Kafka's brokers send each other for transactions, with the same
APIs: a partition's leader asks the transactional id's coordinator whether a transactional
batch belongs to the producer's ongoing transaction (AddPartitionsToTxn v4, verify-only,
KIP-890), and the coordinator sends a decided transaction's markers to the partitions'
leaders (WriteTxnMarkers).  Those connections always log in as the internal user — with or
without an authorizer — because WriteTxnMarkers is served to that principal only
(``docs/design/transactions.md``).  Verifications and markers use separate connections, so
a producer's verification never waits behind a marker's write, and up to
``CONNECTIONS_PER_BROKER`` of each, so concurrent producers' calls do not queue on one.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import struct
from collections.abc import Callable, Mapping
from typing import Any

from bayou.core.groups import ConsumerHeartbeatResponse, GroupCoordinatorError, OffsetCommit
from bayou.core.groups.coordinator import FetchedOffset
from bayou.errors import BayouError, ErrorCode
from bayou.protocol.kafka import RequestHeader, decode_response, encode_request
from bayou.protocol.kafka import messages as m
from bayou.storage.cluster import BrokerAddress
from bayou.storage.metadata import TopicMeta

log = logging.getLogger(__name__)

CALL_TIMEOUT_S = 10.0
CONSUMER_GROUP_HEARTBEAT, OFFSET_COMMIT, OFFSET_FETCH = 68, 8, 9
ADD_PARTITIONS_TO_TXN, WRITE_TXN_MARKERS = 24, 27
VERIFY_VERSION, MARKERS_VERSION = 4, 1
CONNECTIONS_PER_BROKER = 4  # per purpose, for the transaction calls
SASL_HANDSHAKE, SASL_AUTHENTICATE = 17, 36
Credentials = Callable[[], tuple[str, str] | None]
"""The SASL PLAIN user and password to log in with, or None when no login is required."""
HEARTBEAT_VERSION, COMMIT_VERSION, FETCH_VERSION = 1, 9, 9
E = ErrorCode
FORWARDED_CLIENT_ID = "bayou-broker"
#: the client ids of a door's share-group member's requests to its coordinator (``remote.py``
#: in ``bayou.core.shares``): forwarded too; a member of the second kind reads every
#: partition its share session names (an MQTT shared subscription reads them all, whatever
#: the assignment), one of the first only those assigned to it, as a Kafka share consumer
SHARE_MEMBER_CLIENT_ID = "bayou-broker-share-member"
SHARE_READER_CLIENT_ID = "bayou-broker-share-reader"
SHARE_MEMBER_CLIENT_IDS = (SHARE_MEMBER_CLIENT_ID, SHARE_READER_CLIENT_ID)


def is_forwarded(client_id: str | None) -> bool:
    """Whether a request came from another broker of the cluster, on behalf of a client
    connected there (it is never sent on again)."""
    return client_id == FORWARDED_CLIENT_ID or client_id in SHARE_MEMBER_CLIENT_IDS


class BrokerConnection:
    """One connection to another broker's Kafka listener, one request at a time."""

    def __init__(self, address: BrokerAddress, credentials: Credentials = lambda: None) -> None:
        self.address = address
        self.credentials = credentials
        self._streams: tuple[asyncio.StreamReader, asyncio.StreamWriter] | None = None
        self._lock = asyncio.Lock()
        self._correlation = itertools.count(1)
        self.waiting = 0  # calls in progress or queued on this connection

    @property
    def busy(self) -> bool:
        return self.waiting > 0

    async def call(
        self,
        api_key: int,
        version: int,
        request: Any,
        client_id: str,
        timeout_s: float = CALL_TIMEOUT_S,
    ) -> Any:
        """The response; NOT_COORDINATOR when none came within ``timeout_s`` of the call,
        the wait for the calls before it on this connection included."""
        self.waiting += 1
        try:
            async with asyncio.timeout(timeout_s), self._lock:
                try:
                    return await self._exchange(api_key, version, request, client_id)
                except BaseException:
                    # failed, timed out or given up by its caller (cancelled) with the
                    # request sent: the stream is out of step, the next call starts afresh
                    self.close()
                    raise
        except (
            OSError,
            TimeoutError,
            asyncio.IncompleteReadError,
            BayouError,
            ValueError,
            struct.error,
        ) as exc:
            raise GroupCoordinatorError(
                E.NOT_COORDINATOR, f"broker {self.address.node_id} did not answer: {exc!r}"
            ) from None
        finally:
            self.waiting -= 1

    async def _exchange(self, api_key: int, version: int, request: Any, client_id: str) -> Any:
        if self._streams is None:
            self._streams = await asyncio.open_connection(self.address.host, self.address.port)
            login = self.credentials()
            if login is not None:
                await self._login(*login, client_id)
        return await self._roundtrip(api_key, version, request, client_id)

    async def _login(self, user: str, password: str, client_id: str) -> None:
        """SaslHandshake v1 (PLAIN), then SaslAuthenticate v2 with ``NUL user NUL password``."""
        shake = await self._roundtrip(
            SASL_HANDSHAKE, 1, m.SaslHandshakeRequest(mechanism="PLAIN"), client_id
        )
        if shake.error_code != E.NONE:
            raise OSError(f"SASL handshake refused: {E(shake.error_code).name}")
        auth = await self._roundtrip(
            SASL_AUTHENTICATE,
            2,
            m.SaslAuthenticateRequest(auth_bytes=b"\0" + user.encode() + b"\0" + password.encode()),
            client_id,
        )
        if auth.error_code != E.NONE:
            raise OSError(f"SASL login refused: {auth.error_message}")

    async def _roundtrip(self, api_key: int, version: int, request: Any, client_id: str) -> Any:
        assert self._streams is not None
        reader, writer = self._streams
        correlation = next(self._correlation)
        writer.write(
            encode_request(RequestHeader(api_key, version, correlation, client_id), request)
        )
        await writer.drain()
        (size,) = struct.unpack(">i", await reader.readexactly(4))
        answered, response = decode_response(api_key, version, await reader.readexactly(size))
        if answered != correlation:
            raise OSError(f"correlation id {answered}, expected {correlation}")
        return response

    def close(self) -> None:
        if self._streams is not None:
            with contextlib.suppress(Exception):
                self._streams[1].close()
            self._streams = None


class GroupLink:
    """The group coordinator calls of the doors' members, sent to another broker."""

    def __init__(self, topics: Any, credentials: Credentials = lambda: None) -> None:
        """``topics``: a callable giving the topic catalogue (name -> ``TopicMeta``);
        ``credentials``: the login other brokers' listeners require, if any."""
        self._topics = topics
        self._credentials = credentials
        self._connections: dict[int, BrokerConnection] = {}

    def _connection(self, address: BrokerAddress) -> BrokerConnection:
        found = self._connections.get(address.node_id)
        if found is None or found.address != address:  # restarted elsewhere: a new one
            if found is not None:
                found.close()
            found = self._connections[address.node_id] = BrokerConnection(
                address, self._credentials
            )
        return found

    def close(self) -> None:
        for connection in self._connections.values():
            connection.close()
        self._connections.clear()

    async def call(
        self,
        address: BrokerAddress,
        api_key: int,
        version: int,
        request: Any,
        client_id: str = FORWARDED_CLIENT_ID,
    ) -> Any:
        """Any request, as it is, to the broker at ``address``; its response."""
        return await self._connection(address).call(api_key, version, request, client_id)

    async def heartbeat(
        self,
        address: BrokerAddress,
        *,
        group_id: str,
        member_id: str,
        member_epoch: int,
        rebalance_timeout_ms: int,
        subscribed: list[str] | None,
        subscribed_regex: str | None,
        owned: Mapping[str, frozenset[int]] | None,
        client_id: str,
    ) -> ConsumerHeartbeatResponse:
        topics: Mapping[str, TopicMeta] = self._topics()
        owned_ids = None
        if owned is not None:
            owned_ids = [
                m.ConsumerGroupHeartbeatRequestTopicPartitions(
                    topic_id=topics[name].topic_id, partitions=sorted(ps)
                )
                for name, ps in sorted(owned.items())
                if name in topics
            ]
        request = m.ConsumerGroupHeartbeatRequest(
            group_id=group_id,
            member_id=member_id,
            member_epoch=member_epoch,
            rebalance_timeout_ms=rebalance_timeout_ms,
            subscribed_topic_names=subscribed,
            subscribed_topic_regex=subscribed_regex,
            topic_partitions=owned_ids,
        )
        answer: m.ConsumerGroupHeartbeatResponse = await self._connection(address).call(
            CONSUMER_GROUP_HEARTBEAT, HEARTBEAT_VERSION, request, client_id
        )
        by_id = {meta.topic_id: name for name, meta in topics.items()}
        assignment = assignment_by_name(answer.assignment, by_id)
        return ConsumerHeartbeatResponse(
            E(answer.error_code),
            answer.error_message,
            answer.member_id,
            answer.member_epoch,
            answer.heartbeat_interval_ms,
            assignment,
        )

    async def commit(
        self,
        address: BrokerAddress,
        *,
        group_id: str,
        member_id: str,
        epoch: int,
        commits: list[OffsetCommit],
        client_id: str,
    ) -> list[ErrorCode]:
        by_topic: dict[str, list[m.OffsetCommitRequestPartition]] = {}
        for c in commits:
            by_topic.setdefault(c.topic, []).append(
                m.OffsetCommitRequestPartition(
                    partition_index=c.partition,
                    committed_offset=c.offset,
                    committed_leader_epoch=c.leader_epoch,
                    committed_metadata=c.metadata,
                )
            )
        request = m.OffsetCommitRequest(
            group_id=group_id,
            generation_id_or_member_epoch=epoch,
            member_id=member_id,
            topics=[
                m.OffsetCommitRequestTopic(name=t, partitions=ps) for t, ps in by_topic.items()
            ],
        )
        answer: m.OffsetCommitResponse = await self._connection(address).call(
            OFFSET_COMMIT, COMMIT_VERSION, request, client_id
        )
        return [E(p.error_code) for t in answer.topics for p in t.partitions]

    async def fetch(
        self,
        address: BrokerAddress,
        *,
        group_id: str,
        partitions: list[tuple[str, int]] | None,
        client_id: str,
    ) -> tuple[ErrorCode, list[FetchedOffset]]:
        topics = None
        if partitions is not None:
            by_topic: dict[str, list[int]] = {}
            for topic, p in partitions:
                by_topic.setdefault(topic, []).append(p)
            topics = [
                m.OffsetFetchRequestTopics(name=t, partition_indexes=ps)
                for t, ps in by_topic.items()
            ]
        request = m.OffsetFetchRequest(
            groups=[m.OffsetFetchRequestGroup(group_id=group_id, member_epoch=-1, topics=topics)]
        )
        answer: m.OffsetFetchResponse = await self._connection(address).call(
            OFFSET_FETCH, FETCH_VERSION, request, client_id
        )
        [group] = answer.groups
        return E(group.error_code), [
            FetchedOffset(
                t.name,
                p.partition_index,
                p.committed_offset,
                p.committed_leader_epoch,
                p.metadata,
                E(p.error_code),
            )
            for t in group.topics
            for p in t.partitions
        ]


TopicPartition = tuple[str, int]


def assignment_by_name(
    assignment: Any, names: Mapping[Any, str]
) -> dict[str, frozenset[int]] | None:
    """A heartbeat answer's assignment (topic ids) by topic name; None when it has none.
    Topics unknown here (created since this broker last looked) are left out: the next
    heartbeat brings them again."""
    if assignment is None:
        return None
    return {
        names[tp.topic_id]: frozenset(tp.partitions)
        for tp in assignment.topic_partitions
        if tp.topic_id in names
    }


def _by_topic(partitions: list[TopicPartition]) -> dict[str, list[int]]:
    out: dict[str, list[int]] = {}
    for topic, index in partitions:
        out.setdefault(topic, []).append(index)
    return out


class TxnLink:
    """The transaction calls between brokers (see the module docstring).  A broker that
    cannot be reached, or answers nothing in time, is NOT_COORDINATOR for a verification
    and NOT_LEADER_OR_FOLLOWER for a marker: both retriable."""

    def __init__(self, credentials: Credentials) -> None:
        self._credentials = credentials
        self._pools: dict[tuple[str, int], list[BrokerConnection]] = {}

    def _connection(self, purpose: str, address: BrokerAddress) -> BrokerConnection:
        """An idle connection of ``purpose`` to ``address``, opening up to
        ``CONNECTIONS_PER_BROKER`` so that concurrent calls (one producer's verification
        beside another's) do not queue behind each other; then the least busy one."""
        key = (purpose, address.node_id)
        pool = self._pools.setdefault(key, [])
        if pool and pool[0].address != address:  # restarted elsewhere: new connections
            for connection in pool:
                connection.close()
            pool.clear()
        for connection in pool:
            if not connection.busy:
                return connection
        if len(pool) < CONNECTIONS_PER_BROKER:
            pool.append(BrokerConnection(address, self._credentials))
            return pool[-1]
        return min(pool, key=lambda c: c.waiting)

    def close(self) -> None:
        for pool in self._pools.values():
            for connection in pool:
                connection.close()
        self._pools.clear()

    async def verify(
        self,
        address: BrokerAddress,
        transactional_id: str,
        producer_id: int,
        producer_epoch: int,
        partitions: list[TopicPartition],
    ) -> dict[TopicPartition, ErrorCode]:
        """AddPartitionsToTxn v4 verify-only: the coordinator's answer per partition."""
        request = m.AddPartitionsToTxnRequest(
            transactions=[
                m.AddPartitionsToTxnRequestAddPartitionsToTxnTransaction(
                    transactional_id=transactional_id,
                    producer_id=producer_id,
                    producer_epoch=producer_epoch,
                    verify_only=True,
                    topics=[
                        m.AddPartitionsToTxnRequestAddPartitionsToTxnTopic(name=t, partitions=ps)
                        for t, ps in _by_topic(partitions).items()
                    ],
                )
            ]
        )
        try:
            answer: m.AddPartitionsToTxnResponse = await self._connection("verify", address).call(
                ADD_PARTITIONS_TO_TXN, VERIFY_VERSION, request, FORWARDED_CLIENT_ID
            )
        except GroupCoordinatorError as exc:
            log.debug("verifying with broker %d: %s", address.node_id, exc)
            return dict.fromkeys(partitions, E.NOT_COORDINATOR)
        if answer.error_code != E.NONE:
            return dict.fromkeys(partitions, E(answer.error_code))
        codes = {
            (t.name, p.partition_index): E(p.partition_error_code)
            for txn in answer.results_by_transaction
            for t in txn.topic_results
            for p in t.results_by_partition
        }
        return {tp: codes.get(tp, E.UNKNOWN_SERVER_ERROR) for tp in partitions}

    async def write_markers(
        self,
        address: BrokerAddress,
        producer_id: int,
        producer_epoch: int,
        commit: bool,
        partitions: list[TopicPartition],
        coordinator_epoch: int,
    ) -> dict[TopicPartition, ErrorCode]:
        """WriteTxnMarkers v1 for one transaction: the leader's answer per partition."""
        request = m.WriteTxnMarkersRequest(
            markers=[
                m.WriteTxnMarkersRequestWritableTxnMarker(
                    producer_id=producer_id,
                    producer_epoch=producer_epoch,
                    transaction_result=commit,
                    topics=[
                        m.WriteTxnMarkersRequestWritableTxnMarkerTopic(name=t, partition_indexes=ps)
                        for t, ps in _by_topic(partitions).items()
                    ],
                    coordinator_epoch=coordinator_epoch,
                )
            ]
        )
        try:
            answer: m.WriteTxnMarkersResponse = await self._connection("markers", address).call(
                WRITE_TXN_MARKERS, MARKERS_VERSION, request, FORWARDED_CLIENT_ID
            )
        except GroupCoordinatorError as exc:
            log.debug("markers to broker %d: %s", address.node_id, exc)
            return dict.fromkeys(partitions, E.NOT_LEADER_OR_FOLLOWER)
        codes = {
            (t.name, p.partition_index): E(p.error_code)
            for marker in answer.markers
            for t in marker.topics
            for p in t.partitions
        }
        return {tp: codes.get(tp, E.UNKNOWN_SERVER_ERROR) for tp in partitions}
