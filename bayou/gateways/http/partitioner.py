"""Where a record without an explicit partition goes, as Kafka's Java producer decides.

Keyed records: ``murmur2(key) & 0x7fffffff`` modulo the partition count — the Java client's
default partitioner (and librdkafka's ``murmur2_random``), so a key lands on the same
partition whichever door it came through.  Unkeyed records: round-robin per topic.

``murmur2`` is MurmurHash2 (Austin Appleby), 32-bit, with Kafka's seed ``0x9747b28c``, written
here from the algorithm's definition: 4-byte little-endian blocks mixed with ``m = 0x5bd1e995``
and ``r = 24``, the 1-3 byte tail folded in, then a final avalanche.
"""

from __future__ import annotations

import itertools

_SEED = 0x9747B28C
_M = 0x5BD1E995
_MASK = 0xFFFFFFFF


def murmur2(data: bytes) -> int:
    """Kafka's ``Utils.murmur2``: the signed 32-bit MurmurHash2 of ``data``."""
    length = len(data)
    h = (_SEED ^ length) & _MASK
    tail = length & ~3
    for i in range(0, tail, 4):
        k = int.from_bytes(data[i : i + 4], "little")
        k = (k * _M) & _MASK
        k ^= k >> 24
        k = (k * _M) & _MASK
        h = ((h * _M) & _MASK) ^ k
    rest = length & 3
    if rest == 3:
        h ^= data[tail + 2] << 16
    if rest >= 2:
        h ^= data[tail + 1] << 8
    if rest >= 1:
        h ^= data[tail]
        h = (h * _M) & _MASK
    h ^= h >> 13
    h = (h * _M) & _MASK
    h ^= h >> 15
    return h - (1 << 32) if h & 0x80000000 else h


def partition_for_key(key: bytes, partitions: int) -> int:
    return (murmur2(key) & 0x7FFFFFFF) % partitions


class Partitioner:
    """Keyed → murmur2; unkeyed → round-robin per topic (a counter per topic)."""

    def __init__(self) -> None:
        self._counters: dict[str, itertools.count[int]] = {}

    def partition(self, topic: str, key: bytes | None, partitions: int) -> int:
        if key is not None:
            return partition_for_key(key, partitions)
        counter = self._counters.get(topic)
        if counter is None:
            counter = self._counters[topic] = itertools.count()
        return next(counter) % partitions
