"""Which topics and groups are mirrored, and keeping target topics' shape and configs.

Topics are chosen by regular expressions matched against the whole name (``--topics``,
default every topic; ``--exclude-topics``); internal topics are never mirrored: names
starting with ``__`` (``__consumer_offsets``, ``__transaction_state``, the mirrors' own
state topics) and MirrorMaker 2's ``*.internal`` and ``mm2-*`` topics.

Configs copied are the ones set on the source topic (DescribeConfigs source
``DYNAMIC_TOPIC_CONFIG``), minus those that describe the source cluster rather than the
data (``EXCLUDED_CONFIGS``, as MirrorMaker 2 leaves out); on a mirror-only topic a config
set on the target but no longer on the source is deleted too.  ``message.timestamp.type``
is not copied: the mirror produces every record with its source timestamp, and a
LogAppendTime target would overwrite it.  Partition counts only grow (Kafka cannot shrink
a topic), to the source's count.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

EXCLUDED_CONFIGS = frozenset(
    {
        "message.timestamp.type",
        "min.insync.replicas",
        "unclean.leader.election.enable",
        "follower.replication.throttled.replicas",
        "leader.replication.throttled.replicas",
        "message.timestamp.difference.max.ms",
        "message.timestamp.before.max.ms",
        "message.timestamp.after.max.ms",
        "confluent.placement.constraints",
    }
)


@dataclass(frozen=True)
class Selection:
    """Include and exclude patterns (full matches)."""

    include: Sequence[re.Pattern[str]]
    exclude: Sequence[re.Pattern[str]] = ()

    def __call__(self, name: str) -> bool:
        return any(p.fullmatch(name) for p in self.include) and not any(
            p.fullmatch(name) for p in self.exclude
        )


def is_internal_topic(name: str) -> bool:
    return name.startswith("__") or name.endswith(".internal") or name.startswith("mm2-")


def wait(future: Any, timeout: float) -> Any:
    """A confluent-kafka future's result, bounded."""
    return future.result(timeout=timeout)


def partition_counts(admin: Any, timeout: float) -> dict[str, int]:
    """Every topic of a cluster and its partition count."""
    metadata = admin.list_topics(timeout=timeout)
    return {
        name: len(meta.partitions) for name, meta in metadata.topics.items() if meta.error is None
    }


def set_configs(admin: Any, topic: str, timeout: float) -> dict[str, str]:
    """The configs set on ``topic`` (not defaults), by name."""
    from confluent_kafka.admin import ConfigResource, ConfigSource, ResourceType  # type: ignore[attr-defined]

    resource = ConfigResource(ResourceType.TOPIC, topic)
    entries = wait(admin.describe_configs([resource], request_timeout=timeout)[resource], timeout)
    return {
        name: entry.value
        for name, entry in entries.items()
        if entry.source == ConfigSource.DYNAMIC_TOPIC_CONFIG.value
        and entry.value is not None
        and not entry.is_sensitive
    }


def copied_configs(configs: dict[str, str]) -> dict[str, str]:
    return {k: v for k, v in configs.items() if k not in EXCLUDED_CONFIGS}


def create_topic(
    admin: Any, topic: str, partitions: int, configs: dict[str, str], timeout: float
) -> bool:
    """Create ``topic``; False when it already exists."""
    from confluent_kafka import KafkaError, KafkaException
    from confluent_kafka.admin import NewTopic  # type: ignore[attr-defined]

    new = NewTopic(topic, num_partitions=partitions, replication_factor=-1, config=configs)
    try:
        wait(admin.create_topics([new], request_timeout=timeout)[topic], timeout)
    except KafkaException as exc:
        if exc.args and exc.args[0].code() == KafkaError.TOPIC_ALREADY_EXISTS:
            return False
        raise
    return True


def grow_partitions(admin: Any, topic: str, partitions: int, timeout: float) -> None:
    from confluent_kafka.admin import NewPartitions  # type: ignore[attr-defined]

    wait(
        admin.create_partitions([NewPartitions(topic, partitions)], request_timeout=timeout)[topic],
        timeout,
    )


def align_configs(
    admin: Any,
    topic: str,
    wanted: dict[str, str],
    present: dict[str, str],
    delete_extra: bool,
    timeout: float,
) -> list[str]:
    """Set on the target what differs from ``wanted`` (and delete what the source no longer
    sets, when ``delete_extra``); the names changed."""
    from confluent_kafka.admin import (  # type: ignore[attr-defined]
        AlterConfigOpType,
        ConfigEntry,
        ConfigResource,
        ResourceType,
    )

    ops = [
        ConfigEntry(name, value, incremental_operation=AlterConfigOpType.SET)
        for name, value in sorted(wanted.items())
        if present.get(name) != value
    ]
    if delete_extra:
        ops += [
            ConfigEntry(name, None, incremental_operation=AlterConfigOpType.DELETE)
            for name in sorted(copied_configs(present))
            if name not in wanted
        ]
    if not ops:
        return []
    resource = ConfigResource(ResourceType.TOPIC, topic, incremental_configs=ops)
    futures = admin.incremental_alter_configs([resource], request_timeout=timeout)
    wait(futures[resource], timeout)
    return [op.name for op in ops]


def end_offset(admin: Any, topic: str, partition: int, timeout: float) -> int:
    """A partition's end offset (high watermark), asked of its leader now (a consumer's
    metadata cache may not know a partition added moments ago)."""
    from confluent_kafka import TopicPartition
    from confluent_kafka.admin import OffsetSpec  # type: ignore[attr-defined]

    tp = TopicPartition(topic, partition)
    futures = admin.list_offsets(
        {tp: OffsetSpec.latest()},  # type: ignore[no-untyped-call]
        request_timeout=timeout,
    )
    return int(wait(next(iter(futures.values())), timeout).offset)
