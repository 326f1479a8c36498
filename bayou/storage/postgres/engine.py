"""The PostgreSQL engine (``postgres://user@host:port/db``): every topic, batch and piece of
state in one PostgreSQL database, so a broker keeps nothing of its own on disk.

Theory of operation
-------------------
``PostgresEngine`` is the ``LogEngine`` and ``StateStore`` the core sees.  What it keeps in
memory is a cache that it keeps true, never the truth:

* **the catalog** — topics (their ids, partition counts, configs), the dynamic broker
  configs, and one ``PgPartition`` per partition with its ``PartitionState`` (offsets,
  size).  It is loaded at ``open`` (one REPEATABLE READ snapshot), updated by this broker's
  own changes once they commit, and by other brokers' through ``notify.Listener``: a
  partition's new state comes in the notification; a topic or config change makes the
  catalog reload (``_reload``, coalesced: one at a time, once more if asked meanwhile).
  Admin changes and reloads hold ``_catalog_lock``, so a reload never undoes a change this
  broker just made.  After the listener lost its connection the whole catalog is reloaded
  and every waiter woken (notifications sent meanwhile are lost).
* **producer ids** — handed out from blocks of ``PRODUCER_ID_BLOCK`` reserved in the
  ``cluster`` row before use, so no id is ever handed out twice, by any broker.

Appends, markers and state-log puts go through the commit queue (``writer.py``); reads and
lookups are queries (``partition.py``); retention and compaction run in the engine's
background task (``maintenance.py``).  State logs are partitions of topics of kind
``state``: read, appended, compacted and announced exactly like a topic's partition, never
listed as topics; opened as public (``__consumer_offsets``) they are readable as internal
topics.

Durability is PostgreSQL's: an append returns once its transaction committed, which with
PostgreSQL's default ``synchronous_commit`` means the WAL is flushed (and replicated, when
the database is configured so).  ``flush.messages``/``flush.ms`` have nothing to add.

``open`` creates or migrates the schema (``schema.py``); a database that cannot be reached
at start is a startup error (one line: the broker exits), an outage later is a retriable
error per request while the pool reconnects.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
import uuid
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any, TypeVar

import psycopg
from psycopg_pool import PoolTimeout

from bayou.config import TopicConfig, parse_topic_configs
from bayou.errors import (
    InvalidConfig,
    InvalidPartitions,
    InvalidTopic,
    KafkaError,
    TopicAlreadyExists,
    UnknownTopicOrPartition,
)
from bayou.storage.append import check_payload
from bayou.storage.broker_configs import DynamicBrokerConfigs
from bayou.storage.catalog import TopicCatalog
from bayou.storage.engine import AppendResult, Buffer, MaintenanceReport, PartitionKey
from bayou.storage.maintenance import MaintenanceSettings
from bayou.storage.metadata import TopicMeta, check_new_topic, new_cluster_id
from bayou.storage.postgres.db import Connection, Database, redacted, storage_error
from bayou.storage.postgres.maintenance import PgMaintenance
from bayou.storage.postgres.notify import (
    CHANNEL,
    Listener,
    PartitionState,
    configs_payload,
    parse,
    topics_payload,
)
from bayou.storage.postgres.partition import PgPartition, restore_producers
from bayou.storage.postgres.schema import migrate
from bayou.storage.postgres.state import PgStateLog, PgStateStore
from bayou.storage.postgres.writer import Write, Writer
from bayou.storage.waiters import DataWaiters

log = logging.getLogger(__name__)

T = TypeVar("T")
PRODUCER_ID_BLOCK = 1000
OPEN_TIMEOUT_S = 10.0
_UNKNOWN_MAX = 10_000  # notifications kept for partitions not loaded yet

_PARTITION_COLUMNS = """p.id, p.topic_id, p.index, p.leader_epoch, p.version,
    p.log_start_offset, p.next_offset, p.first_unstable_offset, p.size_bytes, p.has_aborted"""

_PRODUCERS = """SELECT partition_id, producer_id, epoch, batches, txn_first_offset,
    coordinator_epoch, last_timestamp FROM bayou.producers"""


def wall_clock_ms() -> int:
    return time.time_ns() // 1_000_000


def _fresh() -> PartitionState:
    return PartitionState(0, 0, 0, -1, 0, False)


class PostgresEngine(TopicCatalog):
    """The ``LogEngine`` on one PostgreSQL database (see the module docstring)."""

    kind = "postgres"
    #: the handle of a topic's partition (the object-storage engine reads batches its way)
    partition_class: type[PgPartition] = PgPartition

    def __init__(
        self,
        url: str,
        topic_defaults: Mapping[str, Any] | None = None,
        *,
        internal_config: TopicConfig,
        maintenance: MaintenanceSettings,
        node_id: int = 0,
        clock_ms: Callable[[], int] = wall_clock_ms,
    ) -> None:
        self.location = redacted(url)
        self.clock_ms = clock_ms
        self.node_id = node_id
        self.db = Database(url)
        self.sender = uuid.uuid4().hex[:12]  # names this engine in its notifications
        #: new partition handles are fenced by the epoch they hold (the cluster layer turns
        #: this off: it fences the partitions it leads and lets the others' writes through)
        self.fence_appends = True
        #: the cluster layer's: topics, leaders or brokers changed (it looks again)
        self.on_topics_changed: Callable[[], None] | None = None
        self.internal_config = internal_config
        self.waiters = DataWaiters()
        self.writer = Writer(self)
        self.maintenance = PgMaintenance(self, maintenance)
        self._listener = Listener(url, self._on_notify, self._resync, self.db.connect_kwargs)
        self._init_catalog(topic_defaults)
        self._cluster_id = ""
        self._partitions: dict[PartitionKey, PgPartition] = {}
        self._by_pid: dict[int, PgPartition] = {}
        self._state_logs: dict[str, PgStateLog] = {}
        self._unknown: dict[int, PartitionState] = {}
        self._state = PgStateStore(self)
        self._catalog_lock = asyncio.Lock()
        self._reloading: asyncio.Task[None] | None = None
        self._reload_again = False
        self._ids: Iterable[int] = iter(())
        self._ids_lock = asyncio.Lock()
        self._tasks: list[asyncio.Task[None]] = []

    # ------------------------------------------------------------------ lifecycle

    @property
    def cluster_id(self) -> str:
        return self._cluster_id

    def storage_usage(self) -> tuple[int, int]:
        return -1, -1

    @property
    def state(self) -> PgStateStore:
        return self._state

    async def open(self) -> None:
        try:
            await self.db.open(OPEN_TIMEOUT_S)
            async with self.db.connection("opening the database") as conn:
                await migrate(conn)
                await conn.execute(
                    "INSERT INTO bayou.cluster (cluster_id) VALUES (%s) ON CONFLICT DO NOTHING",
                    (new_cluster_id(),),
                )
                cur = await conn.execute("SELECT cluster_id, object_store FROM bayou.cluster")
                row = await cur.fetchone()
                assert row is not None
                self._cluster_id = row[0]
                await self.check_database(conn, row[1])
            await self._listener.start()
            async with self._catalog_lock:
                await self._load(producers=True)
        except (PoolTimeout, psycopg.Error, KafkaError) as exc:
            await self._listener.close()
            await self.db.close()
            reason = str(exc).strip().splitlines()[0] if str(exc).strip() else repr(exc)
            raise InvalidConfig(f"cannot use PostgreSQL at {self.location}: {reason}") from None

    async def check_database(self, conn: Connection, object_store: str | None) -> None:
        """Refuse a database whose batches live in object storage (``s3://`` engine's)."""
        if object_store is not None:
            raise InvalidConfig(
                f"the database keeps its record batches in {object_store}: start the broker "
                f"with --storage '{object_store}?metadata=…'"
            )

    async def start(self) -> None:
        self._tasks = [asyncio.create_task(self.maintenance.run())]

    async def close(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks = []
        await self.writer.close()
        if self._reloading is not None:
            self._reloading.cancel()
            await asyncio.gather(self._reloading, return_exceptions=True)
        await self._listener.close()
        await self.db.close()
        self.wake_all()

    async def offload(self, fn: Callable[..., T], *args: Any) -> T:
        """CPU work (decoding batches) off the event loop."""
        return await asyncio.to_thread(fn, *args)

    # ------------------------------------------------------------------ the catalog

    async def _load(self, *, producers: bool = False) -> None:
        """Read the catalog (one snapshot) and make the cache match it (hold the lock)."""
        async with self.db.connection("loading topics") as conn, conn.transaction():
            await conn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ")
            cur = await conn.execute(
                "SELECT scope, configs, options FROM bayou.broker_configs WHERE scope IN "
                "('default', %s)",
                (self._node_scope,),
            )
            config_rows = await cur.fetchall()
            cur = await conn.execute(
                "SELECT topic_id, kind, name, partitions, configs FROM bayou.topics"
            )
            topic_rows = await cur.fetchall()
            cur = await conn.execute(f"SELECT {_PARTITION_COLUMNS} FROM bayou.partitions p")
            partition_rows = await cur.fetchall()
            producer_rows: list[tuple[Any, ...]] = []
            if producers:
                cur = await conn.execute(_PRODUCERS)
                producer_rows = await cur.fetchall()
        self._apply_configs(config_rows)
        self._apply_catalog(topic_rows, partition_rows)
        if self.on_topics_changed is not None:
            self.on_topics_changed()
        if producers:
            known = dict(self._by_pid)
            rows = [r for r in producer_rows if r[0] in known]
            restore_producers(known, list(known), rows)
            for p in known.values():
                p.producers_at = p.state.next_offset

    @property
    def _node_scope(self) -> str:
        return f"node:{self.node_id}"

    def _apply_configs(self, rows: Iterable[tuple[Any, ...]]) -> None:
        scopes = {scope: (configs, options) for scope, configs, options in rows}
        default = scopes.get("default", ({}, {}))
        broker = scopes.get(self._node_scope, ({}, {}))
        self._dynamic = DynamicBrokerConfigs.from_doc(
            {
                "default": default[0],
                "broker": broker[0],
                "options": {"default": default[1], "broker": broker[1]},
            }
        )

    def _apply_catalog(
        self, topic_rows: Iterable[tuple[Any, ...]], partition_rows: Iterable[tuple[Any, ...]]
    ) -> None:
        topics: dict[str, TopicMeta] = {}
        by_id: dict[uuid.UUID, TopicMeta] = {}
        for topic_id, kind, name, count, configs in topic_rows:
            if kind == "topic":
                meta = TopicMeta(name, topic_id, count, parse_topic_configs(configs))
                topics[name] = meta
                by_id[topic_id] = meta
        rows_by_pid = {row[0]: row for row in partition_rows}
        current: dict[PartitionKey, PgPartition] = {}
        for pid, topic_id, index, epoch, *state in rows_by_pid.values():
            found = by_id.get(topic_id)
            if found is None or index >= found.partitions:
                continue
            meta = found
            key = (meta.name, index)
            handle = self._partitions.get(key)
            config = self.resolve_config(meta.configs)
            if handle is None or handle.id != pid:
                handle = self.partition_class(self, pid, meta.name, index, config, _fresh(), epoch)
                pending = self._unknown.pop(pid, None)
                if pending is not None:
                    handle.apply(pending)
            handle.config = config
            handle.apply(PartitionState(*state))
            current[key] = handle
        for key, handle in self._partitions.items():
            if current.get(key) is not handle:
                self._drop(handle)
        for handle in current.values():
            self._by_pid[handle.id] = handle
        for state_log in self._state_logs.values():
            row = rows_by_pid.get(state_log.partition.id)
            if row is not None:
                state_log.partition.apply(PartitionState(*row[4:]))
        self._partitions = current
        self._topics = topics
        self._by_id = by_id
        self._unknown.clear()

    def _drop(self, handle: PgPartition) -> None:
        handle.closed = True
        self._by_pid.pop(handle.id, None)
        self.waiters.notify(handle.topic, handle.index)

    def _on_notify(self, payload: str) -> None:
        sender, kind, states = parse(payload)
        if sender == self.sender:
            return
        if kind == "P":
            for pid, state in states:
                handle = self._by_pid.get(pid)
                if handle is not None:
                    handle.apply(state)
                else:  # a partition this broker has not loaded yet: kept for the reload
                    if len(self._unknown) >= _UNKNOWN_MAX:
                        self._unknown.clear()
                    known = self._unknown.get(pid)
                    if known is None or known.version < state.version:
                        self._unknown[pid] = state
        elif kind in ("T", "C"):
            self._schedule_reload()
        elif kind == "L" and self.on_topics_changed is not None:
            self.on_topics_changed()  # the cluster layer looks again at once

    def _schedule_reload(self) -> None:
        if self._reloading is not None and not self._reloading.done():
            self._reload_again = True
            return
        self._reloading = asyncio.create_task(self._reload())

    async def _reload(self) -> None:
        while True:
            self._reload_again = False
            try:
                async with self._catalog_lock:
                    await self._load()
            except Exception as exc:
                log.warning("reloading topics failed: %s", exc)
                await asyncio.sleep(0.5)
                self._reload_again = True
            if not self._reload_again:
                return

    async def _resync(self) -> None:
        """The listener reconnected: notifications may have been lost."""
        self._schedule_reload()
        self.wake_all()

    async def _announce(self, conn: Connection, payload: str) -> None:
        await conn.execute("SELECT pg_notify(%s, %s)", (CHANNEL, payload))

    # ------------------------------------------------------------------ topics

    def _register(self, meta: TopicMeta, handles: Iterable[PgPartition] = ()) -> None:
        self._topics = {**self._topics, meta.name: meta}
        self._by_id = {**self._by_id, meta.topic_id: meta}
        for handle in handles:
            self._partitions[(meta.name, handle.index)] = handle
            self._by_pid[handle.id] = handle
        if handles and self.on_topics_changed is not None:
            self.on_topics_changed()

    def _new_handles(
        self, name: str, config: TopicConfig, rows: Iterable[tuple[Any, ...]]
    ) -> list[PgPartition]:
        handles = []
        for pid, index in rows:
            handle = self.partition_class(self, pid, name, index, config, _fresh(), 0)
            handle.producers_at = 0
            handles.append(handle)
        return handles

    async def create_topic(
        self,
        name: str,
        partitions: int,
        configs: Mapping[str, str],
        *,
        validate_only: bool = False,
    ) -> TopicMeta:
        meta, config = self._new_topic(name, partitions, configs)
        if validate_only:
            return meta
        async with self._catalog_lock:
            try:
                async with self.db.connection("creating a topic") as conn, conn.transaction():
                    await conn.execute(
                        "INSERT INTO bayou.topics (topic_id, kind, name, partitions, configs) "
                        "VALUES (%s, 'topic', %s, %s, %s::jsonb)",
                        (meta.topic_id, name, partitions, json.dumps(meta.configs)),
                    )
                    cur = await conn.execute(
                        "INSERT INTO bayou.partitions (topic_id, index, segment_created_ms) "
                        "SELECT %s, i, %s FROM generate_series(0, %s - 1) AS i "
                        "RETURNING id, index",
                        (meta.topic_id, self.clock_ms(), partitions),
                    )
                    rows = await cur.fetchall()
                    await self._announce(conn, topics_payload(self.sender))
            except psycopg.errors.UniqueViolation:
                await self._load()  # another broker took the name first
                check_new_topic(name, partitions, self._topics, self._internal)
                raise TopicAlreadyExists(f"topic {name!r} already exists") from None
            except psycopg.Error as exc:
                raise storage_error("creating a topic", exc) from None
            self._register(meta, self._new_handles(name, config, rows))
        return meta

    async def delete_topic(self, name: str) -> None:
        meta = self._known(name)
        async with self._catalog_lock:
            try:
                async with self.db.connection("deleting a topic") as conn, conn.transaction():
                    cur = await conn.execute(
                        "SELECT id FROM bayou.partitions WHERE topic_id = %s FOR UPDATE",
                        (meta.topic_id,),
                    )
                    ids = [row[0] for row in await cur.fetchall()]
                    for table in ("batches", "segments", "producers", "aborted_txns"):
                        await conn.execute(
                            f"DELETE FROM bayou.{table} WHERE partition_id = ANY(%s)", (ids,)
                        )
                    cur = await conn.execute(
                        "DELETE FROM bayou.topics WHERE topic_id = %s", (meta.topic_id,)
                    )
                    gone = cur.rowcount == 0
                    await self._announce(conn, topics_payload(self.sender))
            except psycopg.Error as exc:
                raise storage_error("deleting a topic", exc) from None
            self._topics = {k: v for k, v in self._topics.items() if k != name}
            self._by_id = {k: v for k, v in self._by_id.items() if k != meta.topic_id}
            for index in range(meta.partitions):
                handle = self._partitions.pop((name, index), None)
                if handle is not None:
                    self._drop(handle)
        if gone:
            raise UnknownTopicOrPartition(f"unknown topic {name!r}")

    async def create_partitions(
        self, name: str, total: int, *, validate_only: bool = False
    ) -> None:
        grown = self._grown_topic(name, total)
        if validate_only:
            return
        async with self._catalog_lock:
            try:
                async with self.db.connection("adding partitions") as conn, conn.transaction():
                    cur = await conn.execute(
                        "SELECT partitions FROM bayou.topics WHERE topic_id = %s FOR UPDATE",
                        (grown.topic_id,),
                    )
                    found = await cur.fetchone()
                    if found is None:
                        raise UnknownTopicOrPartition(f"unknown topic {name!r}")
                    if total <= found[0]:
                        raise InvalidPartitions(
                            f"topic {name!r} has {found[0]} partitions; {total} is not more"
                        )
                    cur = await conn.execute(
                        "INSERT INTO bayou.partitions (topic_id, index, segment_created_ms) "
                        "SELECT %s, i, %s FROM generate_series(%s, %s - 1) AS i "
                        "RETURNING id, index",
                        (grown.topic_id, self.clock_ms(), found[0], total),
                    )
                    rows = await cur.fetchall()
                    await conn.execute(
                        "UPDATE bayou.topics SET partitions = %s WHERE topic_id = %s",
                        (total, grown.topic_id),
                    )
                    await self._announce(conn, topics_payload(self.sender))
            except psycopg.Error as exc:
                raise storage_error("adding partitions", exc) from None
            config = self.resolve_config(grown.configs)
            self._register(grown, self._new_handles(name, config, rows))

    async def alter_topic_configs(
        self, name: str, configs: Mapping[str, str], *, validate_only: bool = False
    ) -> TopicMeta:
        new, config = self._altered_topic(name, configs)
        if validate_only:
            return new
        async with self._catalog_lock:
            try:
                async with (
                    self.db.connection("altering topic configs") as conn,
                    conn.transaction(),
                ):
                    await conn.execute(
                        "UPDATE bayou.topics SET configs = %s::jsonb WHERE topic_id = %s",
                        (json.dumps(new.configs), new.topic_id),
                    )
                    await self._announce(conn, topics_payload(self.sender))
            except psycopg.Error as exc:
                raise storage_error("altering topic configs", exc) from None
            self._register(new)
            for index in range(new.partitions):
                handle = self._partitions.get((name, index))
                if handle is not None:
                    handle.config = config
        return new

    async def alter_broker_configs(
        self,
        scope: str,
        configs: Mapping[str, Any],
        *,
        validate_only: bool = False,
        options: Mapping[str, Any] | None = None,
    ) -> None:
        dynamic = self._dynamic.altered(
            scope, configs, options, self._static, [m.configs for m in self._topics.values()]
        )
        if validate_only:
            return
        doc = dynamic.to_doc()
        key = "default" if scope == "default" else "broker"
        row_scope = "default" if scope == "default" else self._node_scope
        async with self._catalog_lock:
            try:
                async with (
                    self.db.connection("altering broker configs") as conn,
                    conn.transaction(),
                ):
                    await conn.execute(
                        "INSERT INTO bayou.broker_configs (scope, configs, options) "
                        "VALUES (%s, %s::jsonb, %s::jsonb) ON CONFLICT (scope) DO UPDATE "
                        "SET configs = excluded.configs, options = excluded.options",
                        (
                            row_scope,
                            json.dumps(doc[key]),
                            json.dumps(doc["options"][key]),
                        ),
                    )
                    await self._announce(conn, configs_payload(self.sender))
            except psycopg.Error as exc:
                raise storage_error("altering broker configs", exc) from None
            self._dynamic = dynamic
            for (topic, _index), handle in self._partitions.items():
                handle.config = self.resolve_config(self._topics[topic].configs)

    # ------------------------------------------------------------------ data

    def partition(self, topic: str, index: int) -> PgPartition:
        handle = self._partitions.get((topic, index))
        if handle is None and index == 0 and topic in self._internal:
            handle = self._state_logs[topic].partition
        if handle is None:
            raise UnknownTopicOrPartition(f"unknown topic partition {topic}-{index}")
        return handle

    def topic_partition(self, topic: str, index: int) -> PgPartition | None:
        return self._partitions.get((topic, index))

    def partition_by_id(self, partition_id: int) -> PgPartition | None:
        return self._by_pid.get(partition_id)

    def all_partitions(self) -> list[PgPartition]:
        """Every partition this engine knows: topics' and opened state logs'."""
        return [*self._partitions.values(), *(s.partition for s in self._state_logs.values())]

    async def store(
        self, writes: Sequence[tuple[PgPartition, Buffer]]
    ) -> list[AppendResult | KafkaError]:
        """Check and store payloads (the owner's path: no internal-topic check)."""
        results: list[AppendResult | KafkaError | None] = [None] * len(writes)
        queued: list[tuple[int, Write]] = []
        for i, (partition, records) in enumerate(writes):
            try:
                partition.check_open()
                buf, headers = check_payload(
                    records, partition.config, partition.topic, partition.index
                )
            except KafkaError as exc:
                results[i] = exc
                continue
            queued.append((i, Write(partition, buf, headers)))
        if queued:
            await self.commit([w for _i, w in queued])
            for i, w in queued:
                results[i] = w.result
        return [r if r is not None else KafkaError("not stored") for r in results]

    async def commit(self, writes: list[Write]) -> None:
        """Store checked writes through the commit queue (each gets its ``result``)."""
        await self.writer.submit(writes)

    async def append_many(
        self, writes: Sequence[tuple[str, int, Buffer]], *, owned: bool = False
    ) -> list[AppendResult | KafkaError]:
        results: list[AppendResult | KafkaError | None] = [None] * len(writes)
        resolved: list[tuple[int, PgPartition, Buffer]] = []
        for i, (topic, index, records) in enumerate(writes):
            try:
                partition = self.partition(topic, index)
                if partition.internal:
                    raise InvalidTopic(f"Cannot write to internal topic {topic}")
            except KafkaError as exc:
                results[i] = exc
                continue
            resolved.append((i, partition, records))
        if resolved:
            stored = await self.store([(p, r) for _i, p, r in resolved])
            for (i, _p, _r), result in zip(resolved, stored, strict=True):
                results[i] = result
        return [r if r is not None else KafkaError("not stored") for r in results]

    async def wait_for_data(self, keys: Iterable[PartitionKey], timeout_s: float) -> bool:
        return await self.waiters.wait_any(keys, timeout_s)

    def wake_all(self) -> None:
        self.waiters.wake_all()

    async def allocate_producer_id(self) -> int:
        async with self._ids_lock:
            for producer_id in self._ids:
                return producer_id
            try:
                async with self.db.connection("allocating producer ids") as conn:
                    cur = await conn.execute(
                        "UPDATE bayou.cluster SET next_producer_id = next_producer_id + %s "
                        "RETURNING next_producer_id",
                        (PRODUCER_ID_BLOCK,),
                    )
                    row = await cur.fetchone()
            except psycopg.Error as exc:
                raise storage_error("allocating producer ids", exc) from None
            assert row is not None
            end = int(row[0])
            ids = iter(range(end - PRODUCER_ID_BLOCK, end))
            first = next(ids)
            self._ids = ids
            return first

    async def maintain(self, now_ms: int | None = None) -> list[MaintenanceReport]:
        return await self.maintenance.round(now_ms)

    async def claim_leadership(self, topic: str, index: int) -> int:
        """Become the partition's writer: bump its leader epoch in the database and hold
        the new one, fenced; a broker holding an older epoch can no longer commit appends
        to it.  (The cluster layer claims many partitions in one statement, with their
        ``leader_id``: ``cluster.py``.)"""
        handle = self.partition(topic, index)
        try:
            async with self.db.connection("claiming leadership") as conn:
                cur = await conn.execute(
                    "UPDATE bayou.partitions SET leader_epoch = leader_epoch + 1 "
                    "WHERE id = %s RETURNING leader_epoch",
                    (handle.id,),
                )
                row = await cur.fetchone()
        except psycopg.Error as exc:
            raise storage_error("claiming leadership", exc) from None
        if row is None:
            raise UnknownTopicOrPartition(f"{topic}-{index} was deleted")
        handle.leader_epoch = int(row[0])
        handle.fenced = True
        handle.producers_at = None
        return handle.leader_epoch

    # ------------------------------------------------------------------ internal state

    async def open_state_log(self, name: str, *, public: bool) -> PgStateLog:
        existing = self._state_logs.get(name)
        if existing is None:
            existing = await self._create_state_log(name)
        if public and name not in self._topics and name not in self._internal:
            meta = TopicMeta(name, self._state_topic_id(name), 1, {})
            self._internal = {**self._internal, name: meta}
        return existing

    def _state_topic_id(self, name: str) -> uuid.UUID:
        return uuid.uuid5(uuid.NAMESPACE_URL, f"bayou:{self._cluster_id}:{name}")

    async def _create_state_log(self, name: str) -> PgStateLog:
        topic_id = self._state_topic_id(name)
        async with self._catalog_lock:
            try:
                async with (
                    self.db.connection("opening a state log") as conn,
                    conn.transaction(),
                ):
                    await conn.execute(
                        "INSERT INTO bayou.topics (topic_id, kind, name, partitions) "
                        "VALUES (%s, 'state', %s, 1) ON CONFLICT DO NOTHING",
                        (topic_id, name),
                    )
                    await conn.execute(
                        "INSERT INTO bayou.partitions (topic_id, index, segment_created_ms) "
                        "VALUES (%s, 0, %s) ON CONFLICT (topic_id, index) DO NOTHING",
                        (topic_id, self.clock_ms()),
                    )
                    cur = await conn.execute(
                        f"SELECT {_PARTITION_COLUMNS} FROM bayou.partitions p "
                        "WHERE p.topic_id = %s AND p.index = 0",
                        (topic_id,),
                    )
                    row = await cur.fetchone()
            except psycopg.Error as exc:
                raise storage_error("opening a state log", exc) from None
            if row is None:
                raise InvalidTopic(f"state log {name!r} collides with another one")
            pid, _topic_id, _index, epoch, *state = row
            handle = PgPartition(
                self, pid, name, 0, self.internal_config, _fresh(), epoch, internal=True
            )
            handle.apply(PartitionState(*state))
            state_log = self._state_logs[name] = PgStateLog(self, name, handle)
            self._by_pid[pid] = handle
        return state_log
