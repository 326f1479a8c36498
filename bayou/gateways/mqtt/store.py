"""Durable MQTT state (retained messages, persistent sessions) in internal compacted logs.

``StateLog`` uses one internal partition log, ``DATA/internal/<name>/0/`` (not a user topic:
Metadata, Fetch and the CLI cannot see it, like the group coordinator's offsets log), as a
key-value store, the way Kafka keeps consumer offsets: a write appends one batch of
(key, value, headers) records — value ``None`` is a tombstone — and waits for a
group-committed fsync; loading replays the log keeping the last value per key.  Every
record is keyed (retained: the MQTT topic; sessions: the client id) and a deletion is a
tombstone, so "last record per key" is exactly the state: the log is created with
``internal_log_config`` (``cleanup.policy=compact``, 16 MiB segments) and the gateway
registers it with the broker's log maintenance task, whose cleaner compacts it in a worker
thread while ``put`` appends on the event loop.  ``load`` runs before it is registered.

Kept behind this small interface (``open`` / ``load`` / ``put`` / ``close``) so that session
positions can move to the group coordinator's offset store without touching the gateway.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

from bayou.config import TopicConfig, internal_log_config
from bayou.protocol.kafka.records import Record, build_batch, iter_batches, iter_records
from bayou.storage import PartitionLog
from bayou.storage.flusher import GroupFlusher

RETAINED_LOG = "__mqtt_retained"
SESSIONS_LOG = "__mqtt_sessions"
_READ_CHUNK = 4 * 1024 * 1024

Entry = tuple[bytes, bytes | None, list[tuple[str, bytes | None]]]


class StateLog:
    def __init__(self, data_dir: Path, name: str, flusher: GroupFlusher,
                 clock_ms: Callable[[], int], config: TopicConfig | None = None) -> None:
        self.name = name
        self.directory = Path(data_dir) / "internal" / name / "0"
        self.flusher = flusher
        self.clock_ms = clock_ms
        self.config = config or internal_log_config()
        self.log: PartitionLog | None = None

    def open(self) -> None:
        """Open (recovering) the log: blocking, call from a worker thread."""
        self.log = PartitionLog(self.name, 0, self.directory, self.config, self.clock_ms)

    def close(self) -> None:
        if self.log is not None:
            self.log.close()
            self.log = None

    def load(self) -> dict[bytes, Entry]:
        """The last (key, value, headers) per key; tombstoned keys are absent."""
        log = self._log()
        latest: dict[bytes, Entry] = {}
        offset = log.log_start_offset
        while offset < log.log_end_offset:
            data = log.read(offset, _READ_CHUNK)
            if not data:
                break
            view = memoryview(data)
            for pos, header in iter_batches(view):
                for rec in iter_records(view[pos : pos + header.size]):
                    if rec.offset < offset or rec.key is None:
                        continue
                    if rec.value is None:
                        latest.pop(rec.key, None)
                    else:
                        latest[rec.key] = (rec.key, rec.value, rec.headers)
                offset = max(offset, header.last_offset + 1)
        return latest

    async def put(self, entries: Sequence[Entry]) -> None:
        """Append the entries as one batch and wait until they are fsynced."""
        if not entries or self.log is None:
            return
        ts = self.clock_ms()
        self.log.append(build_batch([Record(ts, k, v, h) for k, v, h in entries]))
        await self.flusher.flush(self.log)

    def _log(self) -> PartitionLog:
        if self.log is None:
            raise RuntimeError(f"MQTT state log {self.name} is not open")
        return self.log
