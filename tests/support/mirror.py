"""A ``bayou mirror run`` child process for tests, stopped or killed by PID, and readers that
take a whole partition from a cluster for comparisons."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from confluent_kafka import Consumer, KafkaException, TopicPartition


class MirrorProcess:
    """``bayou mirror run --source S --target T --name NAME [args]``, logging to a file."""

    def __init__(
        self,
        source: str,
        target: str,
        name: str,
        log_path: Path,
        *args: str,
        env: dict[str, str] | None = None,
    ) -> None:
        self.env = {**os.environ, **(env or {})}
        self.command = [
            sys.executable,
            "-m",
            "bayou",
            "mirror",
            "run",
            "--source",
            source,
            "--target",
            target,
            "--name",
            name,
            "--interval",
            "0.5",
            *args,
        ]
        self.log_path = log_path
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> MirrorProcess:
        log = open(self.log_path, "ab")  # noqa: SIM115 - handed to the child
        self.proc = subprocess.Popen(
            self.command, stdout=log, stderr=subprocess.STDOUT, env=self.env
        )
        log.close()
        return self

    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def stop(self, timeout: float = 60.0) -> int:
        """SIGTERM and wait: the exit code."""
        assert self.proc is not None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(timeout)

    def kill(self) -> None:
        """kill -9, as a crash would."""
        if self.proc is not None and self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGKILL)
            self.proc.wait(10)

    def log_text(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except OSError:
            return ""


@dataclass(frozen=True)
class Stored:
    """One record as a consumer sees it, everything a mirror must keep."""

    offset: int
    key: bytes | None
    value: bytes | None
    headers: tuple[tuple[str, bytes | None], ...]
    timestamp: int


def consumer(bootstrap: str, **extra: Any) -> Any:
    return Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": "test-mirror-reader",
            "enable.auto.commit": False,
            "auto.offset.reset": "earliest",
            **extra,
        }
    )


def end_offsets(bootstrap: str, topic: str, partitions: int) -> list[int]:
    """The partitions' end offsets (one client); -1 for a partition the cluster does not know."""
    reader = consumer(bootstrap)
    try:
        out = []
        for p in range(partitions):
            try:
                out.append(
                    int(reader.get_watermark_offsets(TopicPartition(topic, p), timeout=10)[1])
                )
            except KafkaException:
                out.append(-1)
        return out
    finally:
        reader.close()


def end_offset(bootstrap: str, topic: str, partition: int) -> int:
    """The partition's end offset; -1 while the cluster does not know it."""
    return end_offsets(bootstrap, topic, partition + 1)[partition]


def read_partition(
    bootstrap: str, topic: str, partition: int, start: int = 0, timeout: float = 60.0
) -> list[Stored]:
    """Every record of one partition from ``start`` to its current end (bounded wait)."""
    import time

    reader = consumer(bootstrap, **{"isolation.level": "read_committed"})
    try:
        tp = TopicPartition(topic, partition)
        end = int(reader.get_watermark_offsets(tp, timeout=10)[1])
        out: list[Stored] = []
        if end <= start:
            return out
        reader.assign([TopicPartition(topic, partition, start)])
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for m in reader.consume(num_messages=1000, timeout=0.5):
                assert m.error() is None, m.error()
                out.append(
                    Stored(
                        m.offset(), m.key(), m.value(), tuple(m.headers() or ()), m.timestamp()[1]
                    )
                )
            if out and out[-1].offset >= end - 1:
                return out
            if reader.position([tp])[0].offset >= end:
                return out
        raise AssertionError(f"reading {topic}-{partition} up to {end} took over {timeout}s")
    finally:
        reader.close()
