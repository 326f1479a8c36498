"""Loading a partition's log from disk after a clean shutdown, a kill -9 or a power loss.

Theory of operation
-------------------
What is on disk after a crash: every byte below the *recovery point* was fsynced (the
checkpoint in ``recovery.json`` is only written after the fsync it describes); anything
after it may be missing, torn in the middle of a batch, or — after a power loss — garbage.
Index files are only as good as the log they describe.

``load_partition`` (Kafka's ``LogLoader``, simplified):

1. Removes crash residue: ``*.tmp``, ``.deleted`` and ``.cleaned`` files, index files
   without a ``.log``; and finishes an interrupted compaction swap: a ``<B>.log.swap`` is a
   complete, fsynced cleaned segment, so it is verified (offset gaps allowed), every ``.log``
   whose base offset falls in its range ``[B, next offset)`` is removed, and it is renamed
   to ``<B>.log`` (its indexes are rebuilt).  See ``cleaner.py`` for the protocol.
2. Segments wholly below the recovery point (the next segment's base offset is ≤ it) are
   trusted: their index files are loaded and sanity-checked, only the tail after the last
   index entry is scanned (``LogSegment.load_trusted``); a failed check means a full
   verification of that segment.
3. The segment containing the recovery point and every later one is verified batch by
   batch (framing, magic 2, CRC-32C, contiguous offsets — only increasing below the
   cleaner's ``gaps_below``, where compaction leaves gaps) and its indexes rebuilt
   (``LogSegment.rebuild``).  At the first bad batch the file is truncated and all later
   segments are deleted: the log is always a prefix of what was appended.
4. With a clean-shutdown marker everything is trusted (still sanity-checking indexes).
   The log start offset is raised to the first segment — or, with tiered storage, to the
   first remote copy that reaches the local segments without a gap (``remote_start``):
   trimmed local copies do not move the log start.
5. The verified log is fsynced, so the recovery point becomes the log end offset.
6. Producer state: the snapshot (state as of some offset ≤ the log end) is loaded and the
   batch headers after its offset are replayed; without a usable snapshot every header of
   the log is replayed.  Replay reopens the transactions still open (the last stable offset)
   and closes those whose marker it meets; an ABORT marker it meets is put back into its
   segment's aborted-transaction index if the crash cut it (entries below the recovery point
   were fsynced with their segment; a verified segment's index is cut to what survived).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from bayou.config import TopicConfig
from bayou.errors import BayouError
from bayou.protocol.kafka.records import (
    TIMESTAMP_LOG_APPEND_TIME,
    BatchHeader,
    control_type,
    iter_records,
)
from bayou.storage.cleaner_state import CleanerState, load_cleaner_state
from bayou.storage.engine import AbortedTxn
from bayou.storage.files import (
    LOG_SUFFIX,
    TMP_SUFFIX,
    fsync_dir,
    parse_base_offset,
    read_json,
    write_json,
)
from bayou.storage.producer_state import ProducerStateManager, load_snapshot
from bayou.storage.segment import LogSegment

RECOVERY_FILE = "recovery.json"
PRODUCER_STATE_FILE = "producer_state.json"
DELETED_SUFFIX = ".deleted"
CLEANED_SUFFIX = ".cleaned"
SWAP_SUFFIX = ".swap"
_RESIDUE_SUFFIXES = (TMP_SUFFIX, DELETED_SUFFIX, CLEANED_SUFFIX)


@dataclass
class LoadedLog:
    segments: list[LogSegment]
    log_start_offset: int
    recovery_point: int
    producer_state: ProducerStateManager
    truncated: bool
    cleaner_state: CleanerState


def read_checkpoint(directory: Path) -> tuple[int, int]:
    """(recovery point, log start offset) from ``recovery.json``; (0, 0) if absent."""
    try:
        doc = read_json(directory / RECOVERY_FILE)
        return int(doc["recovery_point"]), int(doc["log_start_offset"])
    except (OSError, ValueError, TypeError, KeyError):
        return 0, 0


def write_checkpoint(directory: Path, recovery_point: int, log_start_offset: int) -> None:
    write_json(
        directory / RECOVERY_FILE,
        {"recovery_point": recovery_point, "log_start_offset": log_start_offset},
    )


def _complete_swaps(directory: Path, interval: int, now: int) -> None:
    """Finish compaction swaps a crash interrupted (``<B>.log.swap`` files)."""
    swaps = sorted(p for p in directory.iterdir() if p.name.endswith(LOG_SUFFIX + SWAP_SUFFIX))
    for path in swaps:
        base = parse_base_offset(path.name)
        if base is None:
            path.unlink()
            continue
        seg = LogSegment(directory, base, now, suffix=SWAP_SUFFIX)
        truncated = seg.rebuild(interval, verify=True, allow_gaps=True)
        if truncated or seg.empty:
            seg.delete()  # not the complete segment the cleaner fsynced: keep the old ones
            continue
        for other in directory.iterdir():
            other_base = parse_base_offset(other.name)
            if (
                other_base is not None
                and base <= other_base < seg.next_offset
                and not other.name.endswith(SWAP_SUFFIX)
            ):
                other.unlink()
        seg.rename_suffix("")
        seg.close()
        fsync_dir(directory)


def _clean_directory(directory: Path, interval: int, now: int) -> list[int]:
    """Remove crash residue, finish swaps; return the ``.log`` base offsets, sorted."""
    bases: list[int] = []
    others: list[tuple[int, Path]] = []
    for path in directory.iterdir():
        if path.name.endswith(_RESIDUE_SUFFIXES):
            path.unlink()
    _complete_swaps(directory, interval, now)
    for path in directory.iterdir():
        if path.name.endswith(SWAP_SUFFIX):
            path.unlink()  # index files of a swap that was discarded
            continue
        base = parse_base_offset(path.name)
        if base is None:
            continue
        if path.suffix == LOG_SUFFIX:
            bases.append(base)
        else:
            others.append((base, path))
    known = set(bases)
    for base, path in others:
        if base not in known:
            path.unlink()
    return sorted(bases)


def load_partition(
    directory: Path,
    config: TopicConfig,
    clock_ms: Callable[[], int],
    *,
    clean: bool,
    remote_start: Callable[[int], int | None] | None = None,
) -> LoadedLog:
    """Open, verify and repair the segments in ``directory`` (see the module docstring).

    ``remote_start(first local offset)``: where tiered storage's copies begin below the
    local segments (None: nowhere) — the log start offset may then stay below them."""
    directory.mkdir(parents=True, exist_ok=True)
    now = clock_ms()
    interval = config.index_interval_bytes
    bases = _clean_directory(directory, interval, now)
    recovery_point, log_start = read_checkpoint(directory)
    cleaner_state = load_cleaner_state(directory)
    if clean:
        recovery_point = 2**63 - 1
    segments: list[LogSegment] = []
    truncated = False
    for i, base in enumerate(bases):
        seg = LogSegment(directory, base, now)
        if truncated:
            seg.delete()
            continue
        next_base = bases[i + 1] if i + 1 < len(bases) else None
        gaps = base < max(cleaner_state.clean_offset, cleaner_state.gaps_below)
        if clean or (next_base is not None and next_base <= recovery_point):
            truncated = seg.load_trusted(interval, allow_gaps=gaps)
        else:
            truncated = seg.rebuild(interval, verify=True, allow_gaps=gaps)
        if segments and seg.base_offset < segments[-1].next_offset:
            seg.delete()  # overlaps its predecessor: not something we wrote
            truncated = True
            continue
        segments.append(seg)
    if not segments:
        segments.append(LogSegment(directory, log_start, now))
    for seg in segments:
        with contextlib.suppress(OSError):
            seg.fsync()
        seg.release_index_files()  # reopened by the active segment's next index entry
        seg.txn_index.entries()  # loaded now: READ_COMMITTED fetches never read it on the loop
    fsync_dir(directory)
    log_end = segments[-1].next_offset
    first = segments[0].base_offset
    below = remote_start(first) if remote_start is not None else None
    log_start = min(max(log_start, first if below is None else min(below, first)), log_end)
    state = _load_producer_state(directory, segments, log_start, log_end)
    write_checkpoint(directory, log_end, log_start)
    return LoadedLog(segments, log_start, log_end, state, truncated, cleaner_state)


def _load_producer_state(
    directory: Path, segments: list[LogSegment], log_start: int, log_end: int
) -> ProducerStateManager:
    state = ProducerStateManager()
    start = log_start
    loaded = load_snapshot(directory / PRODUCER_STATE_FILE)
    if loaded is not None and log_start <= loaded[0] <= log_end:
        start, snap = loaded
        state.restore(snap)
    for seg in segments:
        if seg.next_offset <= start:
            continue
        found = seg.find_batch(start)
        if found is None:
            continue
        for pos, header, _ in seg.iter_batches(found[0]):
            if header.has_producer:
                append_time = (
                    header.max_timestamp
                    if header.timestamp_type == TIMESTAMP_LOG_APPEND_TIME
                    else -1
                )
                marker = _marker_type(seg, pos, header) if header.is_control else None
                done = state.update(
                    header, header.base_offset, header.last_offset, append_time, marker=marker
                )
                if done is not None and done.aborted:  # an index the crash may have cut
                    unstable = state.first_unstable_offset()
                    seg.txn_index.append(
                        AbortedTxn(
                            done.producer_id,
                            done.first_offset,
                            done.last_offset,
                            header.last_offset + 1 if unstable is None else unstable,
                        )
                    )
    return state


def _marker_type(seg: LogSegment, pos: int, header: BatchHeader) -> int | None:
    """COMMIT or ABORT for a control batch (its one record's key), None if unreadable."""
    try:
        for record in iter_records(seg.read(pos, header.size)):
            return control_type(record)
    except BayouError:
        return None
    return None
