"""LogManager: the data directory — topics, partitions, cluster metadata.

Theory of operation
-------------------
Layout (see ``docs/design/storage.md``)::

    DATA/.lock                          held (flock) by the broker using the directory
    DATA/meta.json                      cluster id, producer-id block high-water mark
    DATA/.clean_shutdown                present only between a clean close and the next open
    DATA/topics/<topic>/topic.json      topic id, partition count, config overrides
    DATA/topics/<topic>/<p>/            one partition: segments, recovery.json,
                                        producer_state.json
    DATA/staging/, DATA/deleted/        in-flight topic creations and deletions
    DATA/internal/<name>/0/             the broker's own compacted logs (not managed here)

Every structural change is made crash-safe by renames: a topic is created in
``staging/<random>/`` and renamed into ``topics/`` once complete; a deleted topic is renamed
into ``deleted/`` first and removed afterwards.  ``open`` wipes both folders, so a crash
leaves a topic either fully present or absent.  New partitions get their directories before
``topic.json`` counts them; directories beyond the count are leftovers and are removed.

Internal topics: the names in ``INTERNAL_TOPICS`` are never created as user topics (every
door creates topics here, so Kafka, HTTP, AMQP and MQTT are all refused alike).  An internal
log the broker opens itself (the group coordinator's ``__consumer_offsets``) is registered
with ``register_internal``: it then has a topic id and is found by ``partition`` and
``topic_by_id`` — so Metadata can show it and Fetch/ListOffsets can read it — but it is not
in ``topics()``, so nothing that changes topics (configs, partitions, deletion, retention)
reaches it.  Writes to it are refused by the engine (its partition handle is read-only).

Producer ids are handed out from blocks of ``PRODUCER_ID_BLOCK``: the end of the current
block is persisted before any id from it is used, and a restart starts at that end, so an
id is never reused.
"""

from __future__ import annotations

import os
import shutil
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

from bayou.config import TopicConfig
from bayou.errors import (
    UnknownTopicOrPartition,
)
from bayou.storage.broker_configs import DynamicBrokerConfigs
from bayou.storage.catalog import TopicCatalog
from bayou.storage.cleaner import CleanStats, clean, needs_cleaning
from bayou.storage.dir_lock import DataDirLock
from bayou.storage.files import fsync_dir, write_atomic
from bayou.storage.log import PartitionLog
from bayou.storage.metadata import (
    ClusterMeta,
    TopicMeta,
    load_topic,
    save_topic,
)
from bayou.storage.pacer import no_pace

PRODUCER_ID_BLOCK = 1000
CLEAN_SHUTDOWN_FILE = ".clean_shutdown"


def wall_clock_ms() -> int:
    return time.time_ns() // 1_000_000


class LogManager(TopicCatalog):
    """All partitions in one data directory (see the module docstring)."""

    def __init__(
        self,
        data_dir: Path,
        defaults: Mapping[str, Any],
        clock_ms: Callable[[], int] = wall_clock_ms,
    ) -> None:
        self.data_dir = Path(data_dir)
        self._init_catalog(defaults)
        self._clock_ms = clock_ms
        self._lock = threading.RLock()
        self._logs: dict[tuple[str, int], PartitionLog] = {}
        self._internal_logs: dict[tuple[str, int], PartitionLog] = {}
        self._cluster = ClusterMeta("")
        self._next_producer_id = 0
        self.cluster_id = ""
        self.opened_cleanly = False
        self._dir_lock: DataDirLock | None = None

    @property
    def _topics_dir(self) -> Path:
        return self.data_dir / "topics"

    # ------------------------------------------------------------------ lifecycle

    def open(self) -> None:
        """Lock the data directory, load metadata and recover every partition.

        Raises ``DataDirectoryInUse`` when another broker holds the directory."""
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self._dir_lock = DataDirLock(self.data_dir)
        try:
            self._open_locked()
        except BaseException:
            self._dir_lock.release()
            raise

    def _open_locked(self) -> None:
        for sub in ("topics", "staging", "deleted"):
            (self.data_dir / sub).mkdir(parents=True, exist_ok=True)
        for sub in ("staging", "deleted"):
            for leftover in (self.data_dir / sub).iterdir():
                shutil.rmtree(leftover, ignore_errors=True)
        marker = self.data_dir / CLEAN_SHUTDOWN_FILE
        clean = marker.exists()
        self._cluster = ClusterMeta.load_or_create(self.data_dir)
        self._dynamic = DynamicBrokerConfigs.load(self.data_dir)
        self.cluster_id = self._cluster.cluster_id
        self._next_producer_id = self._cluster.producer_id_block_end
        for topic_dir in sorted(self._topics_dir.iterdir()):
            meta = load_topic(topic_dir)
            self._register(meta)
            for child in topic_dir.iterdir():
                if child.is_dir() and (
                    not child.name.isdigit() or int(child.name) >= meta.partitions
                ):
                    shutil.rmtree(child)
            for p in range(meta.partitions):
                self._open_partition(meta, p, clean)
        if clean:
            marker.unlink()
            fsync_dir(self.data_dir)
        self.opened_cleanly = clean

    def close(self) -> None:
        """Flush, checkpoint and close every partition; then mark the shutdown clean."""
        with self._lock:
            for log in self._logs.values():
                log.close()
            self._logs.clear()
            write_atomic(self.data_dir / CLEAN_SHUTDOWN_FILE, b"")
            if self._dir_lock is not None:
                self._dir_lock.release()

    def checkpoint(self) -> None:
        """Write recovery checkpoints and producer-state snapshots of flushed data, and
        close the index files of partitions idle since the last call."""
        with self._lock:
            logs = list(self._logs.values())
        for log in logs:
            log.checkpoint()
            log.release_idle_files()

    def partition_count(self) -> int:
        return len(self._logs)

    # ------------------------------------------------------------------ topics

    # topics(), internal_topics(), topic_by_id(), topic_config(): TopicCatalog's, snapshots
    # safe to read while a worker thread changes topics (the maps are replaced, never modified)

    def register_internal(self, log: PartitionLog) -> TopicMeta:
        """Make an internal log (one partition the broker opened itself) readable as the
        internal topic ``log.topic``: found by ``partition`` and ``topic_by_id``, never listed
        in ``topics()``.  Its id is derived from the cluster id and the name, so it is the
        same after a restart.  A user topic of that name created before names were reserved
        keeps the name: the internal log is then not registered."""
        name = log.topic
        topic_id = uuid.uuid5(uuid.NAMESPACE_URL, f"bayou:{self.cluster_id}:{name}")
        meta = TopicMeta(name, topic_id, 1, {})
        with self._lock:
            if name not in self._topics:
                self._internal = {**self._internal, name: meta}
                self._internal_logs[(name, 0)] = log
        return meta

    def unregister_internal(self, name: str) -> None:
        """Forget an internal topic (before its log is closed)."""
        with self._lock:
            self._internal = {k: v for k, v in self._internal.items() if k != name}
            self._internal_logs.pop((name, 0), None)

    def partition(self, topic: str, index: int) -> PartitionLog:
        log = self._logs.get((topic, index)) or self._internal_logs.get((topic, index))
        if log is None:
            raise UnknownTopicOrPartition(f"unknown topic partition {topic}-{index}")
        return log

    get_partition = partition

    def create_topic(
        self,
        name: str,
        partitions: int,
        configs: Mapping[str, str],
        *,
        validate_only: bool = False,
    ) -> TopicMeta:
        """Create a topic (or only check that it could be created)."""
        with self._lock:
            meta, _config = self._new_topic(name, partitions, configs)
            if validate_only:
                return meta
            staging = self.data_dir / "staging" / uuid.uuid4().hex
            staging.mkdir()
            for p in range(partitions):
                (staging / str(p)).mkdir()
            save_topic(staging, meta)
            os.rename(staging, self._topics_dir / name)
            fsync_dir(self._topics_dir)
            for p in range(partitions):  # partitions first: a reader that sees the topic
                self._open_partition(meta, p, False)  # finds every partition of it
            self._register(meta)
            return meta

    def delete_topic(self, name: str) -> None:
        """Delete a topic and its data (rename into ``deleted/``, then remove)."""
        shutil.rmtree(self.detach_topic(name), ignore_errors=True)

    def detach_topic(self, name: str) -> Path:
        """Delete a topic, leaving its files renamed into ``deleted/``: the returned folder is
        the caller's to remove (the broker does it in a worker thread; ``open`` removes any
        that a crash left behind).  Fast: closes files and renames one directory."""
        with self._lock:
            meta = self._known(name)
            for p in range(meta.partitions):
                log = self._logs.pop((name, p), None)
                if log is not None:
                    log.close_without_flush()
            self._unregister(meta)
            target = self.data_dir / "deleted" / f"{name}-{meta.topic_id.hex}"
            os.rename(self._topics_dir / name, target)
            fsync_dir(self._topics_dir)
        return target

    def create_partitions(self, name: str, total: int, *, validate_only: bool = False) -> None:
        """Grow a topic to ``total`` partitions."""
        with self._lock:
            meta = self._known(name)
            new = self._grown_topic(name, total)
            if validate_only:
                return
            topic_dir = self._topics_dir / name
            for p in range(meta.partitions, total):
                shutil.rmtree(topic_dir / str(p), ignore_errors=True)
                (topic_dir / str(p)).mkdir()
            fsync_dir(topic_dir)
            save_topic(topic_dir, new)
            for p in range(meta.partitions, total):
                self._open_partition(new, p, False)
            self._register(new)

    def alter_topic_configs(
        self, name: str, configs: Mapping[str, str], *, validate_only: bool = False
    ) -> TopicMeta:
        """Replace a topic's config overrides (AlterConfigs semantics)."""
        with self._lock:
            new, config = self._altered_topic(name, configs)
            if validate_only:
                return new
            save_topic(self._topics_dir / name, new)
            self._register(new)
            for p in range(new.partitions):
                self._logs[(name, p)].config = config  # applies live
            return new

    # ------------------------------------------------------------------ dynamic broker configs

    def alter_broker_configs(
        self,
        scope: str,
        configs: Mapping[str, Any],
        *,
        validate_only: bool = False,
        options: Mapping[str, Any] | None = None,
    ) -> None:
        """Replace the dynamic topic-config defaults of ``scope`` ("default" for the cluster,
        "broker" for this node) with ``configs`` (topic config names, raw or parsed values);
        every topic without its own override follows at once.  ``options``, when given,
        replaces that scope's other dynamic broker configs (Kafka names, parsed values)."""
        with self._lock:
            dynamic = self._dynamic.altered(
                scope,
                configs,
                options,
                self._static,
                [m.configs for m in self._topics.values()],
            )
            merged = dynamic.defaults(self._static)
            if validate_only:
                return
            dynamic.save(self.data_dir)
            self._dynamic = dynamic
            for (topic, _p), log in self._logs.items():
                log.config = TopicConfig.resolve(merged, self._topics[topic].configs)

    # ------------------------------------------------------------------ retention and cleaning

    def maintain(
        self,
        now: int,
        map_entries: int,
        *,
        cleaner: bool = True,
        internal: Iterable[PartitionLog] = (),
        pace: Callable[[], None] = no_pace,
    ) -> list[tuple[PartitionLog, int, CleanStats | None, Exception | None]]:
        """One retention and cleaning round over every partition (a worker thread calls it),
        then over the ``internal`` logs (the broker's own compacted state logs, which this
        manager does not list: ``LogMaintenance.register``).

        Returns, per partition that did something or failed: (log, segments deleted,
        cleaning stats, error).  One partition's failure does not stop the others.
        """
        with self._lock:
            logs = [*self._logs.values(), *internal]
        report: list[tuple[PartitionLog, int, CleanStats | None, Exception | None]] = []
        for log in logs:
            deleted, stats = 0, None
            try:
                deleted = log.delete_old_segments(now)
                if cleaner and _due(log, now):
                    stats = clean(log, now, map_entries, pace)
            except Exception as exc:  # reported, and tried again next round
                report.append((log, deleted, stats, exc))
                continue
            if deleted or stats is not None:
                report.append((log, deleted, stats, None))
        return report

    # ------------------------------------------------------------------ producer ids

    def allocate_producer_id(self) -> int:
        """A producer id never handed out before, across restarts."""
        with self._lock:
            pid = self._next_producer_id
            if pid >= self._cluster.producer_id_block_end:
                self._cluster.producer_id_block_end = pid + PRODUCER_ID_BLOCK
                self._cluster.save(self.data_dir)
            self._next_producer_id = pid + 1
            return pid

    # ------------------------------------------------------------------ internals

    def _register(self, meta: TopicMeta) -> None:
        # copy-on-write: the event loop iterates these while a worker thread creates topics
        self._topics = {**self._topics, meta.name: meta}
        self._by_id = {**self._by_id, meta.topic_id: meta}

    def _unregister(self, meta: TopicMeta) -> None:
        self._topics = {k: v for k, v in self._topics.items() if k != meta.name}
        self._by_id = {k: v for k, v in self._by_id.items() if k != meta.topic_id}

    def _open_partition(self, meta: TopicMeta, index: int, clean: bool) -> None:
        config = self.resolve_config(meta.configs)
        directory = self._topics_dir / meta.name / str(index)
        self._logs[(meta.name, index)] = PartitionLog(
            meta.name, index, directory, config, self._clock_ms, clean_shutdown=clean
        )


def _due(log: PartitionLog, now: int) -> bool:
    """``needs_cleaning`` under the partition's maintenance lock: ``close`` (which sets
    ``aborting`` first, then takes that lock) cannot close the segment files it reads."""
    with log.maintenance_lock:
        return not log.aborting and needs_cleaning(log, now)
