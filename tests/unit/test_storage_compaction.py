"""Log compaction: the result is "last record per key" with offsets kept, in several passes
when the key map is small, tombstones go after delete.retention.ms, and a crash at any step
of the .cleaned/.swap protocol leaves a consistent log with every latest value."""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bayou.config import TopicConfig
from bayou.protocol.kafka import records as R
from bayou.protocol.kafka.records import Record
from bayou.storage.cleaner import clean, needs_cleaning
from bayou.storage.log import PartitionLog

Rec = tuple[int, bytes | None, bytes | None, int]  # offset, key, value, timestamp


class Clock:
    def __init__(self, now: int = 1_000_000) -> None:
        self.now = now

    def __call__(self) -> int:
        return self.now


def open_log(path: Path, clock: Clock, **overrides: Any) -> PartitionLog:
    cfg = {
        "cleanup.policy": "compact",
        "segment.bytes": 1500,
        "index.interval.bytes": 200,
        "delete.retention.ms": 10**9,
        **overrides,
    }
    return PartitionLog("t", 0, path, TopicConfig.resolve({}, cfg), clock)


def read_all(log: PartitionLog) -> list[Rec]:
    out: list[Rec] = []
    offset = log.log_start_offset
    while offset < log.log_end_offset:
        data = log.read(offset, 1 << 20)
        assert data
        for pos, h in R.iter_batches(data):
            body = memoryview(data)[pos : pos + h.size]
            R.check_batch(body, 0, len(body))
            for rec in R.iter_records(body):
                if rec.offset >= offset:
                    out.append((rec.offset, rec.key, rec.value, rec.timestamp))
            offset = h.last_offset + 1
    offsets = [r[0] for r in out]
    assert offsets == sorted(set(offsets)), "offsets strictly increase"
    return out


def append_all(
    log: PartitionLog,
    batches: list[list[tuple[bytes | None, bytes | None]]],
    codec: int,
    pid: int | None = None,
) -> list[Rec]:
    """Append as a topic that became compacted later (AlterConfigs) holds its records: keyless
    ones included, which a compacted topic no longer accepts but its cleaner must keep."""
    compacted = log.config
    log.config = TopicConfig.resolve({}, {**compacted.values, "cleanup.policy": "delete"})
    try:
        return _append_all(log, batches, codec, pid)
    finally:
        log.config = compacted


def _append_all(
    log: PartitionLog,
    batches: list[list[tuple[bytes | None, bytes | None]]],
    codec: int,
    pid: int | None,
) -> list[Rec]:
    written: list[Rec] = []
    seq = 0
    for i, batch in enumerate(batches):
        ts = 10_000 + 10 * i
        recs = [Record(ts + j, k, v) for j, (k, v) in enumerate(batch)]
        extra: dict[str, Any] = {}
        if pid is not None:
            extra = {"producer_id": pid, "producer_epoch": 0, "base_sequence": seq}
            seq += len(recs)
        result = log.append(R.build_batch(recs, compression=codec, **extra))
        written += [
            (result.base_offset + j, r.key, r.value, r.timestamp) for j, r in enumerate(recs)
        ]
    return written


def expected_after(written: list[Rec], clean_end: int, drop_tombstones: bool) -> list[Rec]:
    """The model: below ``clean_end`` only the last record of each key (keyless records
    stay; tombstones stay unless dropped); from ``clean_end`` on, everything."""
    last: dict[bytes, int] = {}
    for off, key, _v, _t in written:
        if off < clean_end and key is not None:
            last[key] = off
    out = []
    for rec in written:
        off, key, value, _t = rec
        dropped = drop_tombstones and value is None
        if off >= clean_end or key is None or (last[key] == off and not dropped):
            out.append(rec)
    return out


def clean_fully(log: PartitionLog, now: int, entries: int) -> int:
    """Run passes until the whole cleanable part is clean; return the number of passes."""
    passes = 0
    for _ in range(200):
        stats = clean(log, now, entries)
        if stats is None:
            break
        passes += 1
        if not stats.map_full:
            break
    return passes


keys = st.one_of(st.none(), st.sampled_from([b"a", b"b", b"c", b"d", b"e", b"f", b"g"]))
values = st.one_of(st.none(), st.binary(min_size=0, max_size=40))
batches_st = st.lists(
    st.lists(st.tuples(keys, values), min_size=1, max_size=6), min_size=1, max_size=60
)


@settings(max_examples=60, deadline=None)
@given(batches_st, st.sampled_from([0, 1, 2, 3, 4]), st.integers(1, 12), st.booleans())
def test_compaction_keeps_the_last_record_of_every_key(
    batches: list[list[tuple[bytes | None, bytes | None]]],
    codec: int,
    entries: int,
    idempotent: bool,
) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        clock = Clock()
        log = open_log(Path(tmp), clock)
        written = append_all(log, batches, codec, 7 if idempotent else None)
        log.roll()
        end = log.log_end_offset
        clean_fully(log, clock.now, entries)
        assert log.cleaner_state.clean_offset == end
        want = expected_after(written, end, drop_tombstones=False)
        assert read_all(log) == want
        assert log.log_end_offset == end
        # A second pass later with delete.retention.ms = 0 removes the tombstones.
        log.config = TopicConfig.resolve({}, {**log.config.values, "delete.retention.ms": 0})
        clock.now += 1
        assert needs_cleaning(log, clock.now) == any(
            r[2] is None and r[1] is not None for r in want
        )
        clean_fully(log, clock.now, entries)
        want = expected_after(written, end, drop_tombstones=True)
        assert read_all(log) == want
        # Appends continue at the same offset; a restart without clean shutdown agrees.
        log.append(R.build_batch([Record(99, b"a", b"new")]))
        log.close_without_flush()
        reopened = open_log(Path(tmp), clock)
        assert read_all(reopened) == [*want, (end, b"a", b"new", 99)]
        if idempotent:  # the producer's sequence survived compaction and restart
            seq = sum(len(b) for b in batches)
            res = reopened.append(
                R.build_batch(
                    [Record(1, b"z", b"z")], producer_id=7, producer_epoch=0, base_sequence=seq
                )
            )
            assert res.base_offset == end + 1
        reopened.close()


def test_multi_pass_with_a_tiny_key_map(tmp_path: Path) -> None:
    clock = Clock()
    log = open_log(tmp_path, clock)
    batches = [[(f"k{i % 50}".encode(), f"v{i}".encode())] for i in range(400)]
    written = append_all(log, batches, 0)
    log.roll()
    passes = clean_fully(log, clock.now, 10)
    assert passes > 5
    assert read_all(log) == expected_after(written, log.log_end_offset, False)
    assert len(read_all(log)) == 50
    log.close()


def test_min_compaction_lag_and_dirty_ratio(tmp_path: Path) -> None:
    clock = Clock(100_000)
    log = open_log(
        tmp_path, clock, **{"min.compaction.lag.ms": 50_000, "min.cleanable.dirty.ratio": 0.5}
    )
    for i in range(60):
        log.append(R.build_batch([Record(clock.now, b"k", b"v%d" % i)]))
        if i % 10 == 9:
            log.roll()
    # Records are younger than min.compaction.lag.ms: nothing is cleanable.
    assert not needs_cleaning(log, clock.now)
    assert clean(log, clock.now, 100) is None
    clock.now += 60_000
    assert needs_cleaning(log, clock.now)
    assert clean(log, clock.now, 100) is not None
    assert [r[2] for r in read_all(log)] == [b"v59"]
    # Now clean: one more dirty record against a clean log is below the 0.5 ratio.
    log.append(R.build_batch([Record(clock.now, b"k", b"again")]))
    log.roll()
    clock.now += 60_000
    log.config = TopicConfig.resolve({}, {**log.config.values, "min.cleanable.dirty.ratio": 0.99})
    assert not needs_cleaning(log, clock.now)
    log.config = TopicConfig.resolve({}, {**log.config.values, "max.compaction.lag.ms": 1000})
    assert needs_cleaning(log, clock.now)  # ... but max.compaction.lag.ms forces it
    log.close()


def test_readers_keep_working_across_a_swap(tmp_path: Path) -> None:
    clock = Clock()
    log = open_log(tmp_path, clock)
    append_all(log, [[(b"k", b"x" * 50)]] * 100, 0)
    log.roll()
    before = log.read(0, 1 << 20)
    pinned = log._pin()  # a reader in the middle of a read holds the old segments
    clean(log, clock.now, 100)
    assert not (tmp_path / "00000000000000000000.log.deleted").exists()
    assert b"".join(s.read(0, s.size) for s in pinned[:1]) == before[: pinned[0].size]
    log._unpin()
    assert all(s.fd == -1 for s in pinned[:-1])  # closed once the reader let go
    assert len(read_all(log)) == 1
    log.close()


def test_keyless_and_compressed_batches_keep_their_codec(tmp_path: Path) -> None:
    clock = Clock()
    log = open_log(tmp_path, clock)
    written = append_all(
        log, [[(b"a", b"1"), (None, b"n"), (b"a", b"2"), (b"b", b"3")]] * 3, R.COMPRESSION_ZSTD
    )
    log.roll()
    clean(log, clock.now, 100)
    data = log.read(0, 1 << 20)
    codecs = {h.compression for _p, h in R.iter_batches(data) if h.records_count}
    assert codecs == {R.COMPRESSION_ZSTD}
    assert read_all(log) == expected_after(written, log.log_end_offset, False)
    log.close()


# --------------------------------------------------------------------------- crash safety


class Crash(BaseException):
    """Stands for kill -9: no cleanup code runs."""


def close_what_a_killed_process_held(directory: Path) -> None:
    """Close every descriptor this process holds on a file under ``directory``, as the
    kernel does for a killed process (a crashed pass's objects run no cleanup, so nothing
    else closes them: the in-flight cleaned segment, the dropped ones, the store's lock).
    Without this each crash step leaked a few descriptors into the process running the rest
    of the suite; past 1024 of them, clients that use select() (paho-mqtt) fail."""
    for name in os.listdir("/proc/self/fd"):
        try:
            target = os.readlink(f"/proc/self/fd/{name}")
        except OSError:
            continue
        if target.startswith(f"{directory}/"):
            with contextlib.suppress(OSError):
                os.close(int(name))


def _crash_after(steps: int) -> Callable[[], Iterator[None]]:
    """Patch the file-system calls of the rename protocol to die at call ``steps``."""
    import contextlib

    @contextlib.contextmanager
    def patched() -> Iterator[None]:
        count = [0]
        # Every visible step: renames and removals (fsync changes nothing a kill -9 sees).
        real = {name: getattr(os, name) for name in ("replace", "unlink", "rename")}

        def make(name: str) -> Callable[..., Any]:
            def call(*args: Any, **kw: Any) -> Any:
                count[0] += 1
                if count[0] == steps:
                    raise Crash(name)
                return real[name](*args, **kw)

            return call

        mp = pytest.MonkeyPatch()
        for name in real:
            mp.setattr(os, name, make(name))
        try:
            yield
        finally:
            mp.undo()
            patched.calls = count[0]  # type: ignore[attr-defined]

    return patched


def _build(path: Path) -> list[Rec]:
    clock = Clock()
    log = open_log(path, clock, **{"segment.bytes": 700})
    batches = [[(f"k{i % 6}".encode(), None if i % 9 == 4 else b"v%d" % i)] for i in range(60)]
    written = append_all(log, batches, 2)
    log.roll()
    log.flush()
    log.checkpoint()
    log.close()
    return written


def test_crash_at_every_step_of_a_pass_leaves_a_consistent_log(tmp_path: Path) -> None:
    origin = tmp_path / "origin"
    written = _build(origin)
    end = written[-1][0] + 1
    latest = {k: (o, v) for o, k, v, _t in written}
    # Count the steps of a whole pass.
    probe = tmp_path / "probe"
    shutil.copytree(origin, probe)
    log = open_log(probe, Clock(), **{"segment.bytes": 700})
    counter = _crash_after(10**9)
    with counter():
        clean(log, 1_000_000, 1000)
    total: int = counter.calls  # type: ignore[attr-defined]
    log.close()
    assert total > 10
    for step in range(1, total + 1):
        work = tmp_path / f"crash{step}"
        shutil.copytree(origin, work)
        log = open_log(work, Clock(), **{"segment.bytes": 700})
        with pytest.raises(Crash), _crash_after(step)():
            clean(log, 1_000_000, 1000)
        for seg in log.segments:  # the process dies: its fds go, nothing else runs
            seg.close()
        close_what_a_killed_process_held(work)
        reopened = open_log(work, Clock(), **{"segment.bytes": 700})
        got = read_all(reopened)
        assert reopened.log_end_offset == end
        originals = {o: (k, v) for o, k, v, _t in written}
        assert all(originals[o] == (k, v) for o, k, v, _t in got), "nothing invented"
        present = {o for o, *_ in got}
        assert all(o in present for o, _v in latest.values()), f"latest lost at step {step}"
        assert not [p for p in work.iterdir() if p.suffix in (".cleaned", ".swap", ".deleted")]
        clean_fully(reopened, 1_000_000, 1000)  # and a later pass finishes the job
        assert read_all(reopened) == expected_after(written, end, False)
        reopened.close()
        shutil.rmtree(work)
