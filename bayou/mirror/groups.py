"""Consumer groups' committed offsets, carried from the source to the target.

For each source group the selection admits (never the mirror's own), the committed offsets
of mirrored partitions are translated (``OffsetMap.translate``: the identity on a
gap-free mirror-only partition, else by the offset syncs, never beyond what the target has
acknowledged) and committed to the same group in the target — as MirrorMaker 2's
checkpoints with ``sync.group.offsets.enabled`` do, with the same two rules:

- a group that has members in the target is left alone (its consumers commit for
  themselves: they have failed over already);
- a target offset is only moved forward, never rewound (a consumer that ran on the target
  and went away keeps its progress).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from bayou.mirror.topics import Selection, wait

IDLE_STATES = {"EMPTY", "DEAD", "UNKNOWN"}

Translate = Callable[[str, int, int], int | None]


def source_groups(admin: Any, select: Selection, own: str, timeout: float) -> list[str]:
    listed = wait(admin.list_consumer_groups(request_timeout=timeout), timeout)
    return sorted(g.group_id for g in listed.valid if g.group_id != own and select(g.group_id))


def committed(admin: Any, group: str, timeout: float) -> dict[tuple[str, int], int]:
    from confluent_kafka import ConsumerGroupTopicPartitions

    futures = admin.list_consumer_group_offsets(
        [ConsumerGroupTopicPartitions(group)], request_timeout=timeout
    )
    result = wait(futures[group], timeout)
    return {(tp.topic, tp.partition): tp.offset for tp in result.topic_partitions if tp.offset >= 0}


def has_members(admin: Any, group: str, timeout: float) -> bool:
    description = wait(
        admin.describe_consumer_groups([group], request_timeout=timeout)[group], timeout
    )
    state = getattr(description.state, "name", str(description.state)).upper()
    return bool(description.members) or state not in IDLE_STATES


def sync_group(
    source: Any, target: Any, group: str, translate: Translate, timeout: float
) -> dict[tuple[str, int], int] | None:
    """Commit ``group``'s translated offsets in the target; the offsets moved (None when the
    group is active in the target and was left alone)."""
    from confluent_kafka import ConsumerGroupTopicPartitions, TopicPartition

    wanted: dict[tuple[str, int], int] = {}
    for (topic, partition), offset in committed(source, group, timeout).items():
        translated = translate(topic, partition, offset)
        if translated is not None:
            wanted[(topic, partition)] = translated
    if not wanted:
        return {}
    if has_members(target, group, timeout):
        return None
    present = committed(target, group, timeout)
    moved = {tp: o for tp, o in wanted.items() if present.get(tp, -1) < o}
    if moved:
        request = ConsumerGroupTopicPartitions(
            group, [TopicPartition(t, p, o) for (t, p), o in sorted(moved.items())]
        )
        wait(
            target.alter_consumer_group_offsets([request], request_timeout=timeout)[group], timeout
        )
    return moved
