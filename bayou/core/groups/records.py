"""The coordinator's records: what is written to the internal log and replayed on start.

Three kinds of key, as in Kafka's ``__consumer_offsets`` (our own encoding, not Kafka's):

- ``OffsetKey(group, topic, partition)`` → ``OffsetValue`` (a committed offset) or ``None``
  (a tombstone: the offset was deleted or expired);
- ``GroupKey(group)`` → a group snapshot (``dict``: a classic group's metadata after a
  completed generation, or a consumer group's whole state) or ``None`` (the group is gone);
- ``PendingKey(producer_id, group, topic, partition)`` → ``OffsetValue`` (an offset committed
  inside producer ``producer_id``'s transaction, TxnOffsetCommit, KIP-447 — visible only once
  the transaction commits) or ``None`` (the transaction ended).  Kafka writes these as
  transactional records of the offset key; a key of their own keeps "the last record of a
  key is the truth" for the log cleaner.

The latest value of a key is the whole truth about it, so the log can be compacted by key.
Keys and values are compact JSON: the log is small and this keeps it readable with any tool.
Bytes inside snapshots (subscriptions, assignments) are base64.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class OffsetKey:
    group: str
    topic: str
    partition: int


@dataclass(frozen=True)
class GroupKey:
    group: str


@dataclass(frozen=True)
class PendingKey:
    producer_id: int
    group: str
    topic: str
    partition: int


@dataclass(frozen=True)
class OffsetValue:
    offset: int
    leader_epoch: int
    metadata: str | None
    commit_ms: int
    expire_ms: int | None = None  # an explicit retention (OffsetCommit v2-v4), else None


Key = OffsetKey | GroupKey | PendingKey
Value = OffsetValue | dict[str, Any] | None


@dataclass(frozen=True)
class GroupRecord:
    key: Key
    value: Value


def encode_key(key: Key) -> bytes:
    if isinstance(key, OffsetKey):
        return _dump(["o", key.group, key.topic, key.partition])
    if isinstance(key, PendingKey):
        return _dump(["p", key.producer_id, key.group, key.topic, key.partition])
    return _dump(["g", key.group])


def encode_value(record: GroupRecord) -> bytes | None:
    value = record.value
    if value is None:
        return None
    if isinstance(value, OffsetValue):
        return _dump(
            {
                "offset": value.offset,
                "epoch": value.leader_epoch,
                "metadata": value.metadata,
                "commit_ms": value.commit_ms,
                "expire_ms": value.expire_ms,
            }
        )
    return _dump(value)


def decode(key: bytes, value: bytes | None) -> GroupRecord:
    """Parse one stored record; raises ValueError on anything not written by ``encode_*``."""
    parsed = json.loads(key)
    if not isinstance(parsed, list) or not parsed:
        raise ValueError(f"bad group record key {key!r}")
    if (parsed[0] == "o" and len(parsed) == 4) or (parsed[0] == "p" and len(parsed) == 5):
        okey: OffsetKey | PendingKey = (
            OffsetKey(str(parsed[1]), str(parsed[2]), int(parsed[3]))
            if parsed[0] == "o"
            else PendingKey(int(parsed[1]), str(parsed[2]), str(parsed[3]), int(parsed[4]))
        )
        if value is None:
            return GroupRecord(okey, None)
        v = json.loads(value)
        return GroupRecord(
            okey,
            OffsetValue(
                int(v["offset"]),
                int(v["epoch"]),
                v["metadata"],
                int(v["commit_ms"]),
                None if v.get("expire_ms") is None else int(v["expire_ms"]),
            ),
        )
    if parsed[0] == "g" and len(parsed) == 2:
        gkey = GroupKey(str(parsed[1]))
        if value is None:
            return GroupRecord(gkey, None)
        snapshot = json.loads(value)
        if not isinstance(snapshot, dict):
            raise ValueError(f"bad group snapshot for {gkey.group!r}")
        return GroupRecord(gkey, snapshot)
    raise ValueError(f"bad group record key {key!r}")


def _dump(obj: Any) -> bytes:
    return json.dumps(obj, separators=(",", ":"), sort_keys=True).encode()
