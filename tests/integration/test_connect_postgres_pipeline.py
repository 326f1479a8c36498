"""PostgreSQL → Bayou → PostgreSQL through ``bayou connect run``, as a user runs it: the CDC
source reads table ``src`` into a topic, the sink upserts the topic into table ``dst``
(``ExtractField$Value`` takes the envelope's ``after``; a delete's null ``after`` is a
tombstone the sink deletes by).  A writer changes ``src`` all along; the connect process is
killed with SIGKILL mid-stream and started again.  In the end ``dst`` equals ``src``, and the
topic holds every change exactly once, in commit order."""

from __future__ import annotations

import json
import random
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
from confluent_kafka import Consumer, TopicPartition

from tests.support.broker import BrokerProcess
from tests.support.connect_process import ConnectProcess
from tests.support.postgres import PostgresServer
from tests.support.wait import wait_until

TOPIC = "cdc.public.src"


def pipeline_toml(url: str) -> str:
    source = {
        "connector.class": "postgres-cdc-source",
        "connection.url": url,
        "tables": "src",
        "topic.prefix": "cdc",
        "tombstones.on.delete": False,
        "max.batch.size": 200,
        "key.converter": "json",
        "value.converter": "json",
    }
    sink = {
        "connector.class": "postgres-sink",
        "topics": TOPIC,
        "connection.url": url,
        "table": "dst",
        "insert.mode": "upsert",
        "pk.mode": "record_key",
        "delete.enabled": True,
        "auto.create": True,
        "batch.size": 300,
        "offset.flush.interval.ms": 500,
        "transforms": "after",
        "transforms.after.type": "org.apache.kafka.connect.transforms.ExtractField$Value",
        "transforms.after.field": "after",
        "key.converter": "json",
        "value.converter": "json",
    }
    log = {  # every row version, appended: duplicates would show here
        **sink,
        "table": "dst_log",
        "insert.mode": "insert",
        "pk.mode": "none",
        "delete.enabled": False,
    }
    lines = []
    for name, keys in (("pg-cdc", source), ("pg-copy", sink), ("pg-log", log)):
        lines.append(f'[connectors."{name}"]')
        lines.extend(f"{json.dumps(k)} = {json.dumps(v)}" for k, v in keys.items())
    return "\n".join(lines) + "\n"


class Writer(threading.Thread):
    """Random inserts, updates and deletes on ``src``, 1 to 5 per transaction, logged in
    commit order as the changes the topic must hold."""

    def __init__(self, url: str, first_id: int) -> None:
        super().__init__(daemon=True)
        self.url = url
        self.next_id = first_id
        self.live: set[int] = set(range(first_id))
        self.changes: list[tuple[str, int]] = []
        self.halt = threading.Event()
        self.error: BaseException | None = None

    def run(self) -> None:
        rng = random.Random(20)
        try:
            with psycopg.connect(self.url) as conn:
                for _ in range(100_000):
                    if self.halt.is_set():
                        return
                    done: list[tuple[str, int]] = []
                    for _ in range(rng.randint(1, 5)):
                        roll = rng.random()
                        if roll < 0.5 or len(self.live) < 10:
                            key = self.next_id
                            self.next_id += 1
                            conn.execute("INSERT INTO src VALUES (%s, %s, %s)", (key, f"n{key}", 0))
                            self.live.add(key)
                            done.append(("c", key))
                        elif roll < 0.85:
                            key = rng.choice(sorted(self.live))
                            conn.execute("UPDATE src SET qty = qty + 1 WHERE id = %s", (key,))
                            done.append(("u", key))
                        else:
                            key = rng.choice(sorted(self.live))
                            conn.execute("DELETE FROM src WHERE id = %s", (key,))
                            self.live.discard(key)
                            done.append(("d", key))
                    conn.commit()
                    self.changes.extend(done)
                    time.sleep(0.002)  # a steady trickle, not a flood, on a shared machine
        except BaseException as exc:  # reported by the test
            self.error = exc


def topic_records(
    broker: BrokerProcess,
) -> tuple[list[tuple[str, int]], list[tuple[int, int]], int]:
    """(op, id) of every committed record in the topic, in order; (id, qty) of each row
    version (``after``); the offset after the last record (transaction markers and aborted
    records take offsets too)."""
    consumer = Consumer(
        {
            "bootstrap.servers": broker.bootstrap,
            "group.id": "pipeline-check",
            "isolation.level": "read_committed",
            "enable.auto.commit": False,
        }
    )
    try:
        end = consumer.get_watermark_offsets(TopicPartition(TOPIC, 0), timeout=10)[1]
        consumer.assign([TopicPartition(TOPIC, 0, 0)])
        out: list[tuple[str, int]] = []
        versions: list[tuple[int, int]] = []
        deadline = time.monotonic() + 60
        last = -1
        fetched = 0
        while fetched < end and time.monotonic() < deadline:
            for message in consumer.consume(1000, 0.5):
                if message.error() is not None:
                    continue
                last = message.offset()
                value = json.loads(message.value())
                key = json.loads(message.key())["id"]
                out.append((value["op"], key))
                if value["after"] is not None:
                    versions.append((key, value["after"]["qty"]))
            # the next offset to fetch, past transaction markers and aborted records
            fetched = consumer.position([TopicPartition(TOPIC, 0)])[0].offset
        return out, versions, last + 1
    finally:
        consumer.close()


def table(url: str, name: str) -> list[tuple[Any, ...]]:
    with psycopg.connect(url) as conn:
        found = conn.execute("SELECT to_regclass(%s)", (name,)).fetchone()
        if found is None or found[0] is None:
            return []
        return conn.execute(f"SELECT id, name, qty FROM {name} ORDER BY id").fetchall()


@pytest.fixture
def db_url(postgres_logical_server: PostgresServer) -> Iterator[str]:
    url = postgres_logical_server.create_database("pipe")
    yield url
    with psycopg.connect(url, autocommit=True) as conn:
        for (slot,) in conn.execute(
            "SELECT slot_name FROM pg_replication_slots WHERE database = current_database()"
        ).fetchall():
            conn.execute("SELECT pg_drop_replication_slot(%s)", (slot,))


def test_cdc_to_sink_survives_kill_9(broker: BrokerProcess, db_url: str, tmp_path: Path) -> None:
    initial = 300
    with psycopg.connect(db_url, autocommit=True) as conn:
        conn.execute("CREATE TABLE src (id int PRIMARY KEY, name text, qty int NOT NULL)")
        conn.execute(
            "INSERT INTO src SELECT g, 'n' || g, 0 FROM generate_series(0, %s) g", (initial - 1,)
        )
    config = tmp_path / "pipeline.toml"
    config.write_text(pipeline_toml(db_url))
    connect = ConnectProcess(broker, config, tmp_path / "connect.log").start()
    writer = Writer(db_url, initial)
    try:
        wait_until("the snapshot in dst", lambda: len(table(db_url, "dst")) >= initial, 60)
        writer.start()
        wait_until("200 changes", lambda: len(writer.changes) >= 200, 60)
        connect.kill()  # mid-stream: the writer goes on
        wait_until("400 changes", lambda: len(writer.changes) >= 400, 60)
        connect = ConnectProcess(broker, config, tmp_path / "connect.log").start()
        wait_until("600 changes", lambda: len(writer.changes) >= 600, 60)
    finally:
        writer.halt.set()
        writer.join(30)
    assert writer.error is None, writer.error
    try:
        wait_until("dst to equal src", lambda: table(db_url, "dst") == table(db_url, "src"), 120)
        row_versions = initial + sum(1 for op, _ in writer.changes if op != "d")
        wait_until("dst_log to catch up", lambda: len(table(db_url, "dst_log")) >= row_versions)
    finally:
        connect.stop()
    records, versions, after_last = topic_records(broker)
    snapshot = [r for r in records if r[0] == "r"]
    assert sorted(snapshot) == [("r", i) for i in range(initial)]
    assert [r for r in records if r[0] != "r"] == writer.changes
    # The append-only copy holds every row version once; both sinks' progress is in the
    # target, written in the same transactions as their rows.
    with psycopg.connect(db_url) as conn:
        logged = conn.execute("SELECT id, qty FROM dst_log ORDER BY id, qty").fetchall()
        stored = conn.execute(
            "SELECT connector, next_offset FROM _bayou_connect_offsets ORDER BY connector"
        ).fetchall()
    assert len(versions) == row_versions
    assert logged == sorted(versions)
    assert stored == [("pg-copy", after_last), ("pg-log", after_last)]
    log = (tmp_path / "connect.log").read_text()
    assert "Traceback" not in log, log[-3000:]
