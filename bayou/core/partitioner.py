"""Where a record without an explicit partition goes, as Kafka's Java producer decides.

Shared by every door that builds records (HTTP, MQTT, AMQP), so a key lands on the same
partition whichever door it came through — and the same one a Kafka client picks.

Keyed records: ``murmur2(key) & 0x7fffffff`` modulo the partition count (the Java client's
default partitioner; librdkafka's ``murmur2_random``).  Unkeyed records: round-robin per topic.

``murmur2`` is MurmurHash2 (Austin Appleby), 32-bit, seed ``0x9747b28c`` as Kafka uses it:
4-byte little-endian blocks mixed with ``m = 0x5bd1e995``, ``r = 24``; the 1-3 byte tail
folded in; a final avalanche (``>> 13``, ``* m``, ``>> 15``).
"""

from __future__ import annotations

_SEED = 0x9747B28C
_M = 0x5BD1E995
_MASK = 0xFFFFFFFF


def murmur2(data: bytes) -> int:
    """Kafka's ``Utils.murmur2``: the signed 32-bit MurmurHash2 of ``data``."""
    length = len(data)
    h = (_SEED ^ length) & _MASK
    blocks = length & ~3
    for i in range(0, blocks, 4):
        k = int.from_bytes(data[i : i + 4], "little")
        k = (k * _M) & _MASK
        k ^= k >> 24
        k = (k * _M) & _MASK
        h = ((h * _M) & _MASK) ^ k
    rest = length & 3
    if rest == 3:
        h ^= data[blocks + 2] << 16
    if rest >= 2:
        h ^= data[blocks + 1] << 8
    if rest:
        h ^= data[blocks]
        h = (h * _M) & _MASK
    h ^= h >> 13
    h = (h * _M) & _MASK
    h ^= h >> 15
    return h - (1 << 32) if h & 0x80000000 else h


def partition_for_key(key: bytes, partitions: int) -> int:
    return (murmur2(key) & 0x7FFFFFFF) % partitions


class Partitioner:
    """Keyed → murmur2; unkeyed → round-robin per topic."""

    def __init__(self) -> None:
        self._next: dict[str, int] = {}

    def partition(self, topic: str, key: bytes | None, partitions: int) -> int:
        if partitions <= 1:
            return 0
        if key is not None:
            return partition_for_key(key, partitions)
        n = self._next.get(topic, 0)
        self._next[topic] = n + 1
        return n % partitions
