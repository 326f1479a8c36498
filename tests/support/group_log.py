"""The group coordinator's state log as the local engine keeps it, driven synchronously.

``DATA/internal/__consumer_offsets/0`` is a compacted ``PartitionLog`` of the records
``bayou.core.groups.records`` encodes; the engine appends to it through ``LocalStateLog``.
Tests of compaction and crash recovery drive that log directly — append, fsync, crash,
reopen, clean — with this small synchronous stand-in for the engine's state log.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from bayou.config import TopicConfig, internal_log_config
from bayou.core.groups.records import GroupRecord, decode, encode_key, encode_value
from bayou.core.groups.store import TOPIC
from bayou.protocol.kafka.records import Record, build_batch
from bayou.storage.local_engine import read_state_entries
from bayou.storage.log import PartitionLog


class GroupLog:
    def __init__(
        self, data_dir: Path, clock_ms: Callable[[], int], config: TopicConfig | None = None
    ) -> None:
        self.directory = Path(data_dir) / "internal" / TOPIC / "0"
        self._clock_ms = clock_ms
        self.config = config or internal_log_config()
        self.log: PartitionLog | None = None

    def open(self) -> None:
        self.log = PartitionLog(TOPIC, 0, self.directory, self.config, self._clock_ms)

    def records(self) -> list[GroupRecord]:
        return [decode(e.key, e.value) for e in read_state_entries(self._log())]

    def append(self, records: list[GroupRecord]) -> None:
        now = self._clock_ms()
        self._log().append(
            build_batch([Record(now, encode_key(r.key), encode_value(r)) for r in records])
        )

    def flush(self) -> int:
        return self._log().flush()

    def checkpoint(self) -> None:
        self._log().checkpoint()

    def close(self) -> None:
        if self.log is not None:
            self.log.close()
            self.log = None

    def _log(self) -> PartitionLog:
        if self.log is None:
            raise RuntimeError("group log is not open")
        return self.log
