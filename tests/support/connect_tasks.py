"""Tiny connector tasks for the runtime's tests (``connector.class`` =
``tests.support.connect_tasks:RecordingSink``): they record what the runtime hands them, in
this process, so a test can check the runtime's side of the lifecycle."""

from __future__ import annotations

import threading
from collections.abc import Collection, Mapping, Sequence
from typing import ClassVar

from bayou.connect.api import (
    ConnectorConfig,
    RecordError,
    RetriableError,
    SinkRecord,
    SinkTask,
    TopicPartition,
)


class Target:
    """What one connector's sink tasks wrote ("the target"), shared by its tasks."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.stored_offsets: dict[TopicPartition, int] = {}  # what open() answers
        self.buffered: list[SinkRecord] = []
        self.durable: list[SinkRecord] = []
        self.opened: list[list[TopicPartition]] = []
        self.closed: list[list[TopicPartition]] = []
        self.flushes = 0
        self.flush_gate = threading.Event()
        self.flush_gate.set()
        self.put_failures = 0  # raise RetriableError this many times
        self.put_attempts = 0
        self.refuse_value: object = None  # a value put() refuses with RecordError


class RecordingSink(SinkTask):
    """Buffers in ``put``, makes durable in ``flush``; one ``Target`` per connector name."""

    targets: ClassVar[dict[str, Target]] = {}

    def __init__(self, config: ConnectorConfig) -> None:
        super().__init__(config)
        self.target = self.targets.setdefault(config.name, Target())
        self.mine: list[SinkRecord] = []

    def open(self, partitions: Collection[TopicPartition]) -> Mapping[TopicPartition, int]:
        with self.target.lock:
            self.target.opened.append(sorted(partitions))
            return {tp: o for tp, o in self.target.stored_offsets.items() if tp in partitions}

    def put(self, records: Sequence[SinkRecord]) -> None:
        target = self.target
        with target.lock:
            target.put_attempts += 1
            if target.put_failures > 0:
                target.put_failures -= 1
                raise RetriableError("the target is busy")
            for record in records:
                if target.refuse_value is not None and record.value == target.refuse_value:
                    raise RecordError("refused", record)
            self.mine.extend(records)
            target.buffered.extend(records)

    def flush(self) -> Mapping[TopicPartition, int]:
        self.target.flush_gate.wait(60)
        with self.target.lock:
            self.target.flushes += 1
            offsets: dict[TopicPartition, int] = {}
            for record in self.mine:
                offsets[record.topic_partition] = record.offset + 1
                self.target.durable.append(record)
                self.target.stored_offsets[record.topic_partition] = record.offset + 1
            self.mine.clear()
            return offsets

    def close(self, partitions: Collection[TopicPartition]) -> None:
        with self.target.lock:
            self.target.closed.append(sorted(partitions))


class NullSink(SinkTask):
    """Takes records and counts them (the runtime's own cost, for the benchmark)."""

    counts: ClassVar[dict[str, int]] = {}

    def open(self, partitions: Collection[TopicPartition]) -> Mapping[TopicPartition, int]:
        return {}

    def put(self, records: Sequence[SinkRecord]) -> None:
        self.counts[self.config.name] = self.counts.get(self.config.name, 0) + len(records)
        self.last: dict[TopicPartition, int] = getattr(self, "last", {})
        self.last.update({r.topic_partition: r.offset + 1 for r in records})

    def flush(self) -> Mapping[TopicPartition, int]:
        return getattr(self, "last", {})
