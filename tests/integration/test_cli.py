"""The ``bayou`` CLI as a user runs it: a subprocess talking to a real broker.

Every test uses the ``broker`` fixture (a fresh ``bayou serve``).  Setting BAYOU_TEST_BOOTSTRAP
to ``host:port`` points these tests at an already running Kafka-compatible broker instead (used
while developing the CLI before the Bayou broker existed); topic names are unique per test so
that a shared broker works too.
"""

from __future__ import annotations

import base64
import datetime as dt
import json
import os
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import pytest

from tests.support.broker import BrokerProcess
from tests.support.ports import free_port

REPO = Path(__file__).resolve().parents[2]
CLI_TIMEOUT_S = 90.0


@pytest.fixture
def bootstrap(request: pytest.FixtureRequest) -> str:
    override = os.environ.get("BAYOU_TEST_BOOTSTRAP")
    if override:
        return override
    return str(request.getfixturevalue("broker").bootstrap)


@pytest.fixture
def topic_name() -> str:
    return f"cli-{uuid.uuid4().hex[:10]}"


def bayou(
    *args: str, stdin: bytes | None = None, timeout: float = CLI_TIMEOUT_S
) -> subprocess.CompletedProcess[bytes]:
    """Run ``python -m bayou ARGS`` and capture its output (never raises on exit code)."""
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    env.pop("BAYOU_BOOTSTRAP", None)
    return subprocess.run(
        [sys.executable, "-m", "bayou", *args],
        input=stdin,
        capture_output=True,
        cwd=REPO,
        env=env,
        timeout=timeout,
        check=False,
    )


def ok(proc: subprocess.CompletedProcess[bytes]) -> str:
    assert proc.returncode == 0, (proc.returncode, proc.stderr.decode())
    return proc.stdout.decode()


def json_lines(proc: subprocess.CompletedProcess[bytes]) -> list[dict[str, Any]]:
    return [json.loads(line) for line in ok(proc).splitlines()]


def produce(bootstrap: str, topic: str, lines: list[str], *args: str) -> None:
    proc = bayou(
        "-b",
        bootstrap,
        "produce",
        topic,
        *args,
        stdin="".join(f"{line}\n" for line in lines).encode(),
    )
    ok(proc)
    noun = "message" if len(lines) == 1 else "messages"
    assert proc.stderr.decode().strip().endswith(f"produced {len(lines)} {noun}")


def create(bootstrap: str, topic: str, partitions: int = 1) -> None:
    ok(bayou("-b", bootstrap, "topic", "create", topic, "--partitions", str(partitions)))


def test_help_for_every_command() -> None:
    for command in (
        [],
        ["serve"],
        ["topic"],
        ["topic", "create"],
        ["topic", "list"],
        ["topic", "describe"],
        ["topic", "delete"],
        ["produce"],
        ["consume"],
    ):
        out = ok(bayou(*command, "--help"))
        assert out.startswith("Usage: bayou")
    consume_help = ok(bayou("consume", "--help"))
    for option in (
        "--from",
        "--partition",
        "--follow",
        "--max-messages",
        "--format",
        "--group",
        "--bootstrap",
    ):
        assert option in consume_help


def test_topic_create_list_describe_delete(bootstrap: str, topic_name: str) -> None:
    out = ok(
        bayou(
            "-b",
            bootstrap,
            "topic",
            "create",
            topic_name,
            "--partitions",
            "3",
            "--config",
            "retention.ms=86400000",
        )
    )
    assert out.strip() == f"Created topic '{topic_name}' with 3 partitions."
    assert topic_name in ok(bayou("-b", bootstrap, "topic", "list")).splitlines()

    again = bayou("-b", bootstrap, "topic", "create", topic_name, "--partitions", "3")
    assert again.returncode == 1
    assert again.stderr.decode().strip() == f"Topic '{topic_name}' already exists."

    info = json.loads(
        ok(bayou("-b", bootstrap, "topic", "describe", topic_name, "--format", "json"))
    )
    assert info["name"] == topic_name
    assert info["topic_id"]
    assert [p["partition"] for p in info["partitions"]] == [0, 1, 2]
    assert all(p["earliest_offset"] == 0 and p["latest_offset"] == 0 for p in info["partitions"])
    assert [p["size_bytes"] for p in info["partitions"]] == [0, 0, 0]
    assert info["configs"]["retention.ms"]["value"] == "86400000"

    produce(bootstrap, topic_name, ["a", "b"], "--partition", "1")
    text = ok(bayou("-b", bootstrap, "topic", "describe", topic_name))
    assert f"Topic ID:   {info['topic_id']}" in text
    assert "retention.ms = 86400000" in text
    rows = [line.split() for line in text.splitlines() if line.strip()[:1].isdigit()]
    assert [(r[0], r[2], r[3]) for r in rows] == [("0", "0", "0"), ("1", "0", "2"), ("2", "0", "0")]
    sizes = [int(r[5]) for r in rows]  # bytes on disk: one batch of two records in partition 1
    assert sizes[0] == sizes[2] == 0 and 61 + 2 * 7 < sizes[1] < 1000

    assert ok(bayou("-b", bootstrap, "topic", "delete", topic_name)).strip() == (
        f"Deleted topic '{topic_name}'."
    )
    assert topic_name not in ok(bayou("-b", bootstrap, "topic", "list")).splitlines()
    gone = bayou("-b", bootstrap, "topic", "describe", topic_name)
    assert gone.returncode == 1
    assert gone.stderr.decode().strip() == f"Topic '{topic_name}' does not exist."


def test_produce_keys_and_headers_then_consume_json(bootstrap: str, topic_name: str) -> None:
    create(bootstrap, topic_name)
    lines = [f"key-{i}|value {i} ünïcødé" for i in range(20)] + ["k|with|bars", "k2|"]
    produce(
        bootstrap,
        topic_name,
        lines,
        "--key-separator",
        "|",
        "--header",
        "source=cli",
        "--header",
        "trace=42",
        "--header",
        "source=again",
    )
    before = time.time() * 1000

    proc = bayou("-b", bootstrap, "consume", topic_name, "--from", "earliest", "--format", "json")
    messages = json_lines(proc)
    assert proc.stderr.decode().strip() == f"consumed {len(lines)} messages"
    assert len(messages) == len(lines)
    for offset, (line, msg) in enumerate(zip(lines, messages, strict=True)):
        key, _, value = line.partition("|")
        assert msg["topic"] == topic_name
        assert (msg["partition"], msg["offset"]) == (0, offset)
        assert (msg["key"], msg["value"]) == (key, value)
        assert not msg["key_base64"] and not msg["value_base64"]
        assert [(h["key"], h["value"]) for h in msg["headers"]] == [
            ("source", "cli"),
            ("trace", "42"),
            ("source", "again"),
        ]
        assert 0 < msg["timestamp"] <= before + 1000
        iso = dt.datetime.fromisoformat(msg["time"].replace("Z", "+00:00"))
        assert int(iso.timestamp() * 1000) == msg["timestamp"]


def test_consume_text_all_partitions_stops_at_the_end(bootstrap: str, topic_name: str) -> None:
    create(bootstrap, topic_name, partitions=3)
    lines = [f"k{i % 5}\tv{i}" for i in range(30)]
    produce(bootstrap, topic_name, lines, "--key-separator", "\t")
    started = time.monotonic()
    out = ok(bayou("-b", bootstrap, "consume", topic_name, "--print-key"))
    assert time.monotonic() - started < 20
    assert sorted(out.splitlines()) == sorted(lines)
    # Per key (hence per partition) the order is the production order.
    for k in range(5):
        mine = [line for line in out.splitlines() if line.startswith(f"k{k}\t")]
        assert mine == [line for line in lines if line.startswith(f"k{k}\t")]


def test_consume_from_offset_and_partition(bootstrap: str, topic_name: str) -> None:
    create(bootstrap, topic_name)
    produce(bootstrap, topic_name, [f"m{i}" for i in range(10)])
    out = ok(bayou("-b", bootstrap, "consume", topic_name, "--from", "4"))
    assert out.splitlines() == [f"m{i}" for i in range(4, 10)]
    out = ok(
        bayou(
            "-b",
            bootstrap,
            "consume",
            topic_name,
            "--partition",
            "0",
            "--from",
            "7",
            "--max-messages",
            "2",
        )
    )
    assert out.splitlines() == ["m7", "m8"]
    assert ok(bayou("-b", bootstrap, "consume", topic_name, "--from", "latest")) == ""
    missing = bayou("-b", bootstrap, "consume", topic_name, "--partition", "5")
    assert missing.returncode == 1
    assert missing.stderr.decode().strip() == (
        f"Topic '{topic_name}' has 1 partition; there is no partition 5."
    )


def test_consume_from_a_time_between_two_batches(bootstrap: str, topic_name: str) -> None:
    create(bootstrap, topic_name, partitions=2)
    produce(bootstrap, topic_name, [f"old-{i}" for i in range(5)])
    time.sleep(0.05)
    between = dt.datetime.now(dt.UTC)
    time.sleep(0.05)
    produce(bootstrap, topic_name, [f"new-{i}" for i in range(5)])

    messages = json_lines(
        bayou(
            "-b",
            bootstrap,
            "consume",
            topic_name,
            "--format",
            "json",
            "--from",
            between.isoformat(),
        )
    )
    assert sorted(m["value"] for m in messages) == [f"new-{i}" for i in range(5)]
    assert all(m["timestamp"] >= between.timestamp() * 1000 for m in messages)

    # A zone-less time is UTC.
    naive = between.replace(tzinfo=None).isoformat()
    again = ok(bayou("-b", bootstrap, "consume", topic_name, "--from", naive))
    assert sorted(again.splitlines()) == [f"new-{i}" for i in range(5)]
    later = (dt.datetime.now(dt.UTC) + dt.timedelta(hours=1)).isoformat()
    assert ok(bayou("-b", bootstrap, "consume", topic_name, "--from", later)) == ""


def test_binary_values_come_back_base64(bootstrap: str, topic_name: str) -> None:
    create(bootstrap, topic_name)
    proc = bayou("-b", bootstrap, "produce", topic_name, stdin=b"\xff\xfe\x00raw\r\nplain\n")
    ok(proc)
    first, second = json_lines(bayou("-b", bootstrap, "consume", topic_name, "--format", "json"))
    assert first["value_base64"] is True
    assert base64.b64decode(first["value"]) == b"\xff\xfe\x00raw"
    assert first["key"] is None
    assert (second["value"], second["value_base64"]) == ("plain", False)


def test_follow_waits_for_new_messages(bootstrap: str, topic_name: str) -> None:
    create(bootstrap, topic_name)
    produce(bootstrap, topic_name, ["before"])
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    follower = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "bayou",
            "-b",
            bootstrap,
            "consume",
            topic_name,
            "--follow",
            "--from",
            "latest",
            "--max-messages",
            "2",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        cwd=REPO,
        env=env,
    )
    try:
        time.sleep(3)  # let it assign and reach the end before producing
        produce(bootstrap, topic_name, ["after-1", "after-2", "after-3"])
        out, err = follower.communicate(timeout=CLI_TIMEOUT_S)
    finally:
        if follower.poll() is None:
            follower.kill()
            follower.wait()
    assert follower.returncode == 0, err.decode()
    assert out.decode().splitlines() == ["after-1", "after-2"]


def test_consumer_group_resumes_from_committed_offsets(bootstrap: str, topic_name: str) -> None:
    create(bootstrap, topic_name, partitions=2)
    group = f"g-{topic_name}"
    produce(bootstrap, topic_name, [f"a{i}" for i in range(6)])
    proc = bayou("-b", bootstrap, "consume", topic_name, "--group", group)
    if b"does it support consumer groups?" in proc.stderr:
        pytest.skip("the broker has no group coordinator yet (FindCoordinator/OffsetFetch)")
    first = ok(proc)
    assert sorted(first.splitlines()) == [f"a{i}" for i in range(6)]
    produce(bootstrap, topic_name, [f"b{i}" for i in range(4)])
    second = ok(bayou("-b", bootstrap, "consume", topic_name, "--group", group))
    assert sorted(second.splitlines()) == [f"b{i}" for i in range(4)]


def test_produce_reports_lines_without_the_separator(bootstrap: str, topic_name: str) -> None:
    create(bootstrap, topic_name)
    proc = bayou("-b", bootstrap, "produce", topic_name, "-K", "=", stdin=b"a=1\nno-sep\nb=2\n")
    assert proc.returncode == 1
    err = proc.stderr.decode()
    assert "Line 2 has no key separator '='; skipped." in err
    assert "produced 2 messages" in err
    assert err.strip().endswith("1 message could not be delivered.")


def test_dead_broker_is_a_sentence_not_a_hang() -> None:
    address = f"127.0.0.1:{free_port()}"
    for args in (["consume", "orders", "--from", "earliest"], ["topic", "list"]):
        started = time.monotonic()
        proc = bayou("-b", address, *args, timeout=30)
        assert time.monotonic() - started < 15
        assert proc.returncode == 1
        assert proc.stderr.decode().strip() == (
            f"Cannot reach a broker at {address} (is `bayou serve` running?)"
        )


def test_another_door_is_not_a_kafka_listener(broker: BrokerProcess) -> None:
    """Pointed at the HTTP, MQTT or AMQP port by mistake, every client command says so at
    once."""
    for door, port in (
        ("HTTP", broker.http_port),
        ("MQTT", broker.mqtt_port),
        ("AMQP", broker.amqp_port),
    ):
        address = f"127.0.0.1:{port}"
        for args in (["topic", "list"], ["consume", "orders"], ["group", "list"]):
            started = time.monotonic()
            proc = bayou("-b", address, *args, timeout=30)
            assert time.monotonic() - started < 15
            assert proc.returncode == 1
            assert proc.stderr.decode().strip() == (
                f"{address} answers in {door}: that port is not a Kafka listener (Bayou's "
                "Kafka port is 9092 unless `bayou serve --kafka-port` says otherwise)"
            )


def test_unknown_topic_and_invalid_names_read_like_sentences(bootstrap: str) -> None:
    missing = bayou("-b", bootstrap, "consume", "no-such-topic-here")
    assert missing.returncode == 1
    assert missing.stderr.decode().strip() == "Topic 'no-such-topic-here' does not exist."

    for args in (
        ["topic", "create", "bad name!"],
        ["consume", "bad/name"],
        ["produce", "bad name!"],
    ):
        proc = bayou("-b", bootstrap, *args, stdin=b"")
        assert proc.returncode == 2
        err = proc.stderr.decode().strip()
        assert err.startswith(f"'{args[-1]}' is not a valid topic name: ")
        assert err.endswith(".") and "\n" not in err and "Traceback" not in err


def test_produce_partitions_keys_like_the_other_doors(broker: Any, topic_name: str) -> None:
    """``bayou produce`` uses murmur2 (the Java client's partitioner), as HTTP, MQTT and AMQP
    do: a key lands on the same partition whichever door it came through."""
    import httpx

    from bayou.core.partitioner import partition_for_key

    partitions = 8
    create(broker.bootstrap, topic_name, partitions)
    keys = [f"user-{i}" for i in range(40)]
    produce(broker.bootstrap, topic_name, [f"{k}:cli" for k in keys], "--key-separator", ":")
    via_cli = {
        m["key"]: m["partition"]
        for m in json_lines(
            bayou(
                "-b",
                broker.bootstrap,
                "consume",
                topic_name,
                "--from",
                "earliest",
                "--format",
                "json",
            )
        )
    }
    records = [{"key": base64.b64encode(k.encode()).decode(), "value": "aHR0cA=="} for k in keys]
    answer = httpx.post(
        f"{broker.http_url}/topics/{topic_name}",
        timeout=30,
        headers={"Content-Type": "application/vnd.kafka.binary.v2+json"},
        json={"records": records},
    )  # binary: the same key bytes as the CLI's
    assert answer.status_code == 200, answer.text
    via_http = {k: o["partition"] for k, o in zip(keys, answer.json()["offsets"], strict=True)}
    assert via_cli == via_http
    # which is where a Java client (or librdkafka with murmur2_random) puts them
    assert via_cli == {k: partition_for_key(k.encode(), partitions) for k in keys}
