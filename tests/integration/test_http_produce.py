"""HTTP produce (REST Proxy v2): httpx and curl write, confluent-kafka reads back."""

from __future__ import annotations

import base64
import json
import subprocess
from pathlib import Path

import pytest
from confluent_kafka import Producer

from tests.integration.test_confluent_kafka import consume_all, create_topic
from tests.support.broker import BrokerProcess
from tests.support.http import BINARY_V2, JSON_V2, V2, client, create_instance, read_records
from tests.support.kafka import unique_topic


def test_httpx_json_records_read_back_by_confluent_kafka(shared_broker: BrokerProcess) -> None:
    topic = unique_topic("hj")
    create_topic(shared_broker.bootstrap, topic, 3)
    records = [{"key": f"user-{i % 7}", "value": {"n": i, "tags": ["a", "ü"]}} for i in range(60)]
    with client(shared_broker.http_url) as http:
        r = http.post(
            f"/topics/{topic}",
            content=json.dumps({"records": records}),
            headers={"Content-Type": JSON_V2},
        )
    assert r.status_code == 200, r.text
    assert r.headers["content-type"].startswith(V2)
    offsets = r.json()["offsets"]
    assert len(offsets) == 60 and all(o["error_code"] is None for o in offsets)
    received = consume_all(shared_broker.bootstrap, topic, 3, 60)
    placed = {(m.partition(), m.offset()): m for m in received}
    for sent, where in zip(records, offsets, strict=True):
        msg = placed[(where["partition"], where["offset"])]
        assert json.loads(msg.key()) == sent["key"]
        assert json.loads(msg.value()) == sent["value"]
    # one key, one partition
    by_key: dict[bytes, set[int]] = {}
    for m in received:
        by_key.setdefault(m.key(), set()).add(m.partition())
    assert all(len(parts) == 1 for parts in by_key.values())


def test_curl_binary_records_with_keys(shared_broker: BrokerProcess) -> None:
    topic = unique_topic("hb")
    create_topic(shared_broker.bootstrap, topic, 2)
    raw = [(b"\x00\x01key", bytes(range(256))), (None, b"no key"), (b"k2", b"")]
    body = {
        "records": [
            {
                "key": base64.b64encode(k).decode() if k is not None else None,
                "value": base64.b64encode(v).decode(),
                "partition": 1,
            }
            for k, v in raw
        ]
    }
    out = subprocess.run(
        [
            "curl",
            "-sS",
            "--max-time",
            "20",
            "-X",
            "POST",
            "-H",
            f"Content-Type: {BINARY_V2}",
            "--data-binary",
            json.dumps(body),
            f"{shared_broker.http_url}/topics/{topic}",
        ],
        capture_output=True,
        check=True,
        timeout=30,
    )
    answer = json.loads(out.stdout)
    assert [(o["partition"], o["offset"]) for o in answer["offsets"]] == [(1, 0), (1, 1), (1, 2)]
    received = consume_all(shared_broker.bootstrap, topic, 2, 3)
    assert [(m.key(), m.value()) for m in received] == [(k, v) for k, v in raw]


def test_partition_path_and_plain_json(shared_broker: BrokerProcess) -> None:
    topic = unique_topic("hp")
    create_topic(shared_broker.bootstrap, topic, 3)
    with client(shared_broker.http_url) as http:
        r = http.post(f"/topics/{topic}/partitions/2", json={"records": [{"value": 1}] * 4})
        assert r.status_code == 200, r.text
        assert [(o["partition"], o["offset"]) for o in r.json()["offsets"]] == [
            (2, 0),
            (2, 1),
            (2, 2),
            (2, 3),
        ]
        # unkeyed records without a partition go round-robin
        r = http.post(f"/topics/{topic}", json={"records": [{"value": i} for i in range(6)]})
        assert sorted(o["partition"] for o in r.json()["offsets"]) == [0, 0, 1, 1, 2, 2]
        assert http.get(f"/topics/{topic}/partitions/2/offsets").json() == {
            "beginning_offset": 0,
            "end_offset": 6,
        }


def test_keyed_records_land_where_the_java_partitioner_puts_them(
    shared_broker: BrokerProcess,
) -> None:
    """librdkafka's murmur2_random is the Java client's default partitioner."""
    topic_http, topic_kafka = unique_topic("mh"), unique_topic("mk")
    for topic in (topic_http, topic_kafka):
        create_topic(shared_broker.bootstrap, topic, 7)
    keys = [f"device-{i}" for i in range(50)] + ["", "ü", "a" * 33]
    with client(shared_broker.http_url) as http:
        body = {
            "records": [
                {"key": base64.b64encode(k.encode()).decode(), "value": "eA=="} for k in keys
            ]
        }
        r = http.post(f"/topics/{topic_http}", json=body, headers={"Content-Type": BINARY_V2})
        http_partitions = [o["partition"] for o in r.json()["offsets"]]
    producer = Producer(
        {"bootstrap.servers": shared_broker.bootstrap, "partitioner": "murmur2_random"}
    )
    kafka_partitions: list[int] = []
    for k in keys:
        producer.produce(
            topic_kafka,
            key=k.encode(),
            value=b"x",
            on_delivery=lambda err, msg: kafka_partitions.append(msg.partition()),
        )
        producer.flush(15)
    assert http_partitions == kafka_partitions


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def test_headers_are_kept_and_read_back_exactly(shared_broker: BrokerProcess) -> None:
    """REST Proxy v3 style headers, in either format: confluent-kafka and an HTTP consumer
    instance get them back in order, repeats, empty and null values, bytes and all."""
    topic = unique_topic("hh")
    create_topic(shared_broker.bootstrap, topic, 1)
    headers = [
        ("trace-id", b"abc-123"),
        ("bin", bytes(range(256))),
        ("trace-id", b"again"),
        ("empty", b""),
        ("none", None),
        ("ü", "é".encode()),
    ]
    wire = [{"name": n, "value": None if v is None else _b64(v)} for n, v in headers]
    with client(shared_broker.http_url) as http:
        r = http.post(
            f"/topics/{topic}",
            json={"records": [{"key": "k", "value": {"n": 1}, "headers": wire}, {"value": 2}]},
            headers={"Content-Type": JSON_V2},
        )
        assert r.status_code == 200, r.text
        r = http.post(
            f"/topics/{topic}/partitions/0",
            json={"records": [{"value": _b64(b"x"), "headers": wire[:1]}]},
            headers={"Content-Type": BINARY_V2},
        )
        assert r.status_code == 200, r.text
        bad = http.post(
            f"/topics/{topic}",
            json={"records": [{"value": 3, "headers": [{"name": "h", "value": "not base64!"}]}]},
        )
        assert bad.status_code == 422, bad.text
        received = consume_all(shared_broker.bootstrap, topic, 1, 3)
        assert [m.headers() for m in received] == [headers, None, headers[:1]]
        base = create_instance(
            http,
            unique_topic("hhg"),
            "reader",
            format="binary",
            **{"auto.offset.reset": "earliest"},
        )
        r = http.post(
            f"{base}/assignments",
            json={"partitions": [{"topic": topic, "partition": 0}]},
            headers={"Content-Type": V2},
        )
        assert r.status_code == 204, r.text
        got = read_records(http, base, BINARY_V2, 3)
    assert [g.get("headers") for g in got] == [wire, None, wire[:1]]
    assert [g["offset"] for g in got] == [0, 1, 2]  # the refused request wrote nothing


def test_topic_metadata(shared_broker: BrokerProcess) -> None:
    topic = unique_topic("hm")
    create_topic(shared_broker.bootstrap, topic, 2, **{"retention.ms": "3600000"})
    with client(shared_broker.http_url) as http:
        assert topic in http.get("/topics").json()
        info = http.get(f"/topics/{topic}").json()
        assert info["name"] == topic and info["configs"]["retention.ms"] == "3600000"
        assert [p["partition"] for p in info["partitions"]] == [0, 1]
        parts = http.get(f"/topics/{topic}/partitions").json()
        assert parts[1]["replicas"] == [{"broker": 0, "leader": True, "in_sync": True}]
        missing = http.get(f"/topics/{topic}-nope")
        assert missing.status_code == 404 and missing.json()["error_code"] == 40401
        assert http.get(f"/topics/{topic}/partitions/5").json()["error_code"] == 40402


@pytest.fixture
def strict_broker(tmp_path: Path):  # type: ignore[no-untyped-def]
    proc = BrokerProcess(
        tmp_path / "data",
        extra_args=["--no-auto-create-topics"],
        env={"BAYOU_HTTP_MAX_BODY_BYTES": "4096"},
    ).start()
    try:
        yield proc
    finally:
        proc.kill()


def test_bad_requests_are_clear_4xx_and_write_nothing(strict_broker: BrokerProcess) -> None:
    topic = unique_topic("bad")
    create_topic(strict_broker.bootstrap, topic, 2)
    base = f"/topics/{topic}"

    def post(body: bytes | str, content_type: str | None = JSON_V2, path: str = base):
        headers = {"Content-Type": content_type} if content_type else {}
        return http.post(path, content=body, headers=headers)

    good = json.dumps({"records": [{"value": 1}]})
    with client(strict_broker.http_url) as http:
        cases = [
            (post("x" * 5000), 413, 413),
            (post('{"records": [{"value": 1}'), 400, 400),
            (post(good, "text/plain"), 415, 415),
            (post(good, None), 415, 415),
            (post(good, "application/vnd.kafka.avro.v2+json"), 415, 415),
            (post('{"records": []}'), 422, 422),
            (post('{"records": [{"value": 1, "partition": -1}]}'), 422, 422),
            (post('{"records": "nope"}'), 422, 422),
            # the third record's base64 is bad: the first two are not written either
            (
                post(
                    json.dumps(
                        {
                            "records": [
                                {"value": "AA=="},
                                {"value": "AQ=="},
                                {"value": "not base64!"},
                            ]
                        }
                    ),
                    BINARY_V2,
                ),
                422,
                42203,
            ),
            # one record for a partition that does not exist: none written
            (
                post(
                    json.dumps(
                        {"records": [{"value": 1, "partition": 0}, {"value": 2, "partition": 9}]}
                    )
                ),
                404,
                40402,
            ),
            (post(good, path=f"{base}/partitions/2"), 404, 40402),
            (post(good, path=f"/topics/{topic}-missing"), 404, 40401),
            # a batch over the topic's max.message.bytes is refused whole
        ]
        for response, status, code in cases:
            assert response.status_code == status, response.text
            body = response.json()
            assert body["error_code"] == code and body["message"], body
        for p in (0, 1):
            assert http.get(f"{base}/partitions/{p}/offsets").json()["end_offset"] == 0
        assert f"{topic}-missing" not in http.get("/topics").json()
        assert post(good).status_code == 200


def test_batch_over_max_message_bytes_is_refused_whole(shared_broker: BrokerProcess) -> None:
    topic = unique_topic("big")
    create_topic(shared_broker.bootstrap, topic, 1, **{"max.message.bytes": "2000"})
    with client(shared_broker.http_url) as http:
        records = [{"value": "x" * 300} for _ in range(10)]
        r = http.post(f"/topics/{topic}", json={"records": records})
        assert r.status_code == 413 and r.json()["error_code"] == 413
        assert http.get(f"/topics/{topic}/partitions/0/offsets").json()["end_offset"] == 0
        r = http.post(f"/topics/{topic}", json={"records": records[:3]})
        assert r.status_code == 200
