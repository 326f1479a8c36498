"""A source task's loop: records from the task into topics, exactly once.

Theory of operation
-------------------
Each task has a transactional producer, ``transactional.id`` = ``connect-{name}-{task}``
(stable: a restarted task fences its predecessor's open transaction at once).  At start it
reads the task's last position from ``_bayou_connect_offsets`` (``read_committed``) and
hands it to ``start``.  Then, per ``poll`` batch, one transaction holds the batch's records
(transformed, then serialized by the converters) and the position of its last record under
the task's key in ``_bayou_connect_offsets``; once the transaction is committed the task's
``commit`` hears the position.  So a record is in its topic exactly when the position after
it is stored: a crash anywhere aborts both, and the restarted task starts after the last
committed batch — no loss, no duplicate, for a source that can start again from a position
(files, a replication slot).

A transform or converter failure fails the task under ``errors.tolerance=none`` and skips
the record under ``all`` (Kafka Connect has no dead-letter topic for sources either).  A
transaction that cannot commit is aborted and written again (same records, same position)
with back-off; a fenced producer (another copy of the task took over) fails the task.
"""

from __future__ import annotations

import functools
import json
import logging
from typing import Any

from confluent_kafka import KafkaException, Producer

from bayou.connect.api import ConnectError, JsonValue, SourceRecord, SourceTask
from bayou.connect.runtime.converters import ConversionError
from bayou.connect.runtime.errors import (
    KEY_CONVERTER,
    TRANSFORMATION,
    VALUE_CONVERTER,
    RateLimitedLog,
    Stopped,
    ToleranceExceeded,
)
from bayou.connect.runtime.offsets import OFFSETS_TOPIC, offset_key, read_position
from bayou.connect.runtime.task import PAUSED, RUNNING, TaskRunner
from bayou.connect.transforms import StepError, run_chain

log = logging.getLogger(__name__)

POLL_TIMEOUT_S = 0.5
TRANSACTION_TIMEOUT_MS = 60_000
COMMIT_ATTEMPTS = 10

Serialized = tuple[str, bytes | None, bytes | None, int | None, int | None, list[Any] | None]


class SourceTaskRunner(TaskRunner):
    def work(self) -> None:
        prepared = self.prepared
        policy = prepared.policy
        task_class = prepared.task_class
        assert issubclass(task_class, SourceTask)
        self.task: SourceTask = task_class(self.config)
        self.errors_log = RateLimitedLog()
        self.key = offset_key(self.name, self.task_id)
        self.producer = Producer(
            {
                **self.client_config,
                "transactional.id": f"connect-{self.name}-{self.task_id}",
                "transaction.timeout.ms": TRANSACTION_TIMEOUT_MS,
                "client.id": f"connect-{self.name}-{self.task_id}",
                "linger.ms": 5,
            }
        )
        self.producer.init_transactions(30)
        position = read_position(self.client_config, self.name, self.task_id)
        log.info(
            "connector %s task %d: starting from %s",
            self.name,
            self.task_id,
            "the beginning" if position is None else json.dumps(position)[:200],
        )
        policy.retry(f"{self.name}: start", lambda: self.task.start(position), self.stop_event)
        try:
            while not self.stop_event.is_set():
                if self.paused.is_set():
                    self.state = PAUSED
                    self.stop_event.wait(0.2)
                    continue
                self.state = RUNNING
                records = policy.retry(
                    f"{self.name}: poll", lambda: self.task.poll(POLL_TIMEOUT_S), self.stop_event
                )
                if not records:
                    continue
                out = [s for s in (self._serialize(r) for r in records) if s is not None]
                last: JsonValue = records[-1].position
                self._write(out, last)
                policy.retry(
                    f"{self.name}: commit",
                    functools.partial(self.task.commit, last),
                    self.stop_event,
                )
        finally:
            try:
                self.task.stop()
            except Exception as exc:
                log.warning("connector %s task %d: stop: %s", self.name, self.task_id, exc)
            self.producer.flush(5)

    def _serialize(self, record: SourceRecord) -> Serialized | None:
        prepared = self.prepared
        stage = TRANSFORMATION
        try:
            transformed: SourceRecord | None = record
            if prepared.chain:
                transformed = run_chain(prepared.chain, record)
                if transformed is None:
                    return None
            assert transformed is not None
            stage = KEY_CONVERTER
            key = prepared.key_converter.to_bytes(transformed.key)
            stage = VALUE_CONVERTER
            value = prepared.value_converter.to_bytes(transformed.value)
        except (ConversionError, StepError) as exc:
            if not prepared.policy.tolerance_all:
                raise ToleranceExceeded(
                    f"Tolerance exceeded in error handler: {stage} failed: {exc}"
                ) from exc
            if prepared.policy.log_errors:
                self.errors_log.warning(
                    "connector %s: %s failed, skipped: %s", self.name, stage, exc
                )
            return None
        headers = list(transformed.headers) or None
        return (
            transformed.topic,
            key,
            value,
            transformed.partition,
            transformed.timestamp_ms,
            headers,
        )

    def _write(self, records: list[Serialized], position: JsonValue) -> None:
        """One transaction: the records and the position after them (module docstring)."""
        producer = self.producer
        position_bytes = json.dumps(position, separators=(",", ":")).encode()
        delay = 0.2
        for attempt in range(1, COMMIT_ATTEMPTS + 1):
            producer.begin_transaction()
            for topic, key, value, partition, timestamp, headers in records:
                extra: dict[str, Any] = {}
                if partition is not None:
                    extra["partition"] = partition
                if timestamp is not None:
                    extra["timestamp"] = timestamp
                if headers:
                    extra["headers"] = headers
                self._produce(topic, value, key, extra)
            self._produce(OFFSETS_TOPIC, position_bytes, self.key, {})
            try:
                producer.commit_transaction(60)
                return
            except KafkaException as exc:
                error = exc.args[0]
                if error.fatal() or not (error.txn_requires_abort() or error.retriable()):
                    raise ConnectError(f"the transaction failed: {error}") from None
                log.warning(
                    "connector %s task %d: transaction attempt %d failed, again: %s",
                    self.name,
                    self.task_id,
                    attempt,
                    error,
                )
                try:
                    producer.abort_transaction(30)
                except KafkaException as abort_exc:
                    raise ConnectError(f"cannot abort the transaction: {abort_exc}") from None
                if self.stop_event.wait(delay):
                    raise Stopped() from None
                delay = min(delay * 2, 5.0)
        raise ConnectError(f"the transaction failed {COMMIT_ATTEMPTS} times")

    def _produce(
        self, topic: str, value: bytes | None, key: bytes | None, extra: dict[str, Any]
    ) -> None:
        for _ in range(2000):
            try:
                self.producer.produce(topic, value, key, **extra)
                return
            except BufferError:
                self.producer.poll(0.05)
        raise ConnectError("the producer's queue stays full")
