"""The share coordinator's state log: ``__share_group_state`` in the engine.

Three keys (compact JSON), the last entry of each being the whole truth about it — so the
engine's cleaner may compact everything else away, and replaying a compacted log rebuilds
the same state:

- ``["g", group]``: the group — epoch, members, their subscriptions and assignments;
- ``["p", group, topic, partition]``: a share partition — topic id, the window
  ``[start, end)``, state epoch, the delivery count of every offset not done;
- ``["c", group]``: the group's ``share.*`` configs (set before or after it exists).

A tombstone deletes (DeleteGroups, DeleteShareGroupOffsets).  Each operation's records are
one all-or-nothing batch.  The log is opened *public*: Metadata lists it as an internal
topic, readable (our JSON, not Kafka's binary ShareSnapshot/ShareUpdate records), never
writable by clients.  Durability follows the internal logs' flush policy, as
``__consumer_offsets`` does: a write returns once it reached the OS, so a kill -9 loses
nothing acknowledged.
"""

from __future__ import annotations

import json

from bayou.core.shares.model import ShareRecord
from bayou.storage.engine import StateEntry, StateLog

TOPIC = "__share_group_state"


def encode(record: ShareRecord) -> StateEntry:
    if record.kind == "p":
        parts: list[object] = ["p", record.group_id, record.topic, record.partition]
    else:
        parts = [record.kind, record.group_id]
    key = json.dumps(parts, separators=(",", ":")).encode()
    if record.value is None:
        return StateEntry(key, None)
    return StateEntry(key, json.dumps(record.value, separators=(",", ":")).encode())


def decode(entry: StateEntry) -> ShareRecord:
    """Parse one stored entry; raises ValueError on anything ``encode`` did not write."""
    try:
        key = json.loads(entry.key)
        value = None if entry.value is None else json.loads(entry.value)
        if value is not None and not isinstance(value, dict):
            raise ValueError
        kind = key[0]
        if kind == "p" and len(key) == 4:
            return ShareRecord("p", str(key[1]), str(key[2]), int(key[3]), value)
        if kind in ("g", "c") and len(key) == 2:
            return ShareRecord(kind, str(key[1]), value=value)
        raise ValueError
    except (ValueError, TypeError, IndexError) as exc:
        raise ValueError(f"bad share state entry {entry.key!r}") from exc


class ShareStore:
    def __init__(self, log: StateLog) -> None:
        self.log = log

    async def records(self) -> list[ShareRecord]:
        return [decode(e) for e in await self.log.read_all()]

    async def append(self, records: list[ShareRecord]) -> None:
        await self.log.put([encode(r) for r in records])
