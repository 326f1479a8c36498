"""The engine-neutral rules of a log's lifecycle: which segments retention deletes, where
DeleteRecords may move the log start, when a topic may grow (Kafka's rules, one copy).

Every engine keeps a partition as segments (the local engine's files, the memory engine's
lists) because retention deletes whole segments; these functions decide, the engine acts.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

from bayou.config import TopicConfig
from bayou.errors import ErrorCode, InvalidPartitions, KafkaError, OffsetOutOfRange
from bayou.storage.metadata import TopicMeta


class Segment(Protocol):
    @property
    def base_offset(self) -> int: ...

    @property
    def size(self) -> int: ...

    @property
    def empty(self) -> bool: ...

    def largest_timestamp(self) -> int:
        """What time retention judges the segment by (Kafka's ``largestTimestamp``)."""
        ...


def deletable_segments(
    segments: Sequence[Segment],
    log_start_offset: int,
    size_bytes: int,
    config: TopicConfig,
    now: int,
) -> int:
    """How many leading segments retention (``retention.ms``/``retention.bytes`` under
    ``cleanup.policy=delete``) or the log start offset removes."""
    count = 0
    while count < len(segments) - 1 and segments[count + 1].base_offset <= log_start_offset:
        count += 1
    if config.delete:
        if config.retention_ms >= 0:
            k = 0
            while (
                k < len(segments)
                and not segments[k].empty
                and now - segments[k].largest_timestamp() > config.retention_ms
            ):
                k += 1
            count = max(count, k)
        if config.retention_bytes >= 0:
            k = 0
            excess = size_bytes - config.retention_bytes
            while k < len(segments) and not segments[k].empty and excess - segments[k].size >= 0:
                excess -= segments[k].size
                k += 1
            count = max(count, k)
    return count


def delete_records_target(
    topic: str, index: int, config: TopicConfig, log_end_offset: int, offset: int
) -> int:
    """Where DeleteRecords moves the log start (``offset``; -1: the high watermark);
    raises what Kafka answers (POLICY_VIOLATION on compacted topics, OFFSET_OUT_OF_RANGE)."""
    if not config.delete:
        raise KafkaError(
            f"Records of {topic}-{index} cannot be deleted: its cleanup.policy is "
            f"{config['cleanup.policy']}",
            ErrorCode.POLICY_VIOLATION,
        )
    target = log_end_offset if offset == -1 else offset
    if not 0 <= target <= log_end_offset:
        raise OffsetOutOfRange(
            f"offset {offset} is beyond the high watermark {log_end_offset} of {topic}-{index}"
        )
    return target


def check_new_partition_count(meta: TopicMeta, total: int) -> None:
    """CreatePartitions may only grow a topic."""
    if total <= meta.partitions:
        raise InvalidPartitions(
            f"topic {meta.name!r} has {meta.partitions} partitions; {total} is not more"
        )
