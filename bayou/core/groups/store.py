"""The coordinator's internal log: the state log ``__consumer_offsets`` of the engine.

One entry batch per operation (all-or-nothing, as the engine appends a batch whole), keys and
values as ``records.py`` encodes them.  It is not a user topic: the engine opens it as a
*public* state log, so Metadata shows it as Kafka's internal ``__consumer_offsets`` and Fetch
can read it, but only the coordinator writes to it.

It is compacted: ``records.py`` keys every record so that "the last entry of every key" is
exactly the state a replay needs, and the engine's cleaner may drop everything else.
Durability follows the log's flush policy (``internal_flush_messages``/``internal_flush_ms``;
the engine owns it): a write returns once it reached the OS — a kill -9 loses nothing
acknowledged — and fsyncs as the policy asks (``internal_flush_messages = 1`` for strict).

Loading replays every entry from the log start in order (a compacted part has offset gaps,
which the engine steps over); it runs before the coordinator serves anything.
"""

from __future__ import annotations

from bayou.core.groups.records import GroupRecord, decode, encode_key, encode_value
from bayou.storage.engine import StateEntry, StateLog

TOPIC = "__consumer_offsets"


class GroupStore:
    def __init__(self, log: StateLog) -> None:
        self.log = log

    async def records(self) -> list[GroupRecord]:
        return [decode(e.key, e.value) for e in await self.log.read_all()]

    async def append(self, records: list[GroupRecord]) -> None:
        await self.log.put([StateEntry(encode_key(r.key), encode_value(r)) for r in records])
