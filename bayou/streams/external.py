"""The external runtime: pipelines over confluent-kafka, against any Kafka-compatible broker.

Theory of operation
-------------------
One consumer in the app's group (``group.id`` = the app's name, ``read_committed``, no
auto-commit) reads every source; instances of the same app share the partitions.  On
assignment each partition gets its tasks, whose state is restored first: the snapshot file
(``snapshots.py``, memory-mapped: per-key state is read from it as records ask) if there is
one, then the changelog partition from the snapshot's offset to its end, read by a
group-less consumer (one for every task of an assignment).  ``ask`` hands a question about
the tasks' state (a pull query) to the runner's thread, answered between two batches.
Compacted topics joined as tables are read whole by another group-less consumer before
processing starts, and kept current.

Every ``commit_interval_s`` (and before partitions are revoked, and at the end) the runner
writes what the processor collected — outputs, dead letters, changelog records (each to the
changelog partition of its task's number) — and commits the source offsets with them:

- ``exactly-once`` (the default): one Kafka transaction holds the outputs, the changelog
  records and the offsets (``send_offsets_to_transaction`` with the consumer's group
  metadata, KIP-447: a zombie of an older generation is fenced).  ``transactional.id`` is
  ``<app>-<instance>``: give ``instance_id`` to make it stable across restarts (a restarted
  instance then fences its predecessor's open transaction at once; otherwise
  ``transaction.timeout.ms``, 10 s here as in Kafka Streams, aborts it);
- ``at-least-once``: produce, flush, then commit the offsets; a crash in between replays
  records whose effects were already written.

A transaction that fails leaves the in-memory state ahead of what was committed, so the
runner does not try to patch it: it closes everything and starts over from the committed
state (``run`` restarts after a second).

Snapshots are written after a commit for tasks whose changelog grew by
``SNAPSHOT_EVERY_RECORDS`` and by half their state's entries since their last one (so the
writes stay proportional to the changes however large the state), when partitions are
revoked and at the end.
"""

from __future__ import annotations

import logging
import queue
import signal
import threading
import time
import uuid
from collections.abc import Callable
from concurrent.futures import Future
from pathlib import Path
from typing import Any, TypeVar

from confluent_kafka import Consumer, KafkaError, KafkaException, Message, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic  # type: ignore[attr-defined]

from bayou.streams.pipeline import Commit, Pipeline, Processor, SourceRecord, Task
from bayou.streams.snapshots import open_snapshot, snapshot_path, write_snapshot

log = logging.getLogger(__name__)

T = TypeVar("T")

SNAPSHOT_EVERY_RECORDS = 50_000
RESTORE_TIMEOUT_S = 120.0
TRANSACTION_TIMEOUT_MS = 10_000
POLL_RECORDS = 2000
RESTART_DELAY_S = 1.0


class FatalStreamError(Exception):
    """The runner cannot go on from its current state (it restarts from the committed one)."""


def _message(msg: Message) -> SourceRecord:
    headers: Any = msg.headers() or ()
    return SourceRecord(
        msg.offset() or 0,
        msg.timestamp()[1],
        _bytes(msg.key()),
        _bytes(msg.value()),
        tuple(headers),
    )


def _bytes(data: Any) -> bytes | None:
    return data.encode() if isinstance(data, str) else data


class ExternalRunner:
    def __init__(
        self,
        app_id: str,
        pipelines: list[Pipeline],
        bootstrap: str,
        *,
        guarantee: str = "exactly-once",
        auto_offset_reset: str = "earliest",
        state_dir: Path | None = None,
        commit_interval_s: float = 0.2,
        instance_id: str | None = None,
        client_config: dict[str, Any] | None = None,
    ) -> None:
        self.app_id = app_id
        self.pipelines = pipelines
        self.bootstrap = bootstrap
        self.exactly_once = guarantee == "exactly-once"
        self.auto_offset_reset = auto_offset_reset
        self.state_dir = state_dir if state_dir is not None else Path(".bayou-state") / app_id
        self.commit_interval_s = commit_interval_s
        self.instance_id = instance_id or uuid.uuid4().hex[:12]
        self.client_config = dict(client_config or {})
        self.stop_event = threading.Event()
        self.processor = Processor(app_id, pipelines)
        self.snapshot_marks: dict[tuple[str, int], int] = {}  # changelog partition → records
        self.changelog_end: dict[tuple[str, int], int] = {}
        self.snapshot_offsets: dict[tuple[str, int], int] = {}  # what the files on disk cover
        self.on_commit: Callable[[Commit], None] | None = None
        self._consumer: Any = None
        self._producer: Any = None
        self._tables: Any = None
        self._error: BaseException | None = None
        self._asks: queue.SimpleQueue[tuple[Callable[[Processor], Any], Future[Any]]] = (
            queue.SimpleQueue()
        )
        self.serving = False  # in the processing loop: asks are answered

    # ------------------------------------------------------------------ lifecycle

    def run(self, *, idle_exit_s: float | None = None, handle_signals: bool = False) -> None:
        """Until ``stop()`` (or SIGINT/SIGTERM with ``handle_signals``; or no record for
        ``idle_exit_s``).  Starts over from the committed state after a fatal error."""
        if handle_signals:
            for sig in (signal.SIGINT, signal.SIGTERM):
                signal.signal(sig, lambda *_a: self.stop_event.set())
        while not self.stop_event.is_set():
            try:
                self._run_once(idle_exit_s)
                return
            except (FatalStreamError, KafkaException) as exc:
                log.warning("%s: starting over from the committed state: %s", self.app_id, exc)
                self._close(commit=False)
                self.processor = Processor(self.app_id, self.pipelines)
                self.stop_event.wait(RESTART_DELAY_S)

    def stop(self) -> None:
        self.stop_event.set()

    def ask(self, question: Callable[[Processor], T], timeout_s: float) -> T:
        """``question(processor)`` answered by the runner's thread between two batches (its
        tasks' state is the thread's own); ``TimeoutError`` when it is not answered in
        ``timeout_s`` (the runner is restoring, restarting or stopped)."""
        if not self.serving:
            raise TimeoutError("the runner is not processing")
        future: Future[T] = Future()
        self._asks.put((question, future))
        try:
            return future.result(timeout_s)
        except TimeoutError:
            future.cancel()
            raise

    def _answer(self) -> None:
        while True:
            try:
                question, future = self._asks.get_nowait()
            except queue.Empty:
                return
            if not future.set_running_or_notify_cancel():
                continue
            try:
                future.set_result(question(self.processor))
            except Exception as exc:
                future.set_exception(exc)

    def config(self, **extra: Any) -> dict[str, Any]:
        return {"bootstrap.servers": self.bootstrap, **self.client_config, **extra}

    def _run_once(self, idle_exit_s: float | None) -> None:
        self._prepare_topics()
        # consistent_random (librdkafka's default, CRC-32 of the key): pull queries find a
        # key's partition of a repartition topic by it (``pull.py``)
        producer_config = self.config(**{"linger.ms": 5, "partitioner": "consistent_random"})
        if self.exactly_once:
            producer_config["transactional.id"] = f"{self.app_id}-{self.instance_id}"
            producer_config["transaction.timeout.ms"] = TRANSACTION_TIMEOUT_MS
        else:
            producer_config["enable.idempotence"] = True
        self._producer = Producer(producer_config)
        if self.exactly_once:
            self._producer.init_transactions(30)
        self._load_tables()
        self._consumer = Consumer(
            self.config(
                **{
                    "group.id": self.app_id,
                    "enable.auto.commit": False,
                    "isolation.level": "read_committed",
                    "enable.partition.eof": True,  # a partition read to its end is idle
                    "auto.offset.reset": self.auto_offset_reset,
                    "session.timeout.ms": 10_000,
                    "heartbeat.interval.ms": 1000,
                    "max.poll.interval.ms": 300_000,
                }
            )
        )
        self._consumer.subscribe(
            self.processor.sources(),
            on_assign=self._on_assign,
            on_revoke=self._on_revoke,
            on_lost=self._on_lost,
        )
        last_commit = time.monotonic()
        last_record = time.monotonic()
        self.serving = True
        try:
            while not self.stop_event.is_set():
                messages = self._consumer.consume(POLL_RECORDS, 0.1)
                if self._error is not None:
                    raise FatalStreamError(str(self._error))
                self._poll_tables()
                by_partition: dict[tuple[str, int], list[SourceRecord]] = {}
                ends: list[tuple[str, int]] = []
                for msg in messages:
                    err = msg.error()
                    if err is not None:
                        if err.code() == KafkaError._PARTITION_EOF:
                            ends.append((msg.topic(), msg.partition()))
                        else:
                            log.warning("%s: consumer: %s", self.app_id, err)
                        continue
                    by_partition.setdefault((msg.topic(), msg.partition()), []).append(
                        _message(msg)
                    )
                for (topic, partition), records in by_partition.items():
                    self.processor.process(topic, partition, records)
                for topic, partition in ends:
                    self.processor.idle(topic, partition)
                if by_partition or ends:
                    self.processor.fire()
                    last_record = time.monotonic()
                now = time.monotonic()
                if now - last_commit >= self.commit_interval_s:
                    self.commit()
                    last_commit = now
                if not self.processor.tasks:
                    last_record = now  # idle counts from the first assignment
                if idle_exit_s is not None and now - last_record > idle_exit_s:
                    break
                self._answer()
        finally:
            self.serving = False
            self._answer_none()
            if self._consumer is not None:
                self._close(commit=self._error is None)

    def _answer_none(self) -> None:
        while True:
            try:
                _question, future = self._asks.get_nowait()
            except queue.Empty:
                return
            if future.set_running_or_notify_cancel():
                future.set_exception(TimeoutError("the runner stopped"))

    def _close(self, *, commit: bool) -> None:
        consumer = self._consumer
        if consumer is not None:
            try:
                if commit:
                    self.commit()
                    for (_topic, partition), tasks in list(self.processor.tasks.items()):
                        self._snapshot(tasks, partition)
                consumer.close()
            except (KafkaException, FatalStreamError) as exc:
                log.warning("%s: closing: %s", self.app_id, exc)
        self._consumer = None
        if self._tables is not None:
            self._tables.close()
            self._tables = None
        self._producer = None
        self._error = None

    # ------------------------------------------------------------------ topics

    def _prepare_topics(self) -> None:
        """Sources must exist; repartition topics (as many partitions as their widest
        source) and changelog topics (compacted, as many partitions as their source) are
        created when missing."""
        admin = AdminClient(self.config())
        repartition = self.processor.repartition_topics()
        sources = [t for t in self.processor.sources() if t not in repartition]
        deadline = time.monotonic() + 30
        while True:
            meta = admin.list_topics(timeout=10)
            missing = [t for t in sources if t not in meta.topics or meta.topics[t].error]
            if not missing:
                break
            if time.monotonic() > deadline or self.stop_event.is_set():
                raise FatalStreamError(f"source topic(s) {', '.join(missing)} do not exist")
            self.stop_event.wait(0.5)
        counts = {t: len(meta.topics[t].partitions) for t in sources}
        self._create(
            admin,
            [
                NewTopic(topic, max(counts[s] for s in upstream))
                for topic, upstream in repartition.items()
                if topic not in meta.topics
            ],
        )
        if any(topic not in meta.topics for topic in repartition):
            meta = admin.list_topics(timeout=10)
        counts.update({t: len(meta.topics[t].partitions) for t in repartition})
        self.processor.set_partitions(counts)
        self._create(
            admin,
            [
                NewTopic(
                    self.processor.changelog_topic(pipeline),
                    counts[pipeline.source],
                    config={"cleanup.policy": "compact"},
                )
                for pipeline in self.pipelines
                if self.processor.changelog_topic(pipeline) not in meta.topics
            ],
        )

    def _create(self, admin: Any, topics: list[Any]) -> None:
        if not topics:
            return
        for topic, future in admin.create_topics(topics).items():
            try:
                future.result(30)
            except KafkaException as exc:
                if exc.args[0].code() != KafkaError.TOPIC_ALREADY_EXISTS:
                    raise FatalStreamError(f"cannot create {topic}: {exc}") from None

    def _load_tables(self) -> None:
        tables = sorted(self.processor.tables)
        if not tables:
            return
        consumer = Consumer(
            self.config(
                **{
                    "group.id": f"{self.app_id}-tables",
                    "enable.auto.commit": False,
                    "enable.partition.eof": True,
                    "isolation.level": "read_committed",
                }
            )
        )
        meta = consumer.list_topics(timeout=10)
        parts = [
            TopicPartition(t, p, -2)
            for t in tables
            if t in meta.topics
            for p in meta.topics[t].partitions
        ]
        consumer.assign(parts)
        pending = {(tp.topic, tp.partition) for tp in parts}
        deadline = time.monotonic() + RESTORE_TIMEOUT_S
        while pending and time.monotonic() < deadline:
            for msg in consumer.consume(POLL_RECORDS, 0.2):
                self._table_message(msg, pending)
        self._tables = consumer

    def _table_message(self, msg: Message, pending: set[tuple[str, int]] | None) -> None:
        err = msg.error()
        if err is not None:
            if err.code() == KafkaError._PARTITION_EOF and pending is not None:
                pending.discard((msg.topic(), msg.partition()))
            return
        self.processor.table_update(msg.topic() or "", _bytes(msg.key()), _bytes(msg.value()))

    def _poll_tables(self) -> None:
        if self._tables is not None:
            for msg in self._tables.consume(POLL_RECORDS, 0):
                self._table_message(msg, None)

    # ------------------------------------------------------------------ rebalances

    def _on_assign(self, consumer: Any, partitions: list[TopicPartition]) -> None:
        try:
            tasks = [
                task for tp in partitions for task in self.processor.assign(tp.topic, tp.partition)
            ]
            self._restore(tasks)
        except BaseException as exc:  # raised in librdkafka's callback: keep it for the loop
            self._error = exc

    def _on_revoke(self, consumer: Any, partitions: list[TopicPartition]) -> None:
        try:
            self.commit()
            for tp in partitions:
                tasks = self.processor.revoke(tp.topic, tp.partition)
                self._snapshot(tasks, tp.partition)
        except BaseException as exc:
            self._error = exc

    def _on_lost(self, consumer: Any, partitions: list[TopicPartition]) -> None:
        for tp in partitions:  # someone else owns them now: nothing may be committed
            self.processor.revoke(tp.topic, tp.partition)

    # ------------------------------------------------------------------ state

    def _restore(self, tasks: list[Task]) -> None:
        """Each task's state: its snapshot (mapped), then its changelog partition from the
        snapshot's offset to the end, every partition read by one consumer at once (a
        partition's tail costs a fetch's wait however small: paid once, not per task)."""
        restore = Consumer(
            self.config(
                **{
                    "group.id": f"{self.app_id}-restore",
                    "enable.auto.commit": False,
                    "enable.partition.eof": True,
                    "isolation.level": "read_committed",
                }
            )
        )
        try:
            tails: dict[tuple[str, int], tuple[Task, int]] = {}  # changelog partition → start
            snapshotted: set[tuple[str, int]] = set()
            for task in tasks:
                where = (self.processor.changelog_topic(task.pipeline), task.partition)
                snapshot = open_snapshot(snapshot_path(self.state_dir, *where))
                low, high = restore.get_watermark_offsets(TopicPartition(*where), 10)
                start = 0
                if snapshot is not None and low <= snapshot.offset <= high:
                    start = snapshot.offset
                    task.restore_snapshot(snapshot)  # read as the records ask, mostly
                    self.snapshot_offsets[where] = start
                    snapshotted.add(where)
                self.changelog_end[where] = high
                if start < high:
                    tails[where] = (task, max(start, low))
                else:
                    self._restored(task, where, where in snapshotted, 0)
            if not tails:
                return
            restore.assign([TopicPartition(t, p, start) for (t, p), (_k, start) in tails.items()])
            replayed = dict.fromkeys(tails, 0)
            deadline = time.monotonic() + RESTORE_TIMEOUT_S
            while tails:
                if time.monotonic() > deadline:
                    names = ", ".join(f"{t}-{p}" for t, p in tails)
                    raise FatalStreamError(f"restoring {names} took too long")
                for msg in restore.consume(POLL_RECORDS, 0.2):
                    where = (msg.topic() or "", msg.partition() or 0)
                    tail = tails.get(where)
                    if tail is None:
                        continue
                    err = msg.error()
                    if err is not None:
                        if err.code() == KafkaError._PARTITION_EOF:
                            del tails[where]
                            self._restored(tail[0], where, where in snapshotted, replayed[where])
                        continue
                    raw_key = _bytes(msg.key())
                    if raw_key is not None:
                        tail[0].restore(raw_key, _bytes(msg.value()))
                        replayed[where] += 1
        finally:
            restore.close()

    def _restored(self, task: Task, where: tuple[str, int], snapshot: bool, replayed: int) -> None:
        task.restored()
        log.info(
            "%s: restored %s-%d (snapshot %s, %d changelog records)",
            self.app_id,
            where[0],
            where[1],
            "yes" if snapshot else "no",
            replayed,
        )
        # a long replay is worth a snapshot, written after the next commit (not here: the
        # task would wait for it before processing its first record)
        self.snapshot_marks[where] = replayed

    def _snapshot(self, tasks: list[Task], partition: int) -> None:
        for task in tasks:
            topic = self.processor.changelog_topic(task.pipeline)
            end = self.changelog_end.get((topic, partition))
            if end is not None and end != self.snapshot_offsets.get((topic, partition)):
                self._write_snapshot(task, topic, partition, end)

    def _write_snapshot(self, task: Task, topic: str, partition: int, offset: int) -> None:
        path = snapshot_path(self.state_dir, topic, partition)
        try:
            write_snapshot(path, offset, task.entries())
            self.snapshot_offsets[(topic, partition)] = offset
        except OSError as exc:
            log.warning("%s: cannot write snapshot %s: %s", self.app_id, path, exc)
        self.snapshot_marks[(topic, partition)] = 0

    # ------------------------------------------------------------------ commits

    def _delivered(self, err: KafkaError | None, msg: Message) -> None:
        if err is not None:
            self._error = KafkaException(err)
            return
        where = (msg.topic() or "", msg.partition() or 0)
        end = (msg.offset() or 0) + 1
        if end > self.changelog_end.get(where, 0):
            self.changelog_end[where] = end

    def _produce(self, topic: str, value: bytes | None, key: bytes | None, **kw: Any) -> None:
        producer = self._producer
        for _ in range(1000):
            try:
                producer.produce(topic, value, key, **kw)
                return
            except BufferError:
                producer.poll(0.05)
        raise FatalStreamError("the producer's queue stays full")

    def commit(self) -> None:
        commit = self.processor.collect()
        if not commit:
            return
        producer = self._producer
        if self.exactly_once:
            producer.begin_transaction()
        for out in commit.outputs:
            extra: dict[str, Any] = {} if out.partition is None else {"partition": out.partition}
            self._produce(
                out.topic,
                out.value,
                out.key,
                timestamp=out.timestamp,
                headers=list(out.headers) or None,
                **extra,
            )
        grown: dict[tuple[str, int], int] = {}
        for topic, partition, key, value in commit.changelog:
            self._produce(topic, value, key, partition=partition, on_delivery=self._delivered)
            grown[(topic, partition)] = grown.get((topic, partition), 0) + 1
        offsets = [TopicPartition(t, p, o) for (t, p), o in commit.offsets.items()]
        try:
            if self.exactly_once:
                if offsets:
                    producer.send_offsets_to_transaction(
                        offsets, self._consumer.consumer_group_metadata(), 30
                    )
                producer.commit_transaction(30)
            else:
                remaining = producer.flush(30)
                if remaining:
                    raise FatalStreamError(f"{remaining} record(s) not delivered")
                if offsets:
                    self._consumer.commit(offsets=offsets, asynchronous=False)
        except KafkaException as exc:
            raise FatalStreamError(f"commit failed: {exc}") from None
        if self._error is not None:
            raise FatalStreamError(str(self._error))
        if self.on_commit is not None:
            self.on_commit(commit)
        for where, n in grown.items():
            self.snapshot_marks[where] = self.snapshot_marks.get(where, 0) + n
            if self.snapshot_marks[where] < SNAPSHOT_EVERY_RECORDS:
                continue
            for task in self.processor.tasks.get(self._source_of(where), []):
                if self.processor.changelog_topic(task.pipeline) != where[0]:
                    continue
                # a snapshot writes the whole state: once the changelog grew by half of it
                # (and 50,000 records), so snapshots cost at most two writes per change
                if self.snapshot_marks[where] >= task.state_size() // 2:
                    self._write_snapshot(task, where[0], where[1], self.changelog_end[where])

    def _source_of(self, changelog: tuple[str, int]) -> tuple[str, int]:
        for pipeline in self.pipelines:
            if self.processor.changelog_topic(pipeline) == changelog[0]:
                return pipeline.source, changelog[1]
        return "", -1
