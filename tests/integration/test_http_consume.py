"""HTTP consumer instances (REST Proxy v2): read Kafka-produced records, commit, restart,
resume; two instances of one group split the partitions; seeks; expiry."""

from __future__ import annotations

import base64
from pathlib import Path

import httpx
import pytest

from tests.integration.test_confluent_kafka import create_topic, produce_all
from tests.support.broker import BrokerProcess
from tests.support.http import (
    BINARY_V2,
    JSON_V2,
    V2,
    client,
    create_instance,
    read_records,
    wait_until,
)
from tests.support.kafka import make_messages, unique_topic

GROUP_ENV = {
    # quick heartbeats so that group rebalances settle within a test's patience
    "BAYOU_GROUP_CONSUMER_HEARTBEAT_INTERVAL_MS": "300",
    "BAYOU_HTTP_CONSUMER_INSTANCE_TIMEOUT_MS": "1500",
}


@pytest.fixture(scope="module")
def group_broker(tmp_path_factory: pytest.TempPathFactory):  # type: ignore[no-untyped-def]
    proc = BrokerProcess(tmp_path_factory.mktemp("http-groups") / "data", env=GROUP_ENV).start()
    try:
        yield proc
    finally:
        proc.kill()


def _decoded(records: list[dict]) -> list[tuple[int, int, bytes | None, bytes]]:
    return [
        (
            r["partition"],
            r["offset"],
            base64.b64decode(r["key"]) if r["key"] is not None else None,
            base64.b64decode(r["value"]),
        )
        for r in records
    ]


def _post(http: httpx.Client, path: str, body: object | None = None) -> httpx.Response:
    return http.post(path, json=body, headers={"Content-Type": V2})


def test_commit_restart_resume(tmp_path: Path) -> None:
    broker = BrokerProcess(tmp_path / "data").start()
    try:
        topic = unique_topic("cr")
        create_topic(broker.bootstrap, topic, 2)
        first = make_messages(40, 2)
        produce_all(broker.bootstrap, topic, first)
        with client(broker.http_url) as http:
            base = create_instance(
                http,
                "g-resume",
                "c1",
                format="binary",
                **{"auto.offset.reset": "earliest", "auto.commit.enable": "false"},
            )
            r = _post(http, f"{base}/subscription", {"topics": [topic]})
            assert r.status_code == 204, r.text
            got = read_records(http, base, BINARY_V2, 40)
            assert sorted(_decoded(got)) == sorted(
                (m.partition, i // 2, m.key, m.value) for i, m in enumerate(first)
            )
            assert _post(http, f"{base}/offsets").status_code == 200
            committed = http.request(
                "GET",
                f"{base}/offsets",
                json={
                    "partitions": [
                        {"topic": topic, "partition": 0},
                        {"topic": topic, "partition": 1},
                    ]
                },
            ).json()
            assert sorted((o["partition"], o["offset"]) for o in committed["offsets"]) == [
                (0, 20),
                (1, 20),
            ]
        second = make_messages(10, 2, base_ts=first[-1].timestamp_ms + 1)
        produce_all(broker.bootstrap, topic, second)
        broker.restart()
        with client(broker.http_url) as http:
            base = create_instance(
                http, "g-resume", "c2", format="binary", **{"auto.offset.reset": "earliest"}
            )
            assert _post(http, f"{base}/subscription", {"topics": [topic]}).status_code == 204
            got = read_records(http, base, BINARY_V2, 10)
            assert sorted((p, o) for p, o, _, _ in _decoded(got)) == sorted(
                [(0, 20 + i) for i in range(5)] + [(1, 20 + i) for i in range(5)]
            )
            assert {v for _, _, _, v in _decoded(got)} == {m.value for m in second}
            assert http.delete(base).status_code == 204
    finally:
        broker.kill()


def test_two_instances_split_the_partitions(group_broker: BrokerProcess) -> None:
    topic, group = unique_topic("split"), unique_topic("g")
    create_topic(group_broker.bootstrap, topic, 4)
    with client(group_broker.http_url) as http:
        bases = []
        for name in ("a", "b"):
            base = create_instance(
                http, group, name, format="json", **{"auto.offset.reset": "earliest"}
            )
            assert _post(http, f"{base}/subscription", {"topics": [topic]}).status_code == 204
            bases.append(base)

        def split() -> list[set[int]] | None:
            owned = []
            for base in bases:
                http.get(
                    f"{base}/records", params={"timeout": 0}, headers={"Accept": JSON_V2}
                )  # a read heartbeats
                parts = http.get(f"{base}/assignments").json()["partitions"]
                owned.append({p["partition"] for p in parts})
            ok = all(owned) and not owned[0] & owned[1] and owned[0] | owned[1] == set(range(4))
            return owned if ok else None

        owned = wait_until(split, 30, "a split of 4 partitions between 2 instances")
        r = http.post(
            f"/topics/{topic}",
            json={"records": [{"key": f"k{i}", "value": {"i": i}} for i in range(80)]},
        )
        assert r.status_code == 200
        seen: list[list[dict]] = [[], []]

        def all_read() -> bool:
            for i, base in enumerate(bases):
                r = http.get(
                    f"{base}/records", params={"timeout": 200}, headers={"Accept": JSON_V2}
                )
                assert r.status_code == 200, r.text
                seen[i].extend(r.json())
            return sum(len(s) for s in seen) >= 80

        wait_until(all_read, 30, "80 records read by the two instances")
        for i in (0, 1):
            assert seen[i] and {r["partition"] for r in seen[i]} <= owned[i]
        values = sorted(r["value"]["i"] for s in seen for r in s)
        assert values == list(range(80))
        # one leaves: the other takes every partition
        assert http.delete(bases[0]).status_code == 204

        def took_all() -> bool:
            http.get(f"{bases[1]}/records", params={"timeout": 0}, headers={"Accept": JSON_V2})
            parts = http.get(f"{bases[1]}/assignments").json()["partitions"]
            return len(parts) == 4

        wait_until(took_all, 30, "the remaining instance owning all 4 partitions")


def test_assignment_seek_and_explicit_commit(group_broker: BrokerProcess) -> None:
    topic, group = unique_topic("seek"), unique_topic("g")
    create_topic(group_broker.bootstrap, topic, 1)
    produce_all(group_broker.bootstrap, topic, make_messages(10, 1))
    tp = {"topic": topic, "partition": 0}
    with client(group_broker.http_url) as http:
        base = create_instance(http, group, "m", format="binary")
        assert _post(http, f"{base}/assignments", {"partitions": [tp]}).status_code == 204
        assert http.get(f"{base}/assignments").json() == {"partitions": [tp]}
        # latest by default: nothing to read
        assert http.get(f"{base}/records", params={"timeout": 100}).json() == []
        assert _post(http, f"{base}/positions/beginning", {"partitions": [tp]}).status_code == 204
        assert [r["offset"] for r in read_records(http, base, BINARY_V2, 10)] == list(range(10))
        assert (
            _post(http, f"{base}/positions", {"offsets": [{**tp, "offset": 7}]}).status_code == 204
        )
        assert [r["offset"] for r in read_records(http, base, BINARY_V2, 3)] == [7, 8, 9]
        assert _post(http, f"{base}/positions/end", {"partitions": [tp]}).status_code == 204
        # explicit commit: "offset 4 is processed" → the group resumes at 5
        r = _post(http, f"{base}/offsets", {"offsets": [{**tp, "offset": 4}]})
        assert r.status_code == 200, r.text
        got = http.request("GET", f"{base}/offsets", json={"partitions": [tp]}).json()
        assert got == {"offsets": [{**tp, "offset": 5, "metadata": ""}]}
        # wrong Accept for a binary instance; subscription after assignment; unassigned seek
        r = http.get(f"{base}/records", headers={"Accept": JSON_V2})
        assert (r.status_code, r.json()["error_code"]) == (406, 40601)
        r = _post(http, f"{base}/subscription", {"topics": [topic]})
        assert (r.status_code, r.json()["error_code"]) == (409, 40903)
        r = _post(http, f"{base}/positions", {"offsets": [{**tp, "partition": 3, "offset": 0}]})
        assert (r.status_code, r.json()["error_code"]) == (409, 40903)
        r = http.post(f"/consumers/{group}", json={"name": "m"})
        assert (r.status_code, r.json()["error_code"]) == (409, 40902)
        assert http.delete(base).status_code == 204
        r = http.get(f"{base}/records")
        assert (r.status_code, r.json()["error_code"]) == (404, 40403)


def test_json_instance_and_idle_expiry(group_broker: BrokerProcess) -> None:
    topic, group = unique_topic("exp"), unique_topic("g")
    create_topic(group_broker.bootstrap, topic, 1)
    with client(group_broker.http_url) as http:
        http.post(f"/topics/{topic}", json={"records": [{"key": [1], "value": {"a": None}}]})
        base = create_instance(
            http, group, "idle", format="json", **{"auto.offset.reset": "earliest"}
        )
        _post(http, f"{base}/assignments", {"partitions": [{"topic": topic, "partition": 0}]})
        got = read_records(http, base, JSON_V2, 1)
        assert [(r["key"], r["value"]) for r in got] == [([1], {"a": None})]

        def expired() -> bool:  # re-creating the name does not touch the idle instance
            r = http.post(f"/consumers/{group}", json={"name": "idle"})
            return r.status_code == 200

        wait_until(expired, 20, "the idle instance to expire", interval=0.2)


def test_revoked_partitions_are_committed_first(group_broker: BrokerProcess) -> None:
    """With auto-commit, an instance giving a partition up commits its position first: the
    instance that takes the partition over goes on from there, it does not read it again."""
    topic, group = unique_topic("rev"), unique_topic("g")
    create_topic(group_broker.bootstrap, topic, 2)
    earliest = {"auto.offset.reset": "earliest"}
    with client(group_broker.http_url) as http:
        r = http.post(
            f"/topics/{topic}",
            json={"records": [{"value": {"old": i}, "partition": i % 2} for i in range(20)]},
        )
        assert r.status_code == 200, r.text
        first = create_instance(http, group, "first", format="json", **earliest)
        assert _post(http, f"{first}/subscription", {"topics": [topic]}).status_code == 204
        old = read_records(http, first, JSON_V2, 20)
        assert sorted(r["value"]["old"] for r in old) == list(range(20))
        second = create_instance(http, group, "second", format="json", **earliest)
        assert _post(http, f"{second}/subscription", {"topics": [topic]}).status_code == 204
        seen: list[dict] = []

        def second_owns_one() -> bool:
            r = http.get(
                f"{second}/records", params={"timeout": 100}, headers={"Accept": JSON_V2}
            )  # heartbeats, and reads
            assert r.status_code == 200, r.text
            seen.extend(r.json())
            return len(http.get(f"{second}/assignments").json()["partitions"]) == 1

        wait_until(second_owns_one, 30, "the second instance owning one partition")
        [moved] = http.get(f"{second}/assignments").json()["partitions"]
        got = http.request("GET", f"{second}/offsets", json={"partitions": [moved]}).json()
        # the first instance's position, committed as it gave the partition up
        assert got == {"offsets": [{**moved, "offset": 10, "metadata": ""}]}
        r = http.post(
            f"/topics/{topic}/partitions/{moved['partition']}",
            json={"records": [{"value": {"new": 1}}]},
        )
        assert r.status_code == 200, r.text
        seen.extend(read_records(http, second, JSON_V2, 1))
        assert [(r["partition"], r["offset"], r["value"]) for r in seen] == [
            (moved["partition"], 10, {"new": 1})
        ]


def test_seek_past_the_end_resets_to_the_start_under_earliest(
    group_broker: BrokerProcess,
) -> None:
    """As a Kafka consumer with auto.offset.reset=earliest: a position past the log end is
    out of range, and reading resets it to the log start."""
    topic, group = unique_topic("past"), unique_topic("g")
    create_topic(group_broker.bootstrap, topic, 1)
    tp = {"topic": topic, "partition": 0}
    with client(group_broker.http_url) as http:
        http.post(f"/topics/{topic}", json={"records": [{"value": i} for i in range(5)]})
        base = create_instance(http, group, "m", format="json", **{"auto.offset.reset": "earliest"})
        assert _post(http, f"{base}/assignments", {"partitions": [tp]}).status_code == 204
        assert (
            _post(http, f"{base}/positions", {"offsets": [{**tp, "offset": 100}]}).status_code
            == 204
        )
        got = read_records(http, base, JSON_V2, 5)
        assert [(r["offset"], r["value"]) for r in got] == [(i, i) for i in range(5)]


def test_a_record_a_json_instance_cannot_decode_moves_nothing(
    group_broker: BrokerProcess,
) -> None:
    """422 for a record that is not JSON; every position stays where it was, so after a
    seek past that record the other partitions' records are still there to read."""
    topic, group = unique_topic("nojson"), unique_topic("g")
    create_topic(group_broker.bootstrap, topic, 2)
    with client(group_broker.http_url) as http:
        r = http.post(f"/topics/{topic}/partitions/0", json={"records": [{"value": {"a": 1}}]})
        assert r.status_code == 200, r.text
        r = http.post(
            f"/topics/{topic}/partitions/1",
            json={"records": [{"value": base64.b64encode(b"\xff not json").decode()}]},
            headers={"Content-Type": BINARY_V2},
        )
        assert r.status_code == 200, r.text
        base = create_instance(http, group, "m", format="json", **{"auto.offset.reset": "earliest"})
        parts = [{"topic": topic, "partition": p} for p in (0, 1)]
        assert _post(http, f"{base}/assignments", {"partitions": parts}).status_code == 204
        r = http.get(f"{base}/records", params={"timeout": 1000}, headers={"Accept": JSON_V2})
        assert (r.status_code, r.json()["error_code"]) == (422, 42203), r.text
        r = _post(http, f"{base}/positions", {"offsets": [{**parts[1], "offset": 1}]})
        assert r.status_code == 204, r.text
        got = read_records(http, base, JSON_V2, 1)
        assert [(r["partition"], r["offset"], r["value"]) for r in got] == [(0, 0, {"a": 1})]


def test_numbers_written_as_json_strings(group_broker: BrokerProcess) -> None:
    """REST Proxy (Jackson) takes the decimal text of an integer wherever a body has an
    integer field; clients written against it send them.  Other text is still a 422."""
    topic, group = unique_topic("text"), unique_topic("g")
    create_topic(group_broker.bootstrap, topic, 2)
    tp = {"topic": topic, "partition": "1"}
    with client(group_broker.http_url) as http:
        r = http.post(
            f"/topics/{topic}", json={"records": [{"value": i, "partition": "1"} for i in range(4)]}
        )
        assert r.status_code == 200, r.text
        assert [(o["partition"], o["offset"]) for o in r.json()["offsets"]] == [
            (1, i) for i in range(4)
        ]
        base = create_instance(
            http,
            group,
            "m",
            format="json",
            **{"fetch.min.bytes": "1", "consumer.request.timeout.ms": "500"},
        )
        assert _post(http, f"{base}/assignments", {"partitions": [tp]}).status_code == 204
        assert http.get(f"{base}/assignments").json() == {
            "partitions": [{"topic": topic, "partition": 1}]
        }
        r = _post(http, f"{base}/positions", {"offsets": [{**tp, "offset": "01"}]})
        assert r.status_code == 204, r.text
        got = read_records(http, base, JSON_V2, 3)
        assert [(r["partition"], r["offset"], r["value"]) for r in got] == [
            (1, 1, 1),
            (1, 2, 2),
            (1, 3, 3),
        ]
        r = _post(http, f"{base}/offsets", {"offsets": [{**tp, "offset": "2"}]})
        assert r.status_code == 200, r.text
        committed = http.request("GET", f"{base}/offsets", json={"partitions": [tp]}).json()
        assert committed == {
            "offsets": [{"topic": topic, "partition": 1, "offset": 3, "metadata": ""}]
        }
        for bad in ("1.0", " 1", "-1", "0x1", "one", ""):
            r = http.post(f"/topics/{topic}", json={"records": [{"value": 0, "partition": bad}]})
            assert (r.status_code, r.json()["error_code"]) == (422, 422), (bad, r.text)
        r = http.post(f"/consumers/{group}", json={"consumer.request.timeout.ms": "60001"})
        assert (r.status_code, r.json()["error_code"]) == (422, 422), r.text
        assert http.get(f"/topics/{topic}/partitions/1/offsets").json()["end_offset"] == 4


def test_a_graceful_stop_commits_what_instances_returned(tmp_path: Path) -> None:
    """Auto-commit on: a broker that stops gracefully commits the positions of what its
    subscribed instances returned as they leave their groups; after the restart the group
    goes on from there."""
    broker = BrokerProcess(tmp_path / "data").start()
    try:
        topic, group = unique_topic("stop"), unique_topic("g")
        with client(broker.http_url) as http:
            r = http.post(f"/topics/{topic}", json={"records": [{"value": i} for i in range(10)]})
            assert r.status_code == 200, r.text
            base = create_instance(
                http, group, "a", format="json", **{"auto.offset.reset": "earliest"}
            )
            assert _post(http, f"{base}/subscription", {"topics": [topic]}).status_code == 204
            assert len(read_records(http, base, JSON_V2, 10)) == 10
        broker.restart()
        with client(broker.http_url) as http:
            base = create_instance(
                http, group, "b", format="json", **{"auto.offset.reset": "earliest"}
            )
            committed = http.request(
                "GET", f"{base}/offsets", json={"partitions": [{"topic": topic, "partition": 0}]}
            ).json()
            assert committed == {
                "offsets": [{"topic": topic, "partition": 0, "offset": 10, "metadata": ""}]
            }
    finally:
        broker.kill()
