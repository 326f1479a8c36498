"""Consumer-group lag: the log end minus the committed offset, per group and partition.

Read from the group coordinator's committed offsets (every group with offsets — with live
members or none, classic, consumer-protocol or "simple" groups of ``assign()`` readers) and
the engine's log end offsets, on the event loop and without I/O: both are in memory.  The
``/metrics`` scrape and the console ask the same question here.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from bayou.errors import KafkaError

if TYPE_CHECKING:
    from bayou.core.core import Core


@dataclass(frozen=True)
class PartitionLag:
    group: str
    topic: str
    partition: int
    committed: int
    log_end_offset: int
    log_start_offset: int

    @property
    def lag(self) -> int:
        """Records between the committed offset and the log end (a committed offset below
        the log start counts from the log start: those records are gone)."""
        return max(0, self.log_end_offset - max(self.committed, self.log_start_offset))


def group_lags(core: Core, groups: Iterable[str] | None = None) -> list[PartitionLag]:
    """The lag of every partition with a committed offset, for ``groups`` (None: all),
    ordered by group, topic, partition.  Partitions of deleted topics are left out."""
    driver = core.groups
    if driver is None:
        return []
    offsets = driver.read().offsets
    wanted = sorted(offsets) if groups is None else [g for g in groups if g in offsets]
    out: list[PartitionLag] = []
    for group in wanted:
        for (topic, partition), value in sorted(offsets[group].items()):
            try:
                p = core.partition(topic, partition)
            except KafkaError:
                continue
            out.append(
                PartitionLag(
                    group, topic, partition, value.offset, p.log_end_offset, p.log_start_offset
                )
            )
    return out
