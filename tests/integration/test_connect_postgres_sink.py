"""``postgres-sink`` against a real PostgreSQL: the task driven through its plugin interface
the way the runtime drives it (start, open, put, flush), then the tables read back with psql's
view of them (psycopg).  Crash safety: a process running the task is killed with SIGKILL in the
middle of its flush; a new task's ``open`` says where the target is, and replaying from any
earlier offset leaves every row exactly once."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import threading
from pathlib import Path
from typing import Any

import psycopg
import pytest

from bayou.connect.api import (
    ConfigError,
    ConnectError,
    ConnectorConfig,
    RecordError,
    RetriableError,
    SinkRecord,
)
from bayou.connect.registry import task_class
from bayou.connect.sinks.postgres import PostgresSinkTask
from tests.support.ports import free_port
from tests.support.postgres import PostgresServer
from tests.support.wait import wait_until

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def db_url(postgres_server: PostgresServer) -> str:
    return postgres_server.create_database("sink")


def make_task(url: str, name: str = "pg", **keys: Any) -> PostgresSinkTask:
    values = {"connector.class": "postgres-sink", "connection.url": url, **keys}
    config = ConnectorConfig.from_mapping(name, values)
    cls = task_class("postgres-sink")
    assert cls is PostgresSinkTask
    task = PostgresSinkTask(config)
    task.start()
    return task


def rec(offset: int, key: Any, value: Any, topic: str = "orders", partition: int = 0) -> SinkRecord:
    return SinkRecord(topic, partition, offset, 1_700_000_000_000 + offset, key, value)


def query(url: str, statement: str) -> list[tuple[Any, ...]]:
    with psycopg.connect(url) as conn:
        return conn.execute(statement).fetchall()


def stored_offsets(url: str, name: str = "pg") -> dict[tuple[str, int], int]:
    rows = query(
        url,
        f"SELECT topic, partition, next_offset FROM _bayou_connect_offsets"
        f" WHERE connector = '{name}'",
    )
    return {(t, p): o for t, p, o in rows}


def test_insert_auto_create_types_and_offsets(db_url: str) -> None:
    task = make_task(db_url, table="orders", **{"auto.create": True})
    assert task.open([("orders", 0), ("orders", 1)]) == {}
    task.put(
        [
            rec(0, None, {"id": 1, "item": "tea", "qty": 2, "price": 3.5, "paid": True}),
            rec(1, None, {"id": 2, "item": "jam", "qty": None, "price": 1.25, "paid": False}),
            rec(0, None, {"id": 3, "item": "oat", "qty": 7, "tags": ["a", "b"]}, partition=1),
        ]
    )
    assert task.flush() == {("orders", 0): 2, ("orders", 1): 1}
    columns = query(
        db_url,
        "SELECT column_name, data_type FROM information_schema.columns"
        " WHERE table_name = 'orders' ORDER BY ordinal_position",
    )
    assert columns == [
        ("id", "bigint"),
        ("item", "text"),
        ("qty", "bigint"),
        ("price", "double precision"),
        ("paid", "boolean"),
        ("tags", "jsonb"),
    ]
    assert query(db_url, "SELECT id, item, qty, price, paid, tags FROM orders ORDER BY id") == [
        (1, "tea", 2, 3.5, True, None),
        (2, "jam", None, 1.25, False, None),
        (3, "oat", 7, None, None, ["a", "b"]),
    ]
    assert stored_offsets(db_url) == {("orders", 0): 2, ("orders", 1): 1}
    task.stop()
    again = make_task(db_url, table="orders", **{"auto.create": True})
    assert again.open([("orders", 0), ("orders", 1), ("orders", 2)]) == {
        ("orders", 0): 2,
        ("orders", 1): 1,
    }
    again.stop()


def test_missing_table_without_auto_create_fails(db_url: str) -> None:
    task = make_task(db_url, table="nowhere")
    task.open([("orders", 0)])
    task.put([rec(0, None, {"id": 1})])
    with pytest.raises(ConnectError, match="table 'nowhere' does not exist"):
        task.flush()
    assert stored_offsets(db_url) == {}
    task.stop()


def test_upsert_by_record_key_keeps_the_last_value(db_url: str) -> None:
    keys = {"auto.create": True, "insert.mode": "upsert", "pk.mode": "record_key"}
    task = make_task(db_url, table="users", **keys)
    task.open([("users", 0)])
    task.put(
        [
            rec(0, {"id": 1}, {"name": "ann", "visits": 1}, "users"),
            rec(1, {"id": 2}, {"name": "bob", "visits": 1}, "users"),
            rec(2, {"id": 1}, {"name": "ann", "visits": 2}, "users"),  # same key, same batch
        ]
    )
    task.flush()
    task.put(
        [
            rec(3, {"id": 2}, {"name": "bobby", "visits": 5}, "users"),
            rec(4, {"id": 3}, {"name": "cy", "visits": 1}, "users"),
        ]
    )
    assert task.flush() == {("users", 0): 5}
    assert query(db_url, "SELECT id, name, visits FROM users ORDER BY id") == [
        (1, "ann", 2),
        (2, "bobby", 5),
        (3, "cy", 1),
    ]
    primary = query(
        db_url,
        "SELECT a.attname FROM pg_index i JOIN pg_attribute a"
        " ON a.attrelid = i.indrelid AND a.attnum = ANY(i.indkey)"
        " WHERE i.indrelid = 'users'::regclass AND i.indisprimary",
    )
    assert primary == [("id",)]
    task.stop()


def test_upsert_by_record_value_fields_and_primitive_key(db_url: str) -> None:
    by_value = make_task(
        db_url,
        name="v",
        table="prices",
        **{"auto.create": True, "insert.mode": "upsert", "pk.mode": "record_value"},
        **{"pk.fields": "sku,shop"},
    )
    by_value.open([("prices", 0)])
    by_value.put(
        [
            rec(0, None, {"sku": "a", "shop": 1, "eur": 10}, "prices"),
            rec(1, None, {"sku": "a", "shop": 2, "eur": 11}, "prices"),
            rec(2, None, {"sku": "a", "shop": 1, "eur": 9}, "prices"),
        ]
    )
    by_value.flush()
    assert query(db_url, "SELECT sku, shop, eur FROM prices ORDER BY shop") == [
        ("a", 1, 9),
        ("a", 2, 11),
    ]
    by_value.stop()
    by_key = make_task(
        db_url,
        name="k",
        table="names",
        **{"auto.create": True, "insert.mode": "upsert", "pk.mode": "record_key"},
        **{"pk.fields": "user_id"},
    )
    by_key.open([("names", 0)])
    by_key.put([rec(0, "u1", {"n": "x"}, "names"), rec(1, "u1", {"n": "y"}, "names")])
    by_key.flush()
    assert query(db_url, "SELECT user_id, n FROM names") == [("u1", "y")]
    by_key.stop()


def test_tombstones_delete_in_order(db_url: str) -> None:
    keys = {
        "auto.create": True,
        "insert.mode": "upsert",
        "pk.mode": "record_key",
        "delete.enabled": True,
    }
    task = make_task(db_url, table="kv", **keys)
    task.open([("kv", 0)])
    task.put(
        [
            rec(0, {"k": "a"}, {"v": 1}, "kv"),
            rec(1, {"k": "b"}, {"v": 2}, "kv"),
            rec(2, {"k": "a"}, None, "kv"),  # delete a
            rec(3, {"k": "c"}, {"v": 3}, "kv"),
            rec(4, {"k": "c"}, None, "kv"),  # delete c …
            rec(5, {"k": "c"}, {"v": 4}, "kv"),  # … and write it again
            rec(6, {"k": "zz"}, None, "kv"),  # delete of a key never written
        ]
    )
    assert task.flush() == {("kv", 0): 7}
    assert query(db_url, "SELECT k, v FROM kv ORDER BY k") == [("b", 2), ("c", 4)]
    task.stop()

    skipping = make_task(
        db_url,
        name="nodelete",
        table="kv",
        **{"insert.mode": "upsert", "pk.mode": "record_key"},
    )
    skipping.open([("kv", 0)])
    skipping.put([rec(0, {"k": "b"}, None, "kv")])
    assert skipping.flush() == {("kv", 0): 1}
    assert query(db_url, "SELECT k FROM kv ORDER BY k") == [("b",), ("c",)]
    skipping.stop()


def test_auto_evolve_adds_columns_and_refuses_without_it(db_url: str) -> None:
    task = make_task(db_url, table="ev", **{"auto.create": True})
    task.open([("ev", 0)])
    task.put([rec(0, None, {"a": 1}, "ev")])
    task.flush()
    task.put([rec(1, None, {"a": 2, "b": "new"}, "ev")])
    with pytest.raises(RecordError, match="no column 'b'") as refused:
        task.flush()
    assert refused.value.record is not None and refused.value.record.offset == 1
    assert stored_offsets(db_url) == {("ev", 0): 1}
    task.stop()

    evolving = make_task(db_url, table="ev", **{"auto.create": True, "auto.evolve": True})
    assert evolving.open([("ev", 0)]) == {("ev", 0): 1}
    evolving.put([rec(1, None, {"a": 2, "b": "new", "c": {"x": 1}}, "ev")])
    evolving.flush()
    assert query(db_url, "SELECT a, b, c FROM ev ORDER BY a") == [
        (1, None, None),
        (2, "new", {"x": 1}),
    ]
    evolving.stop()


def test_a_bad_record_is_refused_by_put_and_nothing_of_its_batch_is_taken(db_url: str) -> None:
    task = make_task(db_url, table="strict", **{"auto.create": True, "pk.mode": "record_key"})
    task.open([("t", 0)])
    good = [rec(0, {"id": 1}, {"v": 1}, "t"), rec(1, {"id": 2}, {"v": 2}, "t")]
    for bad in (rec(2, {"id": 3}, "not an object", "t"), rec(2, None, {"v": 3}, "t")):
        with pytest.raises(RecordError) as refused:
            task.put([*good, bad])
        assert refused.value.record == bad
    task.put(good)  # the runtime puts the rest again, the bad one went to the dead letters
    assert task.flush() == {("t", 0): 2}
    assert query(db_url, "SELECT id, v FROM strict ORDER BY id") == [(1, 1), (2, 2)]
    task.stop()


def test_an_unreachable_database_is_a_retriable_error() -> None:
    url = f"postgres://postgres@127.0.0.1:{free_port()}/none"
    task = PostgresSinkTask(ConnectorConfig.from_mapping("gone", {"connection.url": url}))
    with pytest.raises(RetriableError, match="cannot connect"):
        task.start()
    with pytest.raises(RetriableError):
        task.open([("t", 0)])


def test_bad_configs_are_refused() -> None:
    url = "postgres://postgres@127.0.0.1:1/none"
    cases = [
        {"insert.mode": "merge"},
        {"insert.mode": "upsert"},
        {"pk.mode": "record_value"},
        {"delete.enabled": True, "pk.mode": "record_value", "pk.fields": "id"},
    ]
    for keys in cases:
        config = ConnectorConfig.from_mapping(
            "bad", {"connector.class": "postgres-sink", "connection.url": url, **keys}
        )
        with pytest.raises(ConfigError):
            PostgresSinkTask(config)


def test_replayed_records_are_written_once(db_url: str) -> None:
    """The runtime may hand over records the target already holds (a flush whose commit
    reached the server although the client saw an error; a group offset behind the target's):
    the offsets fence in the transaction drops them."""
    task = make_task(db_url, table="once", **{"auto.create": True})
    task.open([("t", 0)])
    task.put([rec(i, None, {"n": i}, "t") for i in range(5)])
    task.flush()
    task.put([rec(i, None, {"n": i}, "t") for i in range(3, 8)])  # 3 and 4 again
    assert task.flush() == {("t", 0): 8}
    assert query(db_url, "SELECT n FROM once ORDER BY n") == [(i,) for i in range(8)]
    task.stop()


CRASHING_TASK = textwrap.dedent(
    """
    import sys
    from bayou.connect.api import ConnectorConfig, SinkRecord
    from bayou.connect.sinks.postgres import PostgresSinkTask

    url, total, batch = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    config = ConnectorConfig.from_mapping(
        "crash", {"connection.url": url, "table": "crashed", "auto.create": "true"}
    )
    task = PostgresSinkTask(config)
    task.start()
    start = task.open([("t", 0)]).get(("t", 0), 0)
    for base in range(start, total, batch):
        task.put([
            SinkRecord("t", 0, o, 0, None, {"n": o, "pad": "x" * 200})
            for o in range(base, min(base + batch, total))
        ])
        task.flush()
        print("flushed", base + batch, flush=True)
    """
)


@pytest.fixture
def crash_script(tmp_path: Path) -> Path:
    script = tmp_path / "crashing_task.py"
    script.write_text(CRASHING_TASK)
    return script


def running_copy(url: str) -> bool:
    dbname = url.rsplit("/", 1)[1]
    rows = query(
        url,
        "SELECT count(*) FROM pg_stat_activity WHERE datname = "
        f"'{dbname}' AND state = 'active' AND query LIKE 'COPY%'",
    )
    return bool(rows[0][0])


def run_and_kill_mid_flush(url: str, script: Path, total: int, batch: int) -> None:
    """Run the task in a process of its own; SIGKILL it while a later flush's COPY runs."""
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.Popen(
        [sys.executable, str(script), url, str(total), str(batch)],
        stdout=subprocess.PIPE,
        text=True,
        env=env,
    )
    try:
        assert proc.stdout is not None
        assert proc.stdout.readline().startswith("flushed")  # one batch committed
        wait_until("a COPY in progress", lambda: running_copy(url), timeout=60)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=30)
        if proc.stdout is not None:
            proc.stdout.close()


def test_kill_9_mid_flush_then_resume_writes_every_row_once(
    db_url: str, crash_script: Path
) -> None:
    total, batch = 400_000, 50_000
    run_and_kill_mid_flush(db_url, crash_script, total, batch)
    wait_until(
        "the killed session to end",
        lambda: not running_copy(db_url),
        timeout=30,
    )
    # The killed transaction left nothing: the rows are exactly those the offsets cover.
    next_offset = stored_offsets(db_url, "crash")[("t", 0)]
    assert 0 < next_offset < total and next_offset % batch == 0
    assert query(db_url, "SELECT count(*), min(n), max(n) FROM crashed") == [
        (next_offset, 0, next_offset - 1)
    ]
    # A new task resumes there — even when handed records from offset 0 again.
    task = make_task(db_url, name="crash", table="crashed")
    assert task.open([("t", 0)]) == {("t", 0): next_offset}
    for base in range(0, total, batch):
        task.put([rec(o, None, {"n": o, "pad": "y"}, "t") for o in range(base, base + batch)])
        task.flush()
    task.stop()
    assert query(db_url, "SELECT count(*), count(DISTINCT n), min(n), max(n) FROM crashed") == [
        (total, total, 0, total - 1)
    ]
    assert query(db_url, "SELECT count(*) FROM crashed WHERE pad = 'y'") == [(total - next_offset,)]
    assert stored_offsets(db_url, "crash") == {("t", 0): total}


def test_tasks_starting_together_create_the_tables_once(postgres_server: PostgresServer) -> None:
    """Tasks of one connector start at once and auto-create the same tables: both the
    offsets table and the target (two concurrent CREATE TABLE IF NOT EXISTS can collide in
    PostgreSQL's catalog: DuplicateObject)."""
    for _ in range(5):
        url = postgres_server.create_database("race")
        barrier = threading.Barrier(3)
        errors: list[BaseException] = []

        def run(
            partition: int,
            url: str = url,
            barrier: threading.Barrier = barrier,
            errors: list[BaseException] = errors,
        ) -> None:
            try:
                task = PostgresSinkTask(
                    ConnectorConfig.from_mapping(
                        "race", {"connection.url": url, "table": "x", "auto.create": "true"}
                    )
                )
                barrier.wait(30)
                task.start()
                task.open([("t", partition)])
                task.put([rec(0, None, {"p": partition}, "t", partition)])
                barrier.wait(30)
                task.flush()
                task.stop()
            except BaseException as exc:
                errors.append(exc)

        threads = [threading.Thread(target=run, args=(p,)) for p in range(3)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(60)
        assert errors == []
        assert query(url, "SELECT p FROM x ORDER BY p") == [(0,), (1,), (2,)]


def test_table_names_are_taken_as_written(db_url: str) -> None:
    """Topic names are case-sensitive and often hold a dash: the table is the topic's name
    as written (a quoted identifier), found again on the next flush and by a new task."""
    for topic in ("Orders", "page-views"):
        task = make_task(db_url, name=topic, **{"auto.create": True})
        task.open([(topic, 0)])
        task.put([rec(0, None, {"n": 1}, topic)])
        assert task.flush() == {(topic, 0): 1}
        task.put([rec(1, None, {"n": 2}, topic)])
        assert task.flush() == {(topic, 0): 2}
        task.stop()
        again = make_task(db_url, name=topic)
        assert again.open([(topic, 0)]) == {(topic, 0): 2}
        again.put([rec(2, None, {"n": 3}, topic)])
        assert again.flush() == {(topic, 0): 3}
        again.stop()
        assert query(db_url, f'SELECT n FROM "{topic}" ORDER BY n') == [(1,), (2,), (3,)]


def test_objects_and_arrays_are_compact_json_text_in_any_column(db_url: str) -> None:
    with psycopg.connect(db_url) as conn:
        conn.execute("CREATE TABLE docs (id bigint, doc text, raw json, tags jsonb)")
    task = make_task(db_url, table="docs")
    task.open([("docs", 0)])
    task.put([rec(0, None, {"id": 1, "doc": {"a": [1, "x"]}, "raw": [1, 2], "tags": {"k": None}})])
    task.flush()
    assert query(db_url, "SELECT id, doc, raw::text, tags FROM docs") == [
        (1, '{"a":[1,"x"]}', "[1,2]", {"k": None})
    ]
    task.stop()


def test_auto_create_and_evolve_type_a_column_from_all_its_values(db_url: str) -> None:
    """JSON writers send ``3`` and ``3.5`` for one field: the column is a double; values of
    different kinds make a text column (as the lake sinks' columns, ``sinks/rows.py``)."""
    task = make_task(db_url, table="mixed", **{"auto.create": "true", "auto.evolve": "true"})
    task.open([("mixed", 0)])
    task.put(
        [
            rec(0, None, {"price": 3, "tag": "a", "doc": {"k": 1}}, "mixed"),
            rec(1, None, {"price": 3.5, "tag": 7, "doc": "plain"}, "mixed"),
        ]
    )
    task.flush()
    task.put(
        [
            rec(2, None, {"price": 1, "qty": 2, "ok": True}, "mixed"),
            rec(3, None, {"price": 2, "qty": 2.25, "ok": "yes"}, "mixed"),
        ]
    )
    assert task.flush() == {("mixed", 0): 4}
    columns = query(
        db_url,
        "SELECT column_name, data_type FROM information_schema.columns"
        " WHERE table_name = 'mixed' ORDER BY ordinal_position",
    )
    assert columns == [
        ("price", "double precision"),
        ("tag", "text"),
        ("doc", "text"),
        ("qty", "double precision"),
        ("ok", "text"),
    ]
    assert query(db_url, "SELECT price, tag, doc, qty, ok FROM mixed ORDER BY price") == [
        (1.0, None, None, 2.0, "t"),  # a boolean as PostgreSQL writes it
        (2.0, None, None, 2.25, "yes"),
        (3.0, "a", '{"k":1}', None, None),
        (3.5, "7", "plain", None, None),
    ]
    task.stop()
