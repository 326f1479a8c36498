"""Helpers shared by the client integration tests: expected messages and their checks."""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass


@dataclass(frozen=True)
class Sent:
    """One message as a test produced it."""

    partition: int
    key: bytes | None
    value: bytes
    headers: tuple[tuple[str, bytes], ...]
    timestamp_ms: int


def unique_topic(prefix: str = "t") -> str:
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


def make_messages(count: int, partitions: int, *, base_ts: int | None = None) -> list[Sent]:
    """Deterministic messages with keys, headers and increasing timestamps."""
    base = base_ts if base_ts is not None else int(time.time() * 1000) - 60_000
    return [
        Sent(
            partition=i % partitions,
            key=f"key-{i % 97}".encode(),
            value=f"value-{i}-".encode() + bytes([i % 251]) * (i % 300),
            headers=(("seq", str(i).encode()), ("source", b"test")),
            timestamp_ms=base + i,
        )
        for i in range(count)
    ]


def by_partition(messages: list[Sent]) -> dict[int, list[Sent]]:
    out: dict[int, list[Sent]] = {}
    for m in messages:
        out.setdefault(m.partition, []).append(m)
    return out
