"""The transaction coordinator's state log: ``__transaction_state`` in the engine.

One key per transactional id (``["t", id]``, compact JSON) whose value is the id's whole
metadata after its last transition (``TxnMetadata.to_value``), or a tombstone once the id
expired — so the last entry of every key is the state, and the engine's cleaner may compact
away everything else.  Each operation's records are one all-or-nothing batch.  The log is
opened *public*: Metadata lists ``__transaction_state`` as an internal topic of one
partition, readable (our JSON, not Kafka's binary schema) and never writable by clients.

Durability follows the internal logs' flush policy, as for ``__consumer_offsets``: a write
returns once it reached the OS (a kill -9 loses nothing acknowledged), fsynced as
``internal_flush_messages``/``internal_flush_ms`` ask.
"""

from __future__ import annotations

import json

from bayou.core.transactions.model import TxnMetadata, TxnRecord
from bayou.storage.engine import StateEntry, StateLog

TOPIC = "__transaction_state"


def encode(record: TxnRecord) -> StateEntry:
    key = json.dumps(["t", record.transactional_id], separators=(",", ":")).encode()
    if record.value is None:
        return StateEntry(key, None)
    value = json.dumps(record.value.to_value(), separators=(",", ":"), sort_keys=True)
    return StateEntry(key, value.encode())


def decode(entry: StateEntry) -> TxnRecord:
    """Parse one stored entry; raises ValueError on anything ``encode`` did not write."""
    try:
        kind, tid = json.loads(entry.key)
        if kind != "t" or not isinstance(tid, str):
            raise ValueError
        if entry.value is None:
            return TxnRecord(tid, None)
        value = json.loads(entry.value)
        return TxnRecord(tid, TxnMetadata.from_value(tid, value))
    except (ValueError, TypeError, KeyError) as exc:
        raise ValueError(f"bad transaction state entry {entry.key!r}") from exc


class TxnStore:
    def __init__(self, log: StateLog) -> None:
        self.log = log

    async def records(self) -> list[TxnRecord]:
        return [decode(e) for e in await self.log.read_all()]

    async def append(self, records: list[TxnRecord]) -> None:
        await self.log.put([encode(r) for r in records])
