"""The cleaner yields to a busy event loop: at most a tenth of the time while appends go on,
full speed while none do.

A cleaning pass runs pure Python in a worker thread and competes with the event loop for the
GIL; unpaced, it took produce down to 64 % of its rate.  The pacer is driven by a fake clock
here (what it decides is arithmetic on the time worked and whether the loop appended); a
real pass is then run with a counting pacer to show the cleaner asks it once per batch.
"""

from __future__ import annotations

from pathlib import Path

from bayou.config import TopicConfig
from bayou.protocol.kafka.records import Record, build_batch
from bayou.storage.cleaner import clean
from bayou.storage.log import PartitionLog
from bayou.storage.pacer import BUSY_SHARE, Activity, Pacer


class FakeTime:
    def __init__(self) -> None:
        self.now = 0.0
        self.slept = 0.0

    def clock(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.slept += seconds
        self.now += seconds


def run(pacer: Pacer, fake: FakeTime, activity: Activity, units: int, busy: bool) -> None:
    for _ in range(units):  # each unit of cleaner work takes 0.5 ms
        fake.now += 0.0005
        if busy:
            activity.count += 1  # the loop appended meanwhile
        pacer()


def test_while_the_loop_appends_the_cleaner_works_its_busy_share_of_the_time() -> None:
    fake, activity = FakeTime(), Activity()
    pacer = Pacer(activity, clock=fake.clock, sleep=fake.sleep)
    run(pacer, fake, activity, 4000, busy=True)  # 2 s of work
    worked = fake.now - fake.slept
    assert abs(worked - 2.0) < 1e-6
    assert worked / fake.now <= BUSY_SHARE * 1.01  # the last slice has no sleep after it
    assert worked / fake.now >= 0.9 * BUSY_SHARE


def test_an_idle_loop_costs_the_cleaner_nothing() -> None:
    fake, activity = FakeTime(), Activity()
    pacer = Pacer(activity, clock=fake.clock, sleep=fake.sleep)
    run(pacer, fake, activity, 4000, busy=False)
    assert fake.slept == 0.0
    run(pacer, fake, activity, 40, busy=True)  # the loop wakes up: the cleaner backs off
    assert fake.slept > 0.0


def test_a_pass_asks_the_pacer_once_per_batch_it_reads(tmp_path: Path) -> None:
    cfg = TopicConfig.resolve({}, {"cleanup.policy": "compact", "segment.bytes": 4096})
    log = PartitionLog("t", 0, tmp_path, cfg, lambda: 10**13)
    batches = 40
    for i in range(batches):
        log.append(build_batch([Record(1_000 + i, b"k%d" % (i % 4), b"v" * 200)]))
    log.roll()
    calls = []
    stats = clean(log, 10**13, 1_000_000, pace=lambda: calls.append(1))
    log.close()
    assert stats is not None and stats.records_kept < stats.records_read
    assert len(calls) >= batches  # key map and rewrite both read every batch


def test_a_batch_of_thousands_of_records_is_paced_within_the_batch(tmp_path: Path) -> None:
    """A 1 MB batch of small records is tens of milliseconds of Python: asked once per batch,
    the pacer could not keep a slice near 2 ms (produce fell to ~72 % while cleaning)."""
    cfg = TopicConfig.resolve({}, {"cleanup.policy": "compact"})
    log = PartitionLog("t", 0, tmp_path, cfg, lambda: 10**13)
    per_batch = 4096
    for _ in range(2):
        records = [Record(1_000 + j, b"k%d" % (j % 64), b"v" * 20) for j in range(per_batch)]
        log.append(build_batch(records))
        log.roll()
    calls = []
    stats = clean(log, 10**13, 1_000_000, pace=lambda: calls.append(1))
    log.close()
    assert stats is not None and stats.records_read == 2 * per_batch
    # key map over the dirty section and rewrite both ask at least every 128 records
    assert len(calls) >= 2 * (2 * per_batch // 128)
