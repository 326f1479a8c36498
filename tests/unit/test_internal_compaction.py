"""The broker's internal logs compacted by the storage cleaner: replaying a compacted (and a
crashed-mid-pass) group coordinator log or MQTT state log rebuilds exactly the state a
replay of the whole log does, with many writes for few keys shrinking to about one record
per key; the cleaner runs in a thread while the store appends."""

from __future__ import annotations

import asyncio
import shutil
import threading
from pathlib import Path
from typing import Any

import pytest

from bayou.broker_config import BrokerConfig
from bayou.config import TopicConfig, internal_log_config
from bayou.core.groups import GroupCoordinator, GroupSettings
from bayou.core.groups.coordinator import OffsetCommit
from bayou.core.groups.model import Result
from bayou.errors import InvalidConfig
from bayou.gateways.mqtt.store import RETAINED_LOG
from bayou.storage.cleaner import clean, needs_cleaning
from bayou.storage.engine import StateEntry, latest
from bayou.storage.local_engine import LocalEngine, LocalStateLog
from bayou.storage.log import PartitionLog
from bayou.storage.maintenance import MaintenanceSettings
from bayou.storage.manager import LogManager
from tests.support.group_log import GroupLog as GroupStore
from tests.unit.test_storage_compaction import (
    Crash,
    _crash_after,
    clean_fully,
    close_what_a_killed_process_held,
)

SEGMENT = 2048
RETENTION_MS = 60_000
T0 = 1_000_000


class Clock:
    def __init__(self, now: int = T0) -> None:
        self.now = now

    def __call__(self) -> int:
        return self.now


def config(**overrides: Any) -> TopicConfig:
    return internal_log_config(
        overrides.get("segment", SEGMENT), overrides.get("retention", RETENTION_MS)
    )


def log_bytes(directory: Path) -> int:
    return sum(p.stat().st_size for p in directory.glob("*.log"))


def record_count(log: PartitionLog) -> int:
    from bayou.protocol.kafka.records import iter_batches, iter_records

    count, offset = 0, log.log_start_offset
    while offset < log.log_end_offset:
        data = memoryview(log.read(offset, 1 << 20))
        for pos, header in iter_batches(data):
            count += sum(1 for _ in iter_records(data[pos : pos + header.size]))
            offset = header.last_offset + 1
    return count


# --------------------------------------------------------------------------- group coordinator


class Workload:
    """A coordinator whose every result is appended to a GroupStore, as the driver does."""

    def __init__(self, store: GroupStore, clock: Clock) -> None:
        self.c = GroupCoordinator(
            GroupSettings(consumer_session_timeout_ms=600_000),
            new_id=iter(f"m{i}" for i in range(10**6)).__next__,
        )
        self.store = store
        self.clock = clock

    def run(self, result: Result[Any]) -> Any:
        if result.records:
            self.store.append(result.records)
        self.clock.now += 1
        return result.response

    def commit(
        self, group: str, partition: int, offset: int, *, generation: int = -1, member: str = ""
    ) -> None:
        codes = self.run(
            self.c.commit_offsets(
                self.clock.now,
                group_id=group,
                generation=generation,
                member_id=member,
                instance_id=None,
                offsets=[OffsetCommit("t", partition, offset, 0, f"m{offset}")],
            )
        )
        assert set(codes) == {0}, codes

    def heartbeat(self, member: str, epoch: int, topics: list[str] | None) -> Any:
        return self.run(
            self.c.consumer_heartbeat(
                self.clock.now,
                group_id="cg",
                member_id=member,
                member_epoch=epoch,
                instance_id=None,
                rack_id=None,
                rebalance_timeout_ms=10_000,
                subscribed=topics,
                server_assignor=None,
                owned=None,
                client_id="c",
                client_host="/h",
                topic_sizes={"t": 4},
            )
        )

    def many(self, commits: int) -> None:
        """Many commits for few keys, plus every other kind of record: consumer-group
        snapshots, OffsetDelete and DeleteGroups tombstones, a group re-created after its
        deletion, and a simple group whose only offset is deleted (it must survive)."""
        resp = self.heartbeat("", 0, ["t"])
        member, epoch = resp.member_id, resp.member_epoch
        for i in range(commits):
            self.commit(f"g{i % 3}", i % 4, i)
            if i % 50 == 0:
                resp = self.heartbeat(member, epoch, ["t"])
                epoch = resp.member_epoch
                self.commit("cg", i % 4, i, generation=epoch, member=member)
        self.run(self.c.delete_offsets(self.clock.now, "g1", [("t", 0)]))
        self.run(self.c.delete_groups(self.clock.now, ["g2"]))
        for i in range(20):
            self.commit("g2", 1, 10_000 + i)
        self.commit("lonely", 0, 1)
        self.run(self.c.delete_offsets(self.clock.now, "lonely", [("t", 0)]))
        self.heartbeat(member, -1, None)  # leaves: the group's snapshot changes again
        self.commit("cg", 3, 99_999)


def replayed(directory: Path, now: int) -> tuple[dict[str, Any], int]:
    """Open ``DATA/internal/__consumer_offsets/0`` as the broker does and replay it."""
    assert directory.parent.name == "__consumer_offsets"
    store = GroupStore(directory.parent.parent.parent, lambda: now, config())
    store.open()
    try:
        fresh = GroupCoordinator()
        count = fresh.load(store.records(), now)
        return fresh.durable_view(), count
    finally:
        store.close()


def written(
    tmp_path: Path, commits: int = 1500, segment: int = SEGMENT
) -> tuple[GroupStore, Workload, Clock]:
    clock = Clock()
    store = GroupStore(tmp_path, clock, config(segment=segment))
    store.open()
    work = Workload(store, clock)
    work.many(commits)
    assert store.log is not None
    store.log.roll()  # close the active segment: all of it is cleanable
    store.flush()
    return store, work, clock


@pytest.mark.parametrize("map_entries", [1000, 16])  # 16: several passes (key map full)
def test_many_commits_for_few_keys_compact_and_replay_to_the_same_offsets(
    tmp_path: Path, map_entries: int
) -> None:
    store, work, clock = written(tmp_path)
    log = store.log
    assert log is not None
    live = work.c.durable_view()
    assert "lonely" in live["groups"] and "lonely" not in live["offsets"]
    assert "g2" in live["groups"] and live["offsets"]["g2"]["t:1"].offset == 10_019
    uncompacted = shutil.copytree(
        store.directory, tmp_path / "copy" / "internal" / "__consumer_offsets" / "0"
    )
    before, records_before = log_bytes(store.directory), record_count(log)

    assert needs_cleaning(log, clock.now)
    passes = clean_fully(log, clock.now, map_entries)
    assert passes >= (2 if map_entries < 100 else 1)
    after, records_after = log_bytes(store.directory), record_count(log)
    assert after < before / 10, (before, after)
    keys = sum(len(o) for o in live["offsets"].values()) + len(live["groups"])
    tombstones = 4 + 1 + 1  # g2's 4 offsets and the group, lonely's offset, g1's t:0
    assert records_after <= keys + tombstones < records_before
    store.close()

    view, _ = replayed(store.directory, clock.now)
    assert view == live
    assert replayed(uncompacted, clock.now)[0] == live  # the uncompacted log agrees

    # Once delete.retention.ms has passed since the tombstones were first cleaned, a pass
    # drops them; nothing they deleted comes back.
    store.open()
    log = store.log
    assert log is not None
    later = clock.now + RETENTION_MS + 1
    assert needs_cleaning(log, later)
    clean_fully(log, later, map_entries)
    assert record_count(log) == keys
    store.close()
    assert replayed(store.directory, later)[0] == live


def test_the_active_segment_is_not_cleaned_until_it_rolls(tmp_path: Path) -> None:
    clock = Clock()
    store = GroupStore(tmp_path, clock, config(segment=1024 * 1024))
    store.open()
    work = Workload(store, clock)
    for i in range(200):
        work.commit("g", 0, i)
    store.flush()
    assert store.log is not None
    assert not needs_cleaning(store.log, clock.now)
    assert clean(store.log, clock.now, 1000) is None
    store.close()


def test_kill_9_at_every_step_of_a_pass_replays_the_same_state(tmp_path: Path) -> None:
    origin = tmp_path / "origin"
    store, work, clock = written(origin, commits=300, segment=8192)  # a few groups
    live = work.c.durable_view()
    store.close()
    src = store.directory
    probe_root = tmp_path / "probe"
    shutil.copytree(src, probe_root / "internal" / "__consumer_offsets" / "0")
    probe = GroupStore(probe_root, clock, config())
    probe.open()
    counter = _crash_after(10**9)
    assert probe.log is not None
    with counter():
        clean(probe.log, clock.now, 1000)
    total: int = counter.calls  # type: ignore[attr-defined]
    probe.close()
    assert total > 10
    for step in range(1, total + 1):
        root = tmp_path / f"crash{step}"
        shutil.copytree(src, root / "internal" / "__consumer_offsets" / "0")
        crashing = GroupStore(root, clock, config())
        crashing.open()
        assert crashing.log is not None
        with pytest.raises(Crash), _crash_after(step)():
            clean(crashing.log, clock.now, 1000)
        for seg in crashing.log.segments:  # the process dies: its fds go, nothing else runs
            seg.close()
        close_what_a_killed_process_held(root)
        directory = crashing.directory
        assert replayed(directory, clock.now)[0] == live, f"step {step}"
        leftovers = [
            p for p in directory.iterdir() if p.suffix in (".cleaned", ".swap", ".deleted")
        ]
        assert not leftovers
        again = GroupStore(root, clock, config())
        again.open()
        assert again.log is not None
        clean_fully(again.log, clock.now, 1000)  # the next pass finishes the job
        again.close()
        assert replayed(directory, clock.now)[0] == live
        shutil.rmtree(root)


def test_the_maintenance_round_cleans_a_registered_log_while_the_store_appends(
    tmp_path: Path,
) -> None:
    """The broker's arrangement: the coordinator appends (here: the main thread) while
    ``LogManager.maintain`` runs rounds over the registered internal log in a worker."""
    from bayou.storage.maintenance import LogMaintenance, MaintenanceSettings

    clock = Clock()
    manager = LogManager(tmp_path / "data", {}, clock)
    manager.open()
    maintenance = LogMaintenance(manager, MaintenanceSettings(), clock)
    store = GroupStore(tmp_path / "data", clock, config(segment=1024))
    store.open()
    assert store.log is not None
    maintenance.register(store.log)
    assert maintenance.internal_logs == [store.log]
    work = Workload(store, clock)
    stop = threading.Event()
    cleaned: list[int] = []
    errors: list[BaseException] = []

    def rounds() -> None:
        while not stop.is_set():
            try:
                for log, _deleted, stats, error in manager.maintain(
                    clock.now, 1000, internal=maintenance.internal_logs
                ):
                    assert log is store.log
                    if error is not None:
                        errors.append(error)
                    if stats is not None:
                        cleaned.append(stats.segments_in)
            except BaseException as exc:  # pragma: no cover - reported below
                errors.append(exc)
                return

    worker = threading.Thread(target=rounds)
    worker.start()
    try:
        for i in range(3000):
            work.commit(f"g{i % 2}", i % 3, i)
            if i % 100 == 0:
                store.flush()
    finally:
        stop.set()
        worker.join(30)
    assert not worker.is_alive()
    assert not errors, errors
    assert cleaned, "the cleaner ran while the store appended"
    live = work.c.durable_view()
    maintenance.unregister(store.log)
    assert maintenance.internal_logs == []
    store.close()
    manager.close()
    assert replayed(store.directory, clock.now)[0] == live


# --------------------------------------------------------------------------- MQTT state logs


def test_mqtt_state_log_compacts_and_loads_the_same_entries(tmp_path: Path) -> None:
    """``__mqtt_retained`` as the MQTT door keeps it: a state log of the local engine."""
    clock = Clock()

    def engine() -> LocalEngine:
        return LocalEngine(
            tmp_path,
            {},
            internal_config=config(),
            maintenance=MaintenanceSettings(60_000, 1 << 20, True),
            clock_ms=clock,
        )

    model: dict[bytes, StateEntry] = {}

    async def write() -> tuple[LocalEngine, LocalStateLog]:
        local = engine()
        await local.open()
        state = await local.state.open_log(RETAINED_LOG)
        for i in range(800):
            key = f"sensors/{i % 7}".encode()
            if i % 97 == 5:
                await state.put([StateEntry(key, None)], durable=True)  # a cleared message
                model.pop(key, None)
            else:
                entry = StateEntry(key, b"payload-%d" % i, (("mqtt.qos", b"1"),))
                await state.put([entry], durable=True)
                model[key] = entry
            clock.now += 1
        return local, state

    async def load(local: LocalEngine) -> dict[bytes, StateEntry]:
        return await latest(await local.state.open_log(RETAINED_LOG))

    local, state = asyncio.run(write())
    directory = tmp_path / "internal" / RETAINED_LOG / "0"
    state.log.roll()
    state.log.flush()
    before = log_bytes(directory)
    assert asyncio.run(load(local)) == model
    clean_fully(state.log, clock.now, 1000)
    assert log_bytes(directory) < before / 10
    assert asyncio.run(load(local)) == model
    asyncio.run(local.close())
    reopened = engine()
    asyncio.run(reopened.open())
    assert asyncio.run(load(reopened)) == model
    log = asyncio.run(reopened.state.open_log(RETAINED_LOG)).log
    clean_fully(log, clock.now + RETENTION_MS + 1, 1000)  # tombstones go too
    assert record_count(log) == len(model)
    assert asyncio.run(load(reopened)) == model
    asyncio.run(reopened.close())


def test_internal_log_config_comes_from_the_broker_options() -> None:
    cfg = BrokerConfig.load(
        environ={"BAYOU_INTERNAL_SEGMENT_BYTES": "4096", "BAYOU_INTERNAL_DELETE_RETENTION_MS": "5"}
    )
    internal = cfg.internal_log_config()
    assert internal.compact and not internal.delete
    assert (internal.segment_bytes, internal.delete_retention_ms) == (4096, 5)
    default = internal_log_config()
    assert default.segment_bytes == 16 * 1024 * 1024
    # Broker topic defaults never reach internal logs.
    assert BrokerConfig(topic_defaults={"retention.ms": 1}).internal_log_config() == default
    with pytest.raises(InvalidConfig, match="internal_segment_bytes"):
        BrokerConfig.load(environ={"BAYOU_INTERNAL_SEGMENT_BYTES": "3"})
