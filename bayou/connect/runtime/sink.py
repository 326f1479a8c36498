"""A sink task's loop: records from the consumer group ``connect-{name}`` into the task.

Theory of operation
-------------------
Every task of a sink connector is one confluent-kafka consumer in the group
``connect-{name}`` subscribed to ``topics`` (or ``topics.regex``), so the group shares the
partitions among ``tasks.max`` tasks (tasks beyond the partition count stay idle members) and
``bayou group describe connect-{name}`` shows the progress.  ``read_committed``: a
transactional producer's aborted records never reach a sink.

On assignment the task's ``open`` names the next offset its target records for each
partition; the runtime starts there, and from the group's committed offset (else the
earliest, or ``consumer.auto.offset.reset``) for the partitions it does not name.

Each consumed batch is converted (``key.converter``, ``value.converter``), transformed, and
handed to ``put``.  When ``flush_due`` says so, or every ``offset.flush.interval.ms``
(default 10 s), the runtime calls ``flush`` — after which everything put is durable in the
target — flushes the dead-letter producer, and commits to the group, per partition, the next
offset after everything consumed so far (put and flushed, dropped by a transform, or sent to
the dead-letter topic), or what ``flush`` returned for a partition it consumed nothing of.
Revocation flushes and commits synchronously, then calls ``close``; a lost assignment (the
group moved on without us) only closes, committing nothing.

A ``RecordError`` raised by ``put`` means the task took nothing of that batch: under
``errors.tolerance=all`` the faulty record goes to the dead-letter topic and the rest of the
batch is put again; otherwise the task fails.
"""

from __future__ import annotations

import functools
import logging
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from confluent_kafka import Consumer, KafkaError, KafkaException, Message, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic  # type: ignore[attr-defined]

from bayou.connect.api import (
    ConfigError,
    ConnectError,
    RecordError,
    SinkRecord,
    SinkTask,
)
from bayou.connect.api import TopicPartition as TP
from bayou.connect.runtime.converters import ConversionError
from bayou.connect.runtime.errors import (
    KEY_CONVERTER,
    TASK_PUT,
    TRANSFORMATION,
    VALUE_CONVERTER,
    RateLimitedLog,
    ToleranceExceeded,
    error_headers,
)
from bayou.connect.runtime.task import PAUSED, RUNNING, TaskRunner
from bayou.connect.transforms import StepError, run_chain

log = logging.getLogger(__name__)

POLL_RECORDS = 500
POLL_TIMEOUT_S = 0.2
DEFAULT_FLUSH_INTERVAL_MS = 10_000


def group_id(connector: str) -> str:
    return f"connect-{connector}"


class SinkTaskRunner(TaskRunner):
    def work(self) -> None:
        prepared = self.prepared
        config = self.config
        policy = prepared.policy
        topics = config.get_list("topics")
        regex = config.get("topics.regex")
        if bool(topics) == bool(regex):
            raise ConfigError(f"connector {self.name!r}: give topics or topics.regex (one)")
        task_class = prepared.task_class
        assert issubclass(task_class, SinkTask)
        self.task: SinkTask = task_class(config)
        self.errors_log = RateLimitedLog()
        self.interval_s = (
            config.get_int("offset.flush.interval.ms", DEFAULT_FLUSH_INTERVAL_MS) / 1000
        )
        self.healthy = True
        self.callback_error: BaseException | None = None
        self.assigned: set[TP] = set()
        self.consumed: dict[TP, int] = {}  # next offset after what was handled, not committed
        self.dlq: Any = None
        self.dirty = False  # records put since the last flush
        self.committed: dict[TP, int] = {}
        policy.retry(f"{self.name}: start", self.task.start, self.stop_event)
        if policy.tolerance_all and policy.dlq_topic:
            self._prepare_dlq(policy.dlq_topic)
        reset = config.get("consumer.auto.offset.reset", "earliest")
        self.consumer = Consumer(
            {
                **self.client_config,
                "group.id": group_id(self.name),
                "client.id": f"connect-{self.name}-{self.task_id}",
                "enable.auto.commit": False,
                "auto.offset.reset": reset,
                "isolation.level": "read_committed",
                "session.timeout.ms": 10_000,
                "heartbeat.interval.ms": 1000,
            }
        )
        try:
            self.consumer.subscribe(
                [f"^{regex}"] if regex else topics,
                on_assign=self._on_assign,
                on_revoke=self._on_revoke,
                on_lost=self._on_lost,
            )
            self._loop()
        except BaseException:
            self.healthy = False
            raise
        finally:
            self._finish()

    # ------------------------------------------------------------------ the loop

    def _loop(self) -> None:
        last_flush = time.monotonic()
        paused_now = False
        while not self.stop_event.is_set():
            if self.paused.is_set() != paused_now:
                paused_now = self.paused.is_set()
                parts = self.consumer.assignment()
                if paused_now:
                    self.consumer.pause(parts)
                    self.state = PAUSED
                else:
                    self.consumer.resume(parts)
                    self.state = RUNNING
            messages = self.consumer.consume(POLL_RECORDS, POLL_TIMEOUT_S)
            if self.callback_error is not None:
                raise self.callback_error
            if messages and self.paused.is_set() and not paused_now:
                self._rewind(messages)  # paused meanwhile: nothing more reaches the target
                continue
            if messages:
                self._handle(messages)
            now = time.monotonic()
            if self.task.flush_due(int(time.time() * 1000)):
                self._flush_and_commit(asynchronous=False)
                last_flush = now
            elif now - last_flush >= self.interval_s:
                self._flush_and_commit(asynchronous=False, force=False)
                last_flush = now

    def _rewind(self, messages: list[Message]) -> None:
        """Seek each partition back to the first of ``messages`` (read but not handled)."""
        first: dict[TP, int] = {}
        for msg in messages:
            if msg.error() is None:
                first.setdefault((msg.topic() or "", msg.partition() or 0), msg.offset() or 0)
        for (topic, partition), offset in first.items():
            try:
                self.consumer.seek(TopicPartition(topic, partition, offset))
            except KafkaException as exc:  # revoked meanwhile: its next owner starts there
                self.errors_log.warning("connector %s: rewinding: %s", self.name, exc)

    def _handle(self, messages: list[Message]) -> None:
        prepared = self.prepared
        chain = prepared.chain
        records: list[SinkRecord] = []
        handled: dict[TP, int] = {}
        for msg in messages:
            err = msg.error()
            if err is not None:
                if err.code() != KafkaError._PARTITION_EOF:
                    self.errors_log.warning("connector %s: consumer: %s", self.name, err)
                continue
            topic = msg.topic() or ""
            partition = msg.partition() or 0
            offset = msg.offset() or 0
            handled[(topic, partition)] = offset + 1
            stage = KEY_CONVERTER
            class_name = prepared.key_converter.class_name
            try:
                key = prepared.key_converter.to_value(msg.key())
                stage, class_name = VALUE_CONVERTER, prepared.value_converter.class_name
                value = prepared.value_converter.to_value(msg.value())
                record: SinkRecord | None = SinkRecord(
                    topic,
                    partition,
                    offset,
                    msg.timestamp()[1],
                    key,
                    value,
                    _headers(msg),
                )
                if chain:
                    stage, class_name = TRANSFORMATION, ""
                    assert record is not None
                    record = run_chain(chain, record)
            except (ConversionError, StepError) as exc:
                if isinstance(exc, StepError):
                    class_name = exc.step.class_name
                self._record_failed(msg, stage, class_name, exc)
                continue
            if record is not None:
                records.append(record)
        if records:
            self._put(records, messages)
            self.dirty = True
        self.consumed.update(handled)  # only once put returned

    def _put(self, records: list[SinkRecord], messages: list[Message]) -> None:
        policy = self.prepared.policy
        task_class = type(self.task)
        while records:
            batch = records
            try:
                policy.retry(
                    f"{self.name}: put", functools.partial(self.task.put, batch), self.stop_event
                )
                return
            except RecordError as exc:
                bad = exc.record
                where = (bad.topic, bad.partition, bad.offset) if bad is not None else None
                msg = _message_at(messages, where) if where is not None else None
                if msg is None or not policy.tolerance_all:
                    raise
                self._record_failed(
                    msg, TASK_PUT, f"{task_class.__module__}.{task_class.__name__}", exc
                )
                records = [r for r in batch if (r.topic, r.partition, r.offset) != where]

    def _record_failed(self, msg: Message, stage: str, class_name: str, exc: Exception) -> None:
        policy = self.prepared.policy
        where = f"{msg.topic()}-{msg.partition()}@{msg.offset()}"
        if not policy.tolerance_all:
            raise ToleranceExceeded(
                f"Tolerance exceeded in error handler: {stage} failed on {where}: {exc}"
            ) from exc
        if policy.log_errors:
            self.errors_log.warning(
                "connector %s: %s failed on %s, skipped: %s", self.name, stage, where, exc
            )
        if self.dlq is None:
            return
        headers = list(msg.headers() or ())
        if policy.dlq_context_headers:
            headers += error_headers(
                topic=msg.topic() or "",
                partition=msg.partition() or 0,
                offset=msg.offset() or 0,
                connector=self.name,
                task_id=self.task_id,
                stage=stage,
                class_name=class_name,
                error=exc,
            )
        assert policy.dlq_topic is not None
        for _ in range(1000):
            try:
                self.dlq.produce(
                    policy.dlq_topic,
                    msg.value(),
                    msg.key(),
                    headers=headers or None,
                    timestamp=msg.timestamp()[1],
                )
                return
            except BufferError:
                self.dlq.poll(0.05)
        raise ConnectError("the dead-letter producer's queue stays full")

    def _prepare_dlq(self, topic: str) -> None:
        admin = AdminClient(self.client_config)
        meta = admin.list_topics(timeout=10)
        if topic not in meta.topics:
            replicas = self.config.get_int("errors.deadletterqueue.topic.replication.factor", -1)
            new = NewTopic(topic, 1, replicas if replicas > 0 else -1)
            for future in admin.create_topics([new]).values():
                try:
                    future.result(30)
                except KafkaException as exc:
                    if exc.args[0].code() != KafkaError.TOPIC_ALREADY_EXISTS:
                        raise
        self.dlq = Producer({**self.client_config, "enable.idempotence": True, "linger.ms": 5})

    # ------------------------------------------------------------------ flush and commit

    def _flush_and_commit(
        self, *, asynchronous: bool, only: set[TP] | None = None, force: bool = True
    ) -> None:
        """Flush the task (when ``force`` or records were put since the last flush), then
        commit what moved: the consumer's position (every record returned by the consumer
        was handled by now; the position also steps over transaction markers), what was
        consumed, or what ``flush`` returned."""
        flushed: Mapping[TP, int] = {}
        if force or self.dirty:
            flushed = self.prepared.policy.retry(
                f"{self.name}: flush", self.task.flush, self.stop_event
            )
        self.dirty = False
        if self.dlq is not None and self.dlq.flush(30):
            raise ConnectError("records for the dead-letter topic were not delivered in 30 s")
        offsets = {tp: o for tp, o in flushed.items() if tp in self.assigned}
        offsets.update(self.consumed)
        if self.assigned:
            asked = [TopicPartition(t, p) for t, p in self.assigned]
            for tp in self.consumer.position(asked):
                key = (tp.topic, tp.partition)
                if tp.offset >= 0 and tp.offset > offsets.get(key, -1):
                    offsets[key] = tp.offset
        offsets = {
            tp: o
            for tp, o in offsets.items()
            if (only is None or tp in only) and o > self.committed.get(tp, -1)
        }
        if not offsets:
            return
        commit: Any = self.consumer.commit
        commit(
            offsets=[TopicPartition(t, p, o) for (t, p), o in offsets.items()],
            asynchronous=asynchronous,
        )
        for where, o in offsets.items():
            self.consumed.pop(where, None)
            self.committed[where] = o

    def _on_assign(self, consumer: Any, partitions: list[TopicPartition]) -> None:
        try:
            keys: list[TP] = [(tp.topic, tp.partition) for tp in partitions]
            stored: Mapping[TP, int] = self.prepared.policy.retry(
                f"{self.name}: open", lambda: self.task.open(keys), self.stop_event
            )
            for tp in partitions:
                start = stored.get((tp.topic, tp.partition))
                if start is not None:
                    tp.offset = start
            consumer.assign(partitions)
            if self.paused.is_set():
                consumer.pause(partitions)
            self.assigned.update(keys)
            log.info(
                "connector %s task %d: assigned %s",
                self.name,
                self.task_id,
                ", ".join(f"{t}-{p}" for t, p in keys) or "nothing",
            )
        except BaseException as exc:  # raised in librdkafka's callback: keep it for the loop
            self.callback_error = exc

    def _on_revoke(self, consumer: Any, partitions: list[TopicPartition]) -> None:
        keys = {(tp.topic, tp.partition) for tp in partitions}
        try:
            if self.healthy and self.callback_error is None:
                self._flush_and_commit(asynchronous=False, only=keys)
            self._close(keys)
        except BaseException as exc:
            self.callback_error = exc

    def _on_lost(self, consumer: Any, partitions: list[TopicPartition]) -> None:
        keys = {(tp.topic, tp.partition) for tp in partitions}
        try:
            self._close(keys)
        except BaseException as exc:
            self.callback_error = exc

    def _close(self, keys: set[TP]) -> None:
        for tp in keys:
            self.consumed.pop(tp, None)
            self.committed.pop(tp, None)
        closing = keys & self.assigned
        self.assigned -= keys
        if closing:
            self.task.close(sorted(closing))

    def _finish(self) -> None:
        try:
            if self.healthy and self.callback_error is None:
                try:
                    self._flush_and_commit(asynchronous=False)
                except Exception as exc:
                    self.healthy = False
                    log.warning(
                        "connector %s task %d: final flush: %s", self.name, self.task_id, exc
                    )
                    raise
        finally:
            self.healthy = self.healthy and self.callback_error is None
            try:
                self.consumer.close()  # revokes: flush (nothing left) and close
            except (KafkaException, RuntimeError) as exc:
                log.warning("connector %s task %d: closing: %s", self.name, self.task_id, exc)
            if self.assigned:
                _quietly(lambda: self._close(set(self.assigned)))
            _quietly(self.task.stop)


def _message_at(messages: list[Message], where: tuple[str, int, int]) -> Message | None:
    """The consumed message at ``where`` (topic, partition, offset), for a refused record."""
    for msg in messages:
        if msg.error() is None and (msg.topic(), msg.partition(), msg.offset()) == where:
            return msg
    return None


def _headers(msg: Message) -> tuple[tuple[str, bytes | None], ...]:
    raw: Any = msg.headers() or ()
    return tuple((name, value.encode() if isinstance(value, str) else value) for name, value in raw)


def _quietly(call: Callable[[], object]) -> None:
    try:
        call()
    except Exception as exc:
        log.warning("connector task cleanup: %s", exc)


__all__: Sequence[str] = ["SinkTaskRunner", "group_id"]
