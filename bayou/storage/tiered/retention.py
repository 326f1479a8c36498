"""Retention of a tiered partition: what goes everywhere, and which local copies go.

Two rules, Kafka's (KIP-405):

- ``retention.ms``/``retention.bytes`` (and the log start offset) decide when data is gone
  *everywhere*.  They judge the partition's whole log — the segments only the store has,
  then the local ones — exactly as for a log without tiering (``storage/retention.py``'s
  ``deletable_segments``, unchanged): a prefix of it is deleted, remote copies included,
  and the log start offset moves past it.
- ``local.retention.ms``/``local.retention.bytes`` (-2: the values above) decide when the
  *local copy* of a segment goes: a prefix of the local segments older or larger than they
  allow, limited to segments whose remote copy is complete (``copied``) and never the
  active segment.  The log start offset does not move: the data is still there, remotely.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

from bayou.config import TopicConfig
from bayou.storage.retention import deletable_segments


class Segment(Protocol):
    @property
    def base_offset(self) -> int: ...

    @property
    def next_offset(self) -> int: ...

    @property
    def size(self) -> int: ...

    @property
    def empty(self) -> bool: ...

    def largest_timestamp(self) -> int: ...


def tiered_deletions(
    remote_only: Sequence[Segment],
    local: Sequence[Segment],
    log_start_offset: int,
    local_size: int,
    config: TopicConfig,
    now: int,
    copied_end: int | None,
) -> tuple[int, int, int]:
    """(remote-only segments to delete, local segments to delete everywhere, further local
    segments whose local copy only is deleted), each a count from the front."""
    logical = [*remote_only, *local]
    total = local_size + sum(s.size for s in remote_only)
    count = deletable_segments(logical, log_start_offset, total, config, now)
    n_remote = min(count, len(remote_only))
    n_local = count - n_remote
    kept = local[n_local:]
    local_only = 0
    if config.remote_storage_enable and copied_end is not None:
        kept_size = local_size - sum(s.size for s in local[:n_local])
        local_only = local_copies_to_delete(kept, kept_size, config, now, copied_end)
    return n_remote, n_local, local_only


def local_copies_to_delete(
    local: Sequence[Segment], size: int, config: TopicConfig, now: int, copied_end: int
) -> int:
    """How many leading local segments ``local.retention.*`` removes (copied ones only)."""
    limit = 0
    while limit < len(local) - 1 and local[limit].next_offset <= copied_end:
        limit += 1
    count = 0
    if config.local_retention_ms >= 0:
        k = 0
        while (
            k < limit
            and not local[k].empty
            and now - local[k].largest_timestamp() > config.local_retention_ms
        ):
            k += 1
        count = k
    if config.local_retention_bytes >= 0:
        k = 0
        excess = size - config.local_retention_bytes
        while k < limit and not local[k].empty and excess - local[k].size >= 0:
            excess -= local[k].size
            k += 1
        count = max(count, k)
    return count
