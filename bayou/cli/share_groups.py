"""Share groups (KIP-932) for ``bayou group list|describe``.

confluent-kafka's admin client has no share-group calls, so the CLI asks the broker itself,
with Bayou's own Kafka codec over one connection: ListGroups (type ``share``),
ShareGroupDescribe and DescribeShareGroupOffsets (start offset and lag per partition).  The
records in flight (delivered, not yet acknowledged, or waiting to be delivered again) are
not in any Kafka API: they are read from the share coordinator's state log
``__share_group_state``, which the broker publishes read-only, as ``kafka-share-groups``
would read Kafka's.
"""

from __future__ import annotations

import socket
import struct
from dataclasses import dataclass, field
from typing import Any

from confluent_kafka import Consumer, KafkaException, TopicPartition

from bayou.cli._common import CliError, Connection, bootstrap_addresses
from bayou.core.shares.store import TOPIC as STATE_LOG
from bayou.core.shares.store import decode
from bayou.errors import ErrorCode
from bayou.protocol.kafka import RequestHeader, decode_response, encode_request
from bayou.protocol.kafka import messages as m
from bayou.storage.engine import StateEntry

LIST_GROUPS, SHARE_GROUP_DESCRIBE, DESCRIBE_SHARE_GROUP_OFFSETS = 16, 77, 90
SHARE = "share"


@dataclass
class SharePartitionView:
    topic: str
    partition: int
    start_offset: int
    lag: int
    in_flight: int | None = None
    members: list[str] = field(default_factory=list)


@dataclass
class ShareGroupView:
    group_id: str
    state: str
    epoch: int
    assignor: str
    members: list[dict[str, Any]]
    partitions: list[SharePartitionView]


def _call(conn: Connection, api_key: int, version: int, request: Any) -> Any:
    """One request to the first bootstrap broker; its decoded response."""
    host, port = bootstrap_addresses(conn.bootstrap)[0]
    frame = encode_request(RequestHeader(api_key, version, 1, "bayou-cli"), request)
    try:
        with socket.create_connection((host, port), timeout=conn.timeout) as sock:
            sock.sendall(frame)
            size = struct.unpack(">i", _read(sock, 4))[0]
            _cid, response = decode_response(api_key, version, _read(sock, size))
    except OSError:
        raise conn.unreachable() from None
    return response


def _read(sock: socket.socket, n: int) -> bytes:
    out = bytearray()
    while len(out) < n:
        chunk = sock.recv(n - len(out))
        if not chunk:
            raise ConnectionError("closed")
        out += chunk
    return bytes(out)


def list_share_groups(conn: Connection) -> list[tuple[str, str]]:
    """(group id, state) of every share group."""
    resp = _call(conn, LIST_GROUPS, 5, m.ListGroupsRequest(types_filter=[SHARE]))
    if resp.error_code != ErrorCode.NONE:
        raise CliError(f"Listing share groups failed: {ErrorCode(resp.error_code).name}")
    return sorted((g.group_id, g.group_state) for g in resp.groups if g.group_type == SHARE)


def offsets(conn: Connection, name: str) -> dict[tuple[str, int], tuple[int, int]]:
    """(start offset, lag) of every partition the share group has state for."""
    request = m.DescribeShareGroupOffsetsRequest(
        groups=[m.DescribeShareGroupOffsetsRequestGroup(group_id=name, topics=None)]
    )
    resp = _call(conn, DESCRIBE_SHARE_GROUP_OFFSETS, 1, request)
    out: dict[tuple[str, int], tuple[int, int]] = {}
    for g in resp.groups:
        for t in g.topics:
            for p in t.partitions:
                out[(t.topic_name, p.partition_index)] = (p.start_offset, p.lag)
    return out


def in_flight(conn: Connection, name: str) -> dict[tuple[str, int], int]:
    """Records in flight per partition, from the latest state of each share partition."""
    consumer = Consumer(
        conn.client_config(**{"group.id": "bayou-cli-share-state", "enable.auto.commit": False})
    )
    latest: dict[bytes, bytes | None] = {}
    try:
        low, high = consumer.get_watermark_offsets(
            TopicPartition(STATE_LOG, 0), timeout=conn.timeout
        )
        if high > low:
            consumer.assign([TopicPartition(STATE_LOG, 0, low)])
            position = low
            for _ in range(10_000):
                if position >= high:
                    break
                batch = consumer.consume(min(1000, high - position), conn.timeout)
                if not batch:
                    break
                for msg in batch:
                    offset = msg.offset()
                    if msg.error() is None and offset is not None:
                        latest[msg.key() or b""] = msg.value()
                        position = offset + 1
    except KafkaException:
        return {}
    finally:
        consumer.close()
    out: dict[tuple[str, int], int] = {}
    for key, value in latest.items():
        try:
            record = decode(StateEntry(key, value))
        except ValueError:
            continue
        if record.kind == "p" and record.group_id == name and record.value is not None:
            ranges = record.value.get("ranges", [])
            out[(record.topic, record.partition)] = sum(
                last - first + 1 for first, last, _ in ranges
            )
    return out


def describe_share_group(conn: Connection, name: str) -> ShareGroupView | None:
    """The share group ``name``; None when there is no share group of that name."""
    resp = _call(conn, SHARE_GROUP_DESCRIBE, 1, m.ShareGroupDescribeRequest(group_ids=[name]))
    described = resp.groups[0] if resp.groups else None
    if described is None or described.error_code == ErrorCode.GROUP_ID_NOT_FOUND:
        return None
    if described.error_code != ErrorCode.NONE:
        raise CliError(
            f"Describing share group '{name}' failed: {ErrorCode(described.error_code).name}"
        )
    owners: dict[tuple[str, int], list[str]] = {}
    members = []
    for mem in described.members:
        parts = sorted(
            (tp.topic_name, p) for tp in mem.assignment.topic_partitions for p in tp.partitions
        )
        for tp in parts:
            owners.setdefault(tp, []).append(mem.member_id)
        members.append(
            {
                "member_id": mem.member_id,
                "client_id": mem.client_id,
                "host": mem.client_host,
                "epoch": mem.member_epoch,
                "partitions": [f"{t}-{p}" for t, p in parts],
            }
        )
    known = offsets(conn, name)
    flying = in_flight(conn, name)
    partitions = [
        SharePartitionView(t, p, start, lag, flying.get((t, p)), sorted(owners.get((t, p), [])))
        for (t, p), (start, lag) in sorted(known.items())
    ]
    return ShareGroupView(
        name,
        described.group_state,
        described.group_epoch,
        described.assignor_name,
        members,
        partitions,
    )
