"""The PostgreSQL engine's ``StateStore``: each state log is the one partition of a topic of
kind ``state`` — stored, compacted and announced like any partition, never listed as a
topic; ``read_all`` replays it from the log start, ``put`` appends one batch through the
commit queue (so puts apply in call order, and every put is durable when it returns:
``durable`` adds nothing)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from bayou.errors import KafkaError
from bayou.protocol.kafka.records import Record, build_batch
from bayou.storage.engine import StateEntry, decode_state_entries

if TYPE_CHECKING:
    from bayou.storage.postgres.engine import PostgresEngine
    from bayou.storage.postgres.partition import PgPartition

READ_CHUNK = 4 * 1024 * 1024


class PgStateLog:
    def __init__(self, engine: PostgresEngine, name: str, partition: PgPartition) -> None:
        self._engine = engine
        self._name = name
        self.partition = partition

    @property
    def name(self) -> str:
        return self._name

    async def read_all(self) -> list[StateEntry]:
        p = self.partition
        out: list[StateEntry] = []
        offset = p.log_start_offset
        end = p.log_end_offset
        while offset < end:
            chunk = await p.read(offset, READ_CHUNK)
            if not chunk:
                break
            offset = await self._engine.offload(decode_state_entries, bytes(chunk), offset, out)
        return out

    async def sync(self) -> None:
        await self.partition.refresh()

    async def put(self, entries: Sequence[StateEntry], *, durable: bool = False) -> int:
        if not entries:
            return -1
        now = self._engine.clock_ms()
        batch = build_batch([Record(now, e.key, e.value, list(e.headers)) for e in entries])
        result = (await self._engine.store([(self.partition, batch)]))[0]
        if isinstance(result, KafkaError):
            raise result
        return result.last_offset

    async def close(self) -> None:
        return None


class PgStateStore:
    def __init__(self, engine: PostgresEngine) -> None:
        self._engine = engine

    async def open_log(self, name: str, *, public: bool = False) -> PgStateLog:
        return await self._engine.open_state_log(name, public=public)
