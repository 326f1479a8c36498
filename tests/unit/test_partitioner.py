"""The shared partitioner: Kafka's murmur2 for keys, round-robin otherwise."""

from __future__ import annotations

import pytest

from bayou.core.partitioner import Partitioner, murmur2, partition_for_key


@pytest.mark.parametrize(
    ("text", "expected"),
    [  # the values Kafka's own tests pin for Utils.murmur2
        ("21", -973932308),
        ("foobar", -790332482),
        ("a-little-bit-long-string", -985981536),
        ("a-little-bit-longer-string", -1486304829),
        ("lkjh234lh9fiuh90y23oiuhsafujhadof229phr9h19h89h8", -58897971),
        ("abc", 479470107),
    ],
)
def test_murmur2_matches_kafka(text: str, expected: int) -> None:
    assert murmur2(text.encode()) == expected


def test_keyed_and_round_robin_partitions() -> None:
    assert partition_for_key(b"21", 10) == (-973932308 & 0x7FFFFFFF) % 10
    p = Partitioner()
    assert [p.partition("t", None, 3) for _ in range(5)] == [0, 1, 2, 0, 1]
    assert p.partition("u", None, 3) == 0
    assert p.partition("t", b"abc", 3) == partition_for_key(b"abc", 3)
