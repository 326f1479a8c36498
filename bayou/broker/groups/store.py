"""The coordinator's internal log: ``DATA/internal/__consumer_offsets/0/``, a PartitionLog.

One record batch per operation (its records all-or-nothing, as the storage appends a batch
whole), keys and values as ``records.py`` encodes them.  It is not a user topic: LogManager
never lists it among the topics; the broker registers it as the internal topic
``__consumer_offsets`` (``LogManager.register_internal``), so Metadata shows it and a
consumer can read it, and nothing else can write it.

It is compacted (``internal_log_config``: ``cleanup.policy=compact``, 16 MiB segments): the
broker registers it with the log maintenance task, whose cleaner keeps the last record of
every key in its closed segments and drops tombstones ``delete.retention.ms`` after they
were first cleaned.  ``records.py`` keys every record so that this is exactly the state a
replay needs; the cleaner runs in a worker thread while the driver appends here.

Loading reads every batch from the log start and decodes its records in order (a compacted
part has offset gaps, which ``read`` steps over).  The storage layer's recovery has already
cut a torn tail and finished or rolled back an interrupted cleaning swap, so a kill -9 loses
nothing acknowledged (every write reached the OS before its answer; with the strict flush
policy the driver also fsyncs before it answers, so a power cut loses nothing either).  Loading
runs before the maintenance task starts: a cleaner pass never overlaps it.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

from bayou.broker.groups.records import GroupRecord, decode, encode_key, encode_value
from bayou.config import TopicConfig, internal_log_config
from bayou.protocol.kafka.records import Record, build_batch, iter_batches, iter_records
from bayou.storage import PartitionLog

TOPIC = "__consumer_offsets"
READ_CHUNK = 1 << 20


class GroupStore:
    def __init__(self, data_dir: Path, clock_ms: Callable[[], int],
                 config: TopicConfig | None = None) -> None:
        self.directory = Path(data_dir) / "internal" / TOPIC / "0"
        self._clock_ms = clock_ms
        self.config = config or internal_log_config()
        self.log: PartitionLog | None = None

    def open(self) -> None:
        self.log = PartitionLog(TOPIC, 0, self.directory, self.config, self._clock_ms)

    def records(self) -> Iterator[GroupRecord]:
        log = self._log()
        offset = log.log_start_offset
        end = log.log_end_offset
        while offset < end:
            chunk = log.read(offset, READ_CHUNK)
            if not chunk:
                break
            view = memoryview(chunk)
            for pos, header in iter_batches(view):
                for rec in iter_records(view[pos : pos + header.size]):
                    if rec.key is not None:
                        yield decode(rec.key, rec.value)
                offset = header.last_offset + 1

    def append(self, records: list[GroupRecord]) -> None:
        now = self._clock_ms()
        batch = build_batch(
            [Record(timestamp=now, key=encode_key(r.key), value=encode_value(r)) for r in records]
        )
        self._log().append(batch)

    def needs_flush(self, now_ms: int) -> bool:
        """Whether the log's flush.messages/flush.ms (or a segment roll) call for an fsync."""
        return self._log().needs_flush(now_ms)

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
            raise RuntimeError("group store is not open")
        return self.log
