"""TieredStorage: the local engine's object-store tier — uploads, deletions, remote reads.

Theory of operation
-------------------
One instance per broker, built from ``--tiered-storage s3://BUCKET/PREFIX?…`` (the object
store's URL, ``storage/objects.py``, plus the tier's own parameters: ``cache_bytes``,
``chunk_bytes``, ``interval_ms``, ``read_timeout_ms``, ``upload_concurrency``).  Objects
are laid out as Kafka's tiered storage lays them out::

    PREFIX/<topic>-<topic id>/<partition>/<20-digit base offset>-<upload id>.log
                                                                   .index .timeindex
                                                                   .txnindex .manifest.json

A background task (``run``) does one round every ``interval_ms``:

1. **Deletions**: the objects of every remote segment marked ``deleting`` (by retention,
   by an abandoned upload, or found ``copying`` at start-up) are deleted, then the entry is
   forgotten; so are the objects of deleted topics (``tiered_deletes.json`` lists their
   prefixes until they are gone).  An upload still running is never deleted under itself.
2. **Uploads**: for each partition of a topic with ``remote.storage.enable``, its closed,
   fsynced segments below the last stable offset (``PartitionLog.upload_candidates``) are
   copied in offset order: the entry is recorded ``copying``, the ``.log`` goes up from its
   file (multipart, read by the store's threads), then the indexes, the aborted-transaction
   index and a manifest (last: a manifest means a complete segment), and only then is the
   entry recorded ``copied``.  A failure marks the entry ``deleting`` (its partial objects
   go in the next round) and backs that partition off, 1 s doubling to 60 s; a retention
   that removed the segment meanwhile does the same.  Partitions upload in parallel, at
   most ``upload_concurrency`` at once; after a round that copied something the log
   maintenance task is woken, so ``local.retention.*`` trims the local copies promptly.

Retention itself stays where it was: the maintenance round's ``delete_old_segments``
judges remote and local segments together (``tiered/retention.py``) and only *marks*
remote segments; their objects go in step 1.

Reads of offsets only the store holds (``OffsetNotLocal`` from the local log) come here:
``read`` serves whole batches of the remote segment holding the offset through the chunk
cache (``reader.py``), bounded by ``read_timeout_ms`` — past it, or while the store is
unreachable, the reader gets ``KAFKA_STORAGE_ERROR``, which clients retry.  Lookups by time
look at the remote-only segments first, then the local ones, as one log.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import logging
import os
import time
import uuid
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

from bayou.errors import InvalidConfig, KafkaStorageError, OffsetOutOfRange
from bayou.log_limits import RateLimitedLog
from bayou.storage.files import read_json, write_json
from bayou.storage.log import PartitionLog
from bayou.storage.manager import LogManager
from bayou.storage.metadata import TopicMeta
from bayou.storage.objects import ObjectStore, ObjectStoreConfig, parse_url
from bayou.storage.segment import LogSegment
from bayou.storage.tiered.cache import CachedRecords, ChunkCache
from bayou.storage.tiered.reader import RemoteReader
from bayou.storage.tiered.remote_segments import (
    SUFFIXES,
    OffsetNotLocal,
    RemoteSegment,
)

log = logging.getLogger(__name__)
T = TypeVar("T")

CACHE_DIR = "tiered-cache"
TOPIC_DELETES_FILE = "tiered_deletes.json"
_MIB = 1024 * 1024
_BACKOFF_S = (1.0, 60.0)


@dataclass(frozen=True)
class TieredSettings:
    """The object store and the tier's own knobs (URL parameters of ``--tiered-storage``)."""

    store: ObjectStoreConfig
    cache_bytes: int = 1024 * _MIB
    chunk_bytes: int = 4 * _MIB
    interval_ms: int = 5_000
    read_timeout_ms: int = 10_000
    upload_concurrency: int = 2

    @classmethod
    def from_url(cls, url: str) -> TieredSettings:
        store = parse_url(url)
        values: dict[str, int] = {}
        for name in ("cache_bytes", "chunk_bytes", "interval_ms", "read_timeout_ms"):
            values[name] = _positive(store.extra, name, url)
        values["upload_concurrency"] = _positive(store.extra, "upload_concurrency", url)
        unknown = sorted(set(store.extra) - set(values))
        if unknown:
            raise InvalidConfig(f"Unknown parameter(s) {', '.join(unknown)} in {store.url!r}")
        present = {k: v for k, v in values.items() if v > 0}
        settings = cls(store, **present)
        if settings.cache_bytes < 4 * settings.chunk_bytes:
            raise InvalidConfig(
                f"Invalid cache_bytes in {store.url!r}: must hold at least 4 chunks "
                f"({4 * settings.chunk_bytes} bytes)"
            )
        return settings


def _positive(extra: Mapping[str, str], name: str, url: str) -> int:
    """The integer parameter ``name`` (0 when absent); at least 1 when given."""
    raw = extra.get(name)
    if raw is None:
        return 0
    try:
        value = int(raw)
    except ValueError:
        value = 0
    if value < 1:
        raise InvalidConfig(f"Invalid {name}={raw!r} in the tiered storage URL {url!r}")
    return value


def topic_prefix(meta: TopicMeta) -> str:
    return f"{meta.name}-{meta.topic_id.hex}/"


class TieredStorage:
    """See the module docstring."""

    def __init__(
        self,
        settings: TieredSettings,
        logs: LogManager,
        data_dir: Path,
        *,
        environ: Mapping[str, str] | None = None,
        on_uploaded: Callable[[], None] | None = None,
    ) -> None:
        self.settings = settings
        self.logs = logs
        self.store = ObjectStore(settings.store, environ)
        self.cache = ChunkCache(data_dir / CACHE_DIR, settings.cache_bytes)
        self.reader = RemoteReader(self.store, self.cache, settings.chunk_bytes)
        self._deletes_path = data_dir / TOPIC_DELETES_FILE
        self._topic_deletes: list[str] = []
        self._on_uploaded = on_uploaded
        self._uploading: dict[str, str] = {}  # upload id → its partition's prefix
        self._backoff: dict[tuple[str, int], tuple[float, float]] = {}  # retry at, delay
        self._wake = asyncio.Event()
        self._rounds = asyncio.Lock()
        self._complaints = RateLimitedLog(log)
        self.uploaded_segments = 0
        self.uploaded_bytes = 0
        self.deleted_segments = 0

    @property
    def location(self) -> str:
        return self.settings.store.url

    # ------------------------------------------------------------------ lifecycle

    async def open(self) -> None:
        await asyncio.to_thread(self._open)

    def _open(self) -> None:
        self.cache.reset()
        with contextlib.suppress(FileNotFoundError):
            self._topic_deletes = list(read_json(self._deletes_path).get("prefixes", []))

    async def run(self) -> None:
        interval = self.settings.interval_ms / 1000
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), interval)
            self._wake.clear()
            try:
                await self.round()
            except Exception:
                log.exception("tiered storage round failed")

    def wake(self) -> None:
        self._wake.set()

    async def close(self) -> None:
        await self.reader.close()

    # ------------------------------------------------------------------ rounds

    def _partitions(self) -> list[tuple[PartitionLog, str]]:
        out = []
        for meta in self.logs.topics().values():
            for p in range(meta.partitions):
                with contextlib.suppress(Exception):
                    out.append((self.logs.partition(meta.name, p), f"{topic_prefix(meta)}{p}/"))
        return out

    async def round(self) -> int:
        """One round now: deletions, then uploads; returns the segments copied."""
        async with self._rounds:
            partitions = self._partitions()
            for log_, prefix in partitions:
                await self._delete_marked(log_, prefix)
            await self._delete_topics()
            todo = [(lg, px) for lg, px in partitions if lg.config.remote_storage_enable]
            gate = asyncio.Semaphore(self.settings.upload_concurrency)

            async def one(log_: PartitionLog, prefix: str) -> int:
                async with gate:
                    return await self._upload_partition(log_, prefix)

            copied = sum(await asyncio.gather(*(one(lg, px) for lg, px in todo)))
        if copied and self._on_uploaded is not None:
            self._on_uploaded()
        return copied

    # ------------------------------------------------------------------ uploads

    async def _upload_partition(self, log_: PartitionLog, prefix: str) -> int:
        key = (log_.topic, log_.index)
        retry_at, delay = self._backoff.get(key, (0.0, 0.0))
        if time.monotonic() < retry_at:
            return 0
        copied = 0
        for _ in range(len(log_.segments)):  # bounded: each pass copies one segment
            candidates = [] if log_.aborting else log_.upload_candidates()
            if not candidates:
                break
            try:
                if not await self._upload(log_, candidates[0], prefix):
                    break
            except Exception as exc:
                delay = min(max(delay * 2, _BACKOFF_S[0]), _BACKOFF_S[1])
                self._backoff[key] = (time.monotonic() + delay, delay)
                self._complaints.log(
                    key,
                    logging.WARNING,
                    "tiered storage: copying %s-%d failed (next try in %.0f s): %s",
                    log_.topic,
                    log_.index,
                    delay,
                    exc,
                )
                return copied
            copied += 1
        self._backoff.pop(key, None)
        return copied

    async def _upload(self, log_: PartitionLog, seg: LogSegment, prefix: str) -> bool:
        """Copy one closed segment; False when it left the log before it could start."""
        prepared = await asyncio.to_thread(_prepare_upload, log_, seg)
        if prepared is None:
            return False
        entry, path, indexes = prepared
        self._uploading[entry.id] = prefix
        try:
            await self.store.put_file(prefix + entry.key(".log"), path)
            for suffix, data in indexes.items():
                if data:
                    await self.store.put(prefix + entry.key(suffix), data)
            manifest = {
                "topic": log_.topic,
                "partition": log_.index,
                **{k: v for k, v in entry.to_json().items() if k != "state"},
            }
            await self.store.put(
                prefix + entry.key(".manifest.json"), json.dumps(manifest, indent=1).encode()
            )
            if not await asyncio.to_thread(_same_size, path, entry.size):
                raise KafkaStorageError(f"{path.name} changed while it was copied")
            done = await asyncio.to_thread(log_.remote.finish, entry.id)
        except BaseException:
            with contextlib.suppress(Exception):
                await asyncio.to_thread(log_.remote.mark_deleting, lambda e: e.id == entry.id)
            raise
        finally:
            del self._uploading[entry.id]
        if done:
            self.uploaded_segments += 1
            self.uploaded_bytes += entry.size
            log.info(
                "tiered storage: copied %s-%d [%d, %d) (%d bytes)",
                log_.topic,
                log_.index,
                entry.base_offset,
                entry.next_offset,
                entry.size,
            )
        return True

    # ------------------------------------------------------------------ deletions

    async def _delete_marked(self, log_: PartitionLog, prefix: str) -> None:
        doomed = [e for e in log_.remote.deleting() if e.id not in self._uploading]
        if not doomed:
            return
        keys = [prefix + e.key(suffix) for e in doomed for suffix in SUFFIXES]
        try:
            await self.store.delete(keys)
        except KafkaStorageError as exc:
            self._complaints.log(
                ("delete", log_.topic, log_.index),
                logging.WARNING,
                "tiered storage: deleting remote segments of %s-%d failed (retried): %s",
                log_.topic,
                log_.index,
                exc,
            )
            return
        ids = [e.id for e in doomed]
        await asyncio.to_thread(log_.remote.forget, ids)
        for segment_id in ids:
            await asyncio.to_thread(self.cache.discard, segment_id)
        self.deleted_segments += len(ids)
        log.info(
            "tiered storage: deleted %d remote segment(s) of %s-%d",
            len(ids),
            log_.topic,
            log_.index,
        )

    async def topic_deleted(self, meta: TopicMeta) -> None:
        """A deleted topic's objects must go (recorded durably, deleted in a round)."""
        prefix = topic_prefix(meta)
        if prefix not in self._topic_deletes:
            self._topic_deletes.append(prefix)
            await asyncio.to_thread(self._save_topic_deletes)
        self.wake()

    def _save_topic_deletes(self) -> None:
        write_json(self._deletes_path, {"prefixes": list(self._topic_deletes)})

    async def _delete_topics(self) -> None:
        for prefix in list(self._topic_deletes):
            if any(p.startswith(prefix) for p in self._uploading.values()):
                continue  # an upload still running would leave objects behind
            try:
                objects = await self.store.list(prefix)
                await self.store.delete([o.key for o in objects])
            except KafkaStorageError as exc:
                self._complaints.log(
                    ("topic", prefix),
                    logging.WARNING,
                    "tiered storage: deleting %s failed (retried): %s",
                    prefix,
                    exc,
                )
                continue
            self._topic_deletes.remove(prefix)
            await asyncio.to_thread(self._save_topic_deletes)
            log.info("tiered storage: deleted the objects of %s (%d)", prefix, len(objects))

    # ------------------------------------------------------------------ reads

    def _prefix(self, log_: PartitionLog) -> str:
        meta = self.logs.topics().get(log_.topic)
        if meta is None:
            raise KafkaStorageError(f"topic {log_.topic} is gone")
        return f"{topic_prefix(meta)}{log_.index}/"

    async def read(
        self,
        log_: PartitionLog,
        offset: int,
        max_bytes: int,
        *,
        min_one: bool = True,
        max_offset: int | None = None,
    ) -> CachedRecords:
        """Whole batches of the remote segment holding ``offset`` (the caller closes them)."""
        seg = log_.remote.find(offset)
        if seg is None or offset < log_.log_start_offset:
            if offset < log_.log_start_offset:
                raise OffsetOutOfRange(
                    f"offset {offset} is below the log start offset {log_.log_start_offset} "
                    f"of {log_.topic}-{log_.index}"
                )
            raise KafkaStorageError(
                f"offset {offset} of {log_.topic}-{log_.index} is neither local nor remote"
            )
        prefix = self._prefix(log_)
        return await self._bounded(
            self.reader.read(prefix, seg, offset, max_bytes, max_offset, min_one)
        )

    async def offset_for_timestamp(
        self, log_: PartitionLog, timestamp: int
    ) -> tuple[int, int] | None:
        """The first record at or after ``timestamp`` in the whole log, remote part first."""
        local_from = log_.local_start_offset
        for _ in range(8):  # bounded: the local start only moves up
            for seg in log_.remote.remote_only(local_from):
                if seg.max_timestamp < timestamp or seg.next_offset <= log_.log_start_offset:
                    continue
                found = await self._bounded(
                    self.reader.offset_for_timestamp(
                        self._prefix(log_), seg, timestamp, log_.log_start_offset
                    )
                )
                if found is not None:
                    return found
            try:
                return await asyncio.to_thread(
                    functools.partial(log_.offset_for_timestamp, timestamp, local_from=local_from)
                )
            except OffsetNotLocal:
                local_from = log_.local_start_offset
        raise KafkaStorageError(f"{log_.topic}-{log_.index} kept moving during a time lookup")

    async def max_timestamp(self, log_: PartitionLog) -> tuple[int, int] | None:
        remote = [
            s
            for s in log_.remote.remote_only(log_.local_start_offset)
            if s.max_timestamp >= 0 and s.next_offset > log_.log_start_offset
        ]
        local_best = max((s.max_timestamp for s in log_.segments), default=-1)
        best: RemoteSegment | None = None
        for seg in remote:
            if best is None or seg.max_timestamp > best.max_timestamp:
                best = seg
        if best is not None and best.max_timestamp >= local_best:
            return await self._bounded(self.reader.max_timestamp(self._prefix(log_), best))
        return await asyncio.to_thread(log_.max_timestamp)

    async def _bounded(self, work: Awaitable[T]) -> T:
        try:
            async with asyncio.timeout(self.settings.read_timeout_ms / 1000):
                return await work
        except TimeoutError:
            raise KafkaStorageError(
                f"reading tiered storage took more than {self.settings.read_timeout_ms} ms"
            ) from None


def _prepare_upload(
    log_: PartitionLog, seg: LogSegment
) -> tuple[RemoteSegment, Path, dict[str, bytes]] | None:
    """Read what an upload needs and record it as started (worker thread); None when the
    segment is no longer in the log."""
    if seg not in log_.segments or not seg.log_path.name.endswith(".log"):
        return None
    try:
        file_time = seg.largest_timestamp()
        indexes = {
            ".index": _read(seg.offset_index.path),
            ".timeindex": _read(seg.time_index.path),
            ".txnindex": _read(seg.txn_index.path),
        }
        if not _same_size(seg.log_path, seg.size):
            return None
    except OSError:
        return None
    entry = RemoteSegment(
        id=uuid.uuid4().hex,
        base_offset=seg.base_offset,
        next_offset=seg.next_offset,
        size=seg.size,
        max_timestamp=seg.max_timestamp,
        offset_of_max_timestamp=seg.offset_of_max_timestamp,
        file_time_ms=file_time,
        index_size=len(indexes[".index"]),
        time_index_size=len(indexes[".timeindex"]),
        txn_index_size=len(indexes[".txnindex"]),
        aborted=tuple(seg.txn_index.entries()),
    )
    log_.remote.add(entry)
    return entry, seg.log_path, indexes


def _read(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except FileNotFoundError:
        return b""


def _same_size(path: Path, size: int) -> bool:
    try:
        return os.stat(path).st_size == size
    except OSError:
        return False
