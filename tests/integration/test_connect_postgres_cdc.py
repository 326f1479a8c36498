"""``postgres-cdc-source`` against a real PostgreSQL with ``wal_level=logical``: the task
driven through its plugin interface the way the runtime drives it (start(position), poll,
commit(position) once records are durable).  A restart is a new task instance started from
the position the runtime stored."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import psycopg
import pytest

from bayou.connect.api import ConfigError, ConnectorConfig, RetriableError, SourceRecord
from bayou.connect.registry import task_class
from bayou.connect.sources.pgoutput import lsn_text
from bayou.connect.sources.postgres_cdc import UNAVAILABLE, PostgresCdcSourceTask
from tests.support.ports import free_port
from tests.support.postgres import PostgresServer
from tests.support.wait import wait_until


@pytest.fixture
def db_url(postgres_logical_server: PostgresServer) -> Iterator[str]:
    url = postgres_logical_server.create_database("cdc")
    yield url
    with psycopg.connect(url, autocommit=True) as conn:  # slots outlive their database's use
        for (slot,) in conn.execute(
            "SELECT slot_name FROM pg_replication_slots WHERE database = current_database()"
        ).fetchall():
            conn.execute("SELECT pg_drop_replication_slot(%s)", (slot,))


def sql(url: str, *statements: str) -> None:
    """Each statement in a transaction of its own."""
    with psycopg.connect(url, autocommit=True) as conn:
        for statement in statements:
            conn.execute(statement)


TaskFactory = Callable[..., PostgresCdcSourceTask]


@pytest.fixture
def make_task() -> Iterator[TaskFactory]:
    """New task instances; each stopped at the end of the test (stop is idempotent)."""
    made: list[PostgresCdcSourceTask] = []

    def make(url: str, tables: str, name: str = "cdc", **keys: Any) -> PostgresCdcSourceTask:
        task = new_task(url, tables, name, **keys)
        made.append(task)
        return task

    yield make
    for task in made:
        task.stop()


def new_task(url: str, tables: str, name: str = "cdc", **keys: Any) -> PostgresCdcSourceTask:
    values = {
        "connector.class": "postgres-cdc-source",
        "connection.url": url,
        "tables": tables,
        "topic.prefix": "db1",
        "poll.interval.ms": 20,
        **keys,
    }
    cls = task_class("postgres-cdc-source")
    assert cls is PostgresCdcSourceTask
    return PostgresCdcSourceTask(ConnectorConfig.from_mapping(name, values))


def collect(task: PostgresCdcSourceTask, count: int, timeout: float = 30) -> list[SourceRecord]:
    """Poll until ``count`` records came (bounded), then once more to see nothing follows."""
    out: list[SourceRecord] = []
    deadline = time.monotonic() + timeout
    while len(out) < count and time.monotonic() < deadline:
        out.extend(task.poll(0.5))
    assert len(out) == count, [summary(r) for r in out]
    assert task.poll(0.3) == []
    return out


def summary(record: SourceRecord) -> tuple[Any, ...]:
    """(topic, key, op, before, after) — or (topic, key, None) for a tombstone."""
    if record.value is None:
        return (record.topic, record.key, None)
    value = record.value
    return (record.topic, record.key, value["op"], value["before"], value["after"])


def order(oid: int, line: int, total: str) -> dict[str, Any]:
    return {"oid": oid, "line": line, "total": total}


def test_snapshot_then_inserts_updates_deletes(db_url: str, make_task: TaskFactory) -> None:
    sql(
        db_url,
        "CREATE TABLE items (id int PRIMARY KEY, name text, qty int)",
        "CREATE SCHEMA shop",
        "CREATE TABLE shop.orders (oid bigint, line int, total numeric(10,2),"
        " PRIMARY KEY (oid, line))",
        "INSERT INTO items VALUES (1, 'tea', 5), (2, 'jam', 1)",
        "INSERT INTO shop.orders VALUES (10, 1, 9.99)",
    )
    task = make_task(db_url, "items,shop.orders")
    task.start(None)
    snapshot = collect(task, 3)
    assert [summary(r) for r in snapshot] == [
        ("db1.public.items", {"id": 1}, "r", None, {"id": 1, "name": "tea", "qty": 5}),
        ("db1.public.items", {"id": 2}, "r", None, {"id": 2, "name": "jam", "qty": 1}),
        ("db1.shop.orders", {"oid": 10, "line": 1}, "r", None, order(10, 1, "9.99")),
    ]
    assert [r.value["source"]["snapshot"] for r in snapshot] == ["true", "true", "last"]
    dbname = db_url.rsplit("/", 1)[1]
    source = snapshot[0].value["source"]
    assert source["db"] == dbname and source["connector"] == "postgresql"
    assert source["name"] == "db1"

    sql(
        db_url,
        "INSERT INTO items VALUES (3, 'oat', 7)",
        "UPDATE items SET qty = 4 WHERE id = 1",
        "DELETE FROM items WHERE id = 2",
        "BEGIN; INSERT INTO shop.orders VALUES (11, 1, 1.50), (11, 2, 2.25);"
        " UPDATE shop.orders SET total = 0 WHERE oid = 10; COMMIT",
    )
    changes = collect(task, 7)
    assert [summary(r) for r in changes] == [
        ("db1.public.items", {"id": 3}, "c", None, {"id": 3, "name": "oat", "qty": 7}),
        ("db1.public.items", {"id": 1}, "u", None, {"id": 1, "name": "tea", "qty": 4}),
        # default replica identity: a delete's before holds the key only
        ("db1.public.items", {"id": 2}, "d", {"id": 2, "name": None, "qty": None}, None),
        ("db1.public.items", {"id": 2}, None),  # the tombstone after a delete
        ("db1.shop.orders", {"oid": 11, "line": 1}, "c", None, order(11, 1, "1.50")),
        ("db1.shop.orders", {"oid": 11, "line": 2}, "c", None, order(11, 2, "2.25")),
        ("db1.shop.orders", {"oid": 10, "line": 1}, "u", None, order(10, 1, "0.00")),
    ]
    # One transaction: one txId, and the position's "end" only on its last record.
    last_txn = changes[4:]
    assert len({r.value["source"]["txId"] for r in last_txn}) == 1
    assert [r.position["end"] is not None for r in last_txn] == [False, False, True]
    assert all(r.value["source"]["snapshot"] == "false" for r in changes if r.value)
    lsns = [r.value["source"]["lsn"] for r in changes if r.value]
    assert lsns == sorted(lsns)
    task.stop()


def test_commit_advances_the_slot_only_to_a_finished_transaction(
    db_url: str, make_task: TaskFactory
) -> None:
    sql(db_url, "CREATE TABLE t (id int PRIMARY KEY)")
    task = make_task(db_url, "t", **{"snapshot.mode": "never"})
    task.start(None)
    sql(db_url, "BEGIN; INSERT INTO t VALUES (1), (2), (3); COMMIT")
    records = collect(task, 3)

    def confirmed() -> str:
        with psycopg.connect(db_url) as conn:
            row = conn.execute(
                "SELECT confirmed_flush_lsn::text FROM pg_replication_slots"
                " WHERE slot_name = 'bayou_cdc'"
            ).fetchone()
            assert row is not None
            return str(row[0])

    before = confirmed()
    task.commit(records[1].position)  # inside the transaction: the slot must not move
    assert confirmed() == before
    task.commit(records[2].position)
    assert confirmed() == lsn_text(records[2].position["end"])
    task.stop()


def change_log(records: list[SourceRecord]) -> list[tuple[Any, ...]]:
    return [summary(r) for r in records]


def test_restart_mid_stream_resumes_without_loss_or_duplicates(
    db_url: str, make_task: TaskFactory
) -> None:
    sql(
        db_url,
        "CREATE TABLE ev (id int PRIMARY KEY, v int)",
        "INSERT INTO ev SELECT g, 0 FROM generate_series(1, 5) g",
    )
    first = make_task(db_url, "ev", **{"max.batch.size": 4})
    first.start(None)
    snapshot = collect(first, 5)
    for step in range(1, 6):  # five transactions of three changes each
        sql(
            db_url,
            f"BEGIN; UPDATE ev SET v = {step} WHERE id = {step};"
            f" INSERT INTO ev VALUES ({100 + step}, {step});"
            f" DELETE FROM ev WHERE id = {100 + step - 1}; COMMIT",
        )
    # 2 changes in the first transaction (its delete finds no row), 3 + a tombstone after
    everything = collect(first, 2 + 4 * 4)
    first.stop()

    # The runtime stored the position of record 7 (inside the third transaction) and
    # committed the slot only up to the end of the first: a crash after storing, before
    # ``commit``.  A new task starts from the stored position.
    durable = everything[:7]
    ends = [r for r in durable if r.position["end"] is not None]
    again = make_task(db_url, "ev", **{"max.batch.size": 4})
    again.start(durable[-1].position)
    again.commit(ends[0].position)
    rest = collect(again, len(everything) - len(durable))
    assert change_log(durable + rest) == change_log(everything)
    assert [r.position for r in durable + rest] == [r.position for r in everything]

    # More changes while a third instance starts from the last position: only those.
    again.commit(rest[-1].position)
    again.stop()
    sql(db_url, "UPDATE ev SET v = 99 WHERE id = 1")
    third = make_task(db_url, "ev")
    third.start(rest[-1].position)
    assert change_log(collect(third, 1)) == [
        ("db1.public.ev", {"id": 1}, "u", None, {"id": 1, "v": 99})
    ]
    third.stop()
    assert len(snapshot) == 5


def test_replica_identity_full_gives_before(db_url: str, make_task: TaskFactory) -> None:
    sql(
        db_url,
        "CREATE TABLE acct (id int PRIMARY KEY, owner text, balance bigint)",
        "ALTER TABLE acct REPLICA IDENTITY FULL",
        "INSERT INTO acct VALUES (1, 'ann', 100)",
    )
    task = make_task(db_url, "acct", **{"snapshot.mode": "never", "tombstones.on.delete": False})
    task.start(None)
    sql(db_url, "UPDATE acct SET balance = 70 WHERE id = 1", "DELETE FROM acct WHERE id = 1")
    assert change_log(collect(task, 2)) == [
        (
            "db1.public.acct",
            {"id": 1},
            "u",
            {"id": 1, "owner": "ann", "balance": 100},
            {"id": 1, "owner": "ann", "balance": 70},
        ),
        ("db1.public.acct", {"id": 1}, "d", {"id": 1, "owner": "ann", "balance": 70}, None),
    ]
    task.stop()


def test_values_are_the_same_json_in_snapshot_and_stream(
    db_url: str, make_task: TaskFactory
) -> None:
    sql(
        db_url,
        "CREATE TABLE typed (id uuid PRIMARY KEY, n numeric, f float8, b bool, at timestamptz,"
        " d date, j jsonb, raw bytea, tags text[], big text)",
        "INSERT INTO typed VALUES ('00000000-0000-0000-0000-000000000001', 12.5, 0.25, true,"
        " '2026-01-02 03:04:05+00', '2026-01-02', '{\"a\": [1, 2]}', '\\x0102', '{x,y}',"
        " (SELECT string_agg(md5(g::text), '') FROM generate_series(1, 2000) g))",
    )
    task = make_task(db_url, "typed", **{"tombstones.on.delete": False})
    task.start(None)
    [snapshot] = collect(task, 1)
    after = snapshot.value["after"]
    big = after.pop("big")
    assert len(big) == 64000
    assert after == {
        "id": "00000000-0000-0000-0000-000000000001",
        "n": "12.5",
        "f": 0.25,
        "b": True,
        "at": "2026-01-02T03:04:05+00:00",
        "d": "2026-01-02",
        "j": '{"a": [1, 2]}',
        "raw": "AQI=",
        "tags": ["x", "y"],
    }
    assert snapshot.key == {"id": "00000000-0000-0000-0000-000000000001"}
    sql(db_url, "UPDATE typed SET n = 13, tags = NULL")
    [update] = collect(task, 1)
    streamed = update.value["after"]
    # An unchanged TOASTed column is not in the WAL: Debezium's placeholder stands for it.
    assert streamed.pop("big") == UNAVAILABLE
    assert streamed == {**after, "n": "13", "tags": None}
    task.stop()


def test_snapshot_and_stream_meet_exactly_while_rows_are_written(
    db_url: str, make_task: TaskFactory
) -> None:
    """Rows inserted while the slot is created and the snapshot read are each delivered
    once: in the snapshot (``r``) or in the stream (``c``), never both, never neither."""
    sql(db_url, "CREATE TABLE flow (id int PRIMARY KEY)", "INSERT INTO flow VALUES (0)")
    stop = threading.Event()
    written: list[int] = []

    def writer() -> None:
        with psycopg.connect(db_url, autocommit=True) as conn:
            for i in range(1, 100_000):
                if stop.is_set():
                    return
                conn.execute("INSERT INTO flow VALUES (%s)", (i,))
                written.append(i)

    thread = threading.Thread(target=writer)
    thread.start()
    try:
        wait_until("the writer to run", lambda: len(written) > 50)
        task = make_task(db_url, "flow", **{"max.batch.size": 100})
        task.start(None)
        seen: list[tuple[str, int]] = []
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            records = task.poll(0.5)
            seen.extend((r.value["op"], r.key["id"]) for r in records)
            if any(op == "c" for op, _ in seen) and len(seen) > len(written) / 2:
                break
    finally:
        stop.set()
        thread.join(30)
    total = len(written) + 1
    deadline = time.monotonic() + 60
    while len(seen) < total and time.monotonic() < deadline:
        seen.extend((r.value["op"], r.key["id"]) for r in task.poll(0.5))
    assert task.poll(0.3) == []
    ids = sorted(i for _, i in seen)
    assert ids == list(range(total))
    ops = {op for op, _ in seen}
    assert ops == {"r", "c"}  # the writer ran on both sides of the slot's consistent point


def test_a_commit_flushed_after_an_empty_look_is_delivered(
    db_url: str, make_task: TaskFactory
) -> None:
    """Decoding reads the WAL up to its flush position: a commit already inserted but not yet
    flushed when a poll looks is not there yet, and must be found once it is flushed (with
    ``synchronous_commit=off`` the WAL writer flushes it up to ``wal_writer_delay`` later)."""
    sql(db_url, "CREATE TABLE late (id int PRIMARY KEY)")
    task = make_task(db_url, "late", **{"snapshot.mode": "never"})
    task.start(None)
    assert task.poll(0.1) == []
    sql(db_url, "ALTER SYSTEM SET wal_writer_delay = '3s'", "SELECT pg_reload_conf()")
    try:
        with psycopg.connect(db_url, autocommit=True) as conn:
            wait_until(
                "the WAL writer to take the new delay",
                lambda: conn.execute("SHOW wal_writer_delay").fetchone() == ("3s",),
            )
            conn.execute("SET synchronous_commit = off")
            conn.execute("INSERT INTO late VALUES (1)")
            row = conn.execute("SELECT pg_current_wal_insert_lsn()").fetchone()
            assert row is not None
            inserted = row[0]
            assert task.poll(0.1) == []  # looked before the commit was flushed
            wait_until(
                "the commit to be flushed",
                lambda: (
                    conn.execute("SELECT pg_current_wal_flush_lsn() >= %s", (inserted,)).fetchone()
                    == (True,)
                ),
                timeout=30,
            )
    finally:
        sql(db_url, "ALTER SYSTEM RESET wal_writer_delay", "SELECT pg_reload_conf()")
    # Flushed now: the next look finds it (not some later WAL write by someone else).
    assert change_log(list(task.poll(1.0))) == [
        ("db1.public.late", {"id": 1}, "c", None, {"id": 1})
    ]


def test_the_slot_moves_past_changes_to_other_tables(db_url: str, make_task: TaskFactory) -> None:
    """Writes to tables the connector does not read give it nothing to deliver, so nothing
    to commit: the slot must still move past them, or PostgreSQL keeps their WAL for it."""
    sql(db_url, "CREATE TABLE watched (id int PRIMARY KEY)", "CREATE TABLE other (id int)")
    task = make_task(db_url, "watched", **{"snapshot.mode": "never"})
    task.start(None)
    assert task.poll(0.1) == []
    sql(db_url, *(f"INSERT INTO other VALUES ({i})" for i in range(50)))
    with psycopg.connect(db_url) as conn:
        row = conn.execute("SELECT pg_current_wal_flush_lsn()").fetchone()
        assert row is not None
        written = row[0]
        assert task.poll(0.1) == []
        moved = conn.execute(
            "SELECT confirmed_flush_lsn >= %s FROM pg_replication_slots"
            " WHERE slot_name = 'bayou_cdc'",
            (written,),
        ).fetchone()
    assert moved == (True,)
    sql(db_url, "INSERT INTO watched VALUES (1)")  # and what follows still comes
    assert change_log(collect(task, 1)) == [("db1.public.watched", {"id": 1}, "c", None, {"id": 1})]


def test_an_unreachable_database_is_a_retriable_error() -> None:
    task = new_task(f"postgres://postgres@127.0.0.1:{free_port()}/none", "t")
    with pytest.raises(RetriableError, match="PostgreSQL"):
        task.start(None)
    task.stop()


def test_a_malformed_connection_url_is_a_config_error() -> None:
    task = new_task("postgres://cdc@127.0.0.1:1/db?no_such_option=1", "t")
    with pytest.raises(ConfigError, match=r"connection\.url: invalid URI"):
        task.start(None)
    task.stop()


def test_a_slot_name_postgresql_would_refuse_is_a_config_error() -> None:
    """Slot names are lower-case letters, digits and ``_``, at most 63 (PostgreSQL's rule),
    checked with the config, before anything is made in the database."""
    for bad in ("Bad-Name", "x; DROP TABLE t", "s" * 64):
        with pytest.raises(ConfigError, match=r"slot\.name"):
            new_task("postgres://cdc@127.0.0.1:1/db", "t", **{"slot.name": bad})
    new_task("postgres://cdc@127.0.0.1:1/db", "t", **{"slot.name": "ok_slot_1"})
