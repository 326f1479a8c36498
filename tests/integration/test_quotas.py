"""Client quotas with real clients: AlterClientQuotas/DescribeClientQuotas through
kafka-python's admin client, a confluent-kafka producer and consumer slowed to their byte
rates and told the throttle time, request-time quotas, the other doors slowed by
back-pressure, and a per-address connection-rate limit on every door.

The broker measures quotas over 2 samples of 1 s (``--quota-window-num 2``), so a client's
allowance for a burst is about one second of its quota.  The rate bounds asserted are
loose (2.5 times the quota): without throttling each of these transfers runs at several
MB/s on loopback, more than ten times the bound.
"""

from __future__ import annotations

import base64
import contextlib
import json
import socket
import struct
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pika
import pytest
from confluent_kafka import Consumer, Producer

from tests.support.broker import BrokerProcess
from tests.support.mqtt import MqttTestClient
from tests.support.quota_admin import QuotaAdmin
from tests.support.security import bayou_cli
from tests.support.wait import wait_until

QUOTA = 200_000  # bytes/s
TOTAL = 1_000_000  # bytes moved under a quota
VALUE = b"v" * 1000
FLOOD_HOST = "127.0.0.2"  # the flooding address (all of 127/8 is loopback)


@pytest.fixture(scope="module")
def quota_broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[BrokerProcess]:
    data = tmp_path_factory.mktemp("quotas") / "data"
    data.mkdir()
    broker = BrokerProcess(
        data, extra_args=["--quota-window-num", "2", "--quota-window-size-seconds", "1"]
    ).start()
    try:
        yield broker
    finally:
        broker.stop()


@pytest.fixture
def admin(quota_broker: BrokerProcess) -> Iterator[QuotaAdmin]:
    client = QuotaAdmin(quota_broker.bootstrap)
    try:
        yield client
    finally:
        client.close()


def set_quota(admin: QuotaAdmin, entity: dict[str, str | None], **values: float | None) -> None:
    assert admin.alter(entity, values) == (0, None)


# -- managing quotas ---------------------------------------------------------------------


def test_admin_client_sets_describes_and_removes_quotas_and_they_survive_a_restart(
    tmp_path: Path,
) -> None:
    data = tmp_path / "data"
    data.mkdir()
    # a stopped broker's data directory first, as `bayou user add --data-dir`
    offline = ["--data-dir", str(data)]
    done = bayou_cli("quota", "set", "--client-id", "<default>", "request_percentage=200", *offline)
    assert done.returncode == 0, done.stderr
    listed = bayou_cli("quota", "list", *offline)
    assert listed.stdout == "client-id <default>\trequest_percentage=200\n", listed
    broker = BrokerProcess(data, doors=()).start()
    try:
        admin = QuotaAdmin(broker.bootstrap)
        try:
            set_quota(admin, {"user": "alice"}, producer_byte_rate=1024, consumer_byte_rate=2048)
            set_quota(admin, {"user": "alice", "client-id": None}, request_percentage=50.5)
            set_quota(admin, {"user": None}, producer_byte_rate=4096)
            set_quota(admin, {"client-id": "etl"}, consumer_byte_rate=8192)
            set_quota(admin, {"ip": "::ffff:10.1.2.3"}, connection_creation_rate=7)
            # validate_only writes nothing; bad entries get Kafka's INVALID_REQUEST (42)
            assert admin.alter({"client-id": "dry"}, {"producer_byte_rate": 1}, True) == (0, None)
            assert admin.alter({"user": "alice"}, {"producer_byte_rate": 1.5}) == (
                42,
                "Configuration producer_byte_rate must be a Long value",
            )
            assert admin.alter({"ip": "10.1.2.3"}, {"producer_byte_rate": 1})[0] == 42
            assert (
                admin.alter({"user": "alice", "ip": "10.1.2.3"}, {"request_percentage": 1})[0] == 42
            )
            assert admin.alter({"group": "g"}, {"producer_byte_rate": 1})[0] == 42
        finally:
            admin.close()
        broker.restart()
        admin = QuotaAdmin(broker.bootstrap)
        try:
            everything = admin.describe()
            assert everything == {
                (("user", "alice"),): {"producer_byte_rate": 1024.0, "consumer_byte_rate": 2048.0},
                (("user", "alice"), ("client-id", None)): {"request_percentage": 50.5},
                (("user", None),): {"producer_byte_rate": 4096.0},
                (("client-id", "etl"),): {"consumer_byte_rate": 8192.0},
                (("client-id", None),): {"request_percentage": 200.0},
                (("ip", "10.1.2.3"),): {"connection_creation_rate": 7.0},
            }
            assert set(admin.describe([("user", 0, "alice")])) == {
                (("user", "alice"),),
                (("user", "alice"), ("client-id", None)),
            }
            assert set(admin.describe([("user", 0, "alice")], strict=True)) == {
                (("user", "alice"),)
            }
            assert set(admin.describe([("user", 1, None)])) == {(("user", None),)}
            assert set(admin.describe([("ip", 2, None)])) == {(("ip", "10.1.2.3"),)}
            set_quota(admin, {"user": "alice"}, producer_byte_rate=None)
            set_quota(admin, {"user": "alice"}, consumer_byte_rate=None)
            assert (("user", "alice"),) not in admin.describe()
            with pytest.raises(RuntimeError, match=r"^DescribeClientQuotas: 35 "):
                admin.describe([("group", 0, "g")])
        finally:
            admin.close()
    finally:
        broker.stop()


# -- the Kafka door ------------------------------------------------------------------------


def throttle_counter() -> tuple[list[int], Any]:
    seen: list[int] = []

    def on_throttle(event: Any) -> None:
        if event.throttle_time > 0:
            seen.append(int(event.throttle_time * 1000))

    return seen, on_throttle


def produce_all(bootstrap: str, topic: str, client_id: str) -> tuple[float, list[int]]:
    """``TOTAL`` bytes in 1000-byte records; (seconds to the last acknowledgement, the
    throttle times the client was told)."""
    throttles, on_throttle = throttle_counter()
    producer = Producer(
        {
            "bootstrap.servers": bootstrap,
            "client.id": client_id,
            "batch.size": 16384,  # many requests: a quota acts between them
            "linger.ms": 1,
            "throttle_cb": on_throttle,
        }
    )
    delivered: list[Any] = []
    started = time.monotonic()
    for i in range(TOTAL // len(VALUE)):
        while True:
            try:
                producer.produce(
                    topic, VALUE, key=b"%d" % i, on_delivery=lambda e, m: delivered.append(e)
                )
                break
            except BufferError:
                producer.poll(0.05)
        producer.poll(0)
    assert producer.flush(60) == 0
    elapsed = time.monotonic() - started
    producer.poll(0.5)  # throttle callbacks still queued
    assert delivered == [None] * (TOTAL // len(VALUE))
    return elapsed, throttles


def test_a_producer_over_its_byte_rate_is_slowed_to_it_and_told_the_throttle_time(
    quota_broker: BrokerProcess, admin: QuotaAdmin
) -> None:
    set_quota(admin, {"client-id": "slow-producer"}, producer_byte_rate=QUOTA)
    elapsed, throttles = produce_all(quota_broker.bootstrap, "quota-produce", "slow-producer")
    assert TOTAL / elapsed < 2.5 * QUOTA, f"{TOTAL / elapsed:.0f} B/s against {QUOTA} B/s"
    assert throttles, "the producer was never told a throttle time"
    # another client id, no quota: never throttled
    _elapsed, free_throttles = produce_all(quota_broker.bootstrap, "quota-produce", "free")
    assert free_throttles == []


def test_a_consumer_over_its_byte_rate_is_slowed_to_it_and_gets_every_record(
    quota_broker: BrokerProcess, admin: QuotaAdmin
) -> None:
    produce_all(quota_broker.bootstrap, "quota-fetch", "fetch-loader")
    set_quota(admin, {"client-id": "slow-consumer"}, consumer_byte_rate=QUOTA)
    throttles, on_throttle = throttle_counter()
    consumer = Consumer(
        {
            "bootstrap.servers": quota_broker.bootstrap,
            "client.id": "slow-consumer",
            "group.id": "quota-readers",
            "auto.offset.reset": "earliest",
            "enable.auto.commit": False,
            "throttle_cb": on_throttle,
        }
    )
    try:
        consumer.subscribe(["quota-fetch"])
        keys: list[bytes] = []
        first: float | None = None
        deadline = time.monotonic() + 60
        while len(keys) < TOTAL // len(VALUE) and time.monotonic() < deadline:
            for message in consumer.consume(500, 1.0):
                assert message.error() is None, message.error()
                first = first or time.monotonic()
                assert message.value() == VALUE
                keys.append(message.key())
        elapsed = time.monotonic() - (first or 0)
    finally:
        consumer.close()
    assert keys == [b"%d" % i for i in range(TOTAL // len(VALUE))]
    assert TOTAL / elapsed < 2.5 * QUOTA, f"{TOTAL / elapsed:.0f} B/s against {QUOTA} B/s"
    assert throttles, "the consumer was never told a throttle time"


def test_a_client_over_its_request_time_share_is_throttled(
    quota_broker: BrokerProcess, admin: QuotaAdmin
) -> None:
    from kafka.protocol.metadata import MetadataRequest

    set_quota(admin, {"client-id": "busy"}, request_percentage=1)  # 10 ms a second
    busy = QuotaAdmin(quota_broker.bootstrap, client_id="busy")
    try:
        throttles = []
        for _ in range(300):
            response = busy._send(MetadataRequest(topics=None))
            throttles.append(response.throttle_time_ms)
            if response.throttle_time_ms:
                break
    finally:
        busy.close()
    assert any(throttles), "300 Metadata requests never went over 1 % of the loop"


# -- the other doors ------------------------------------------------------------------------


def test_an_mqtt_publisher_over_its_byte_rate_is_slowed_by_back_pressure(
    quota_broker: BrokerProcess, admin: QuotaAdmin
) -> None:
    set_quota(admin, {"client-id": "slow-mqtt"}, producer_byte_rate=QUOTA)
    client = MqttTestClient(quota_broker.mqtt_port, "slow-mqtt")
    try:
        started = time.monotonic()
        infos = [
            client.client.publish("quota-mqtt/dev", VALUE, qos=1) for _ in range(TOTAL // 1000)
        ]
        for info in infos:
            info.wait_for_publish(60)
            assert info.is_published()
        elapsed = time.monotonic() - started
    finally:
        client.close()
    assert TOTAL / elapsed < 2.5 * QUOTA, f"{TOTAL / elapsed:.0f} B/s against {QUOTA} B/s"


def test_an_amqp_publisher_over_its_byte_rate_is_slowed_by_back_pressure(
    quota_broker: BrokerProcess, admin: QuotaAdmin
) -> None:
    set_quota(admin, {"client-id": "slow-amqp"}, producer_byte_rate=QUOTA)
    params = pika.ConnectionParameters(
        "127.0.0.1",
        quota_broker.amqp_port,
        client_properties={"connection_name": "slow-amqp"},
        heartbeat=30,
    )
    connection = pika.BlockingConnection(params)
    try:
        channel = connection.channel()
        channel.queue_declare("quota-amqp")
        channel.confirm_delivery()
        started = time.monotonic()
        for _ in range(TOTAL // len(VALUE)):
            channel.basic_publish("", "quota-amqp", VALUE)
        elapsed = time.monotonic() - started
    finally:
        connection.close()
    assert TOTAL / elapsed < 2.5 * QUOTA, f"{TOTAL / elapsed:.0f} B/s against {QUOTA} B/s"


def test_an_mqtt_subscriber_over_its_byte_rate_gets_every_message_more_slowly(
    quota_broker: BrokerProcess, admin: QuotaAdmin
) -> None:
    set_quota(admin, {"client-id": "slow-subscriber"}, consumer_byte_rate=QUOTA)
    count = TOTAL // len(VALUE)
    subscriber = MqttTestClient(quota_broker.mqtt_port, "slow-subscriber")
    publisher = MqttTestClient(quota_broker.mqtt_port, "free-publisher")
    try:
        subscriber.subscribe("quota-sub/#", qos=1)
        infos = [publisher.client.publish(f"quota-sub/{i}", VALUE, qos=1) for i in range(count)]
        for info in infos:
            info.wait_for_publish(60)
        first = subscriber.receive(1, 30)
        started = time.monotonic()
        rest = subscriber.receive(count - 1, 60)
        elapsed = time.monotonic() - started
    finally:
        publisher.close()
        subscriber.close()
    got = first + rest
    assert sorted(int(m.topic.split("/")[1]) for m in got) == list(range(count))
    assert all(m.payload == VALUE for m in got)
    rate = (count - 1) * len(VALUE) / elapsed
    assert rate < 2.5 * QUOTA, f"{rate:.0f} B/s against {QUOTA} B/s"


def test_an_amqp_consumer_over_its_byte_rate_gets_every_message_more_slowly(
    quota_broker: BrokerProcess, admin: QuotaAdmin
) -> None:
    set_quota(admin, {"client-id": "slow-amqp-consumer"}, consumer_byte_rate=QUOTA)
    count = TOTAL // len(VALUE)
    loader = pika.BlockingConnection(pika.ConnectionParameters("127.0.0.1", quota_broker.amqp_port))
    try:
        channel = loader.channel()
        channel.queue_declare("quota-amqp-out")
        channel.confirm_delivery()
        for i in range(count):
            channel.basic_publish(
                "", "quota-amqp-out", VALUE, pika.BasicProperties(message_id=str(i))
            )
    finally:
        loader.close()
    params = pika.ConnectionParameters(
        "127.0.0.1",
        quota_broker.amqp_port,
        client_properties={"connection_name": "slow-amqp-consumer"},
        heartbeat=30,
    )
    connection = pika.BlockingConnection(params)
    ids: list[str] = []
    try:
        channel = connection.channel()
        channel.basic_qos(prefetch_count=100)
        started: float | None = None
        for method, properties, body in channel.consume("quota-amqp-out", inactivity_timeout=30):
            assert method is not None, f"no message for 30 s after {len(ids)}"
            started = started or time.monotonic()
            assert body == VALUE
            ids.append(properties.message_id)
            channel.basic_ack(method.delivery_tag)
            if len(ids) == count:
                break
        elapsed = time.monotonic() - (started or 0)
        channel.cancel()
    finally:
        connection.close()
    assert ids == [str(i) for i in range(count)]
    rate = (count - 1) * len(VALUE) / elapsed
    assert rate < 2.5 * QUOTA, f"{rate:.0f} B/s against {QUOTA} B/s"


def test_http_produce_over_the_users_byte_rate_is_answered_more_slowly(
    quota_broker: BrokerProcess, admin: QuotaAdmin
) -> None:
    # HTTP names no client id: its quotas are a user's (here the unauthenticated one's)
    set_quota(admin, {"user": "ANONYMOUS"}, producer_byte_rate=QUOTA)
    try:
        records = {"records": [{"value": VALUE.decode()} for _ in range(50)]}
        sent = 0
        with httpx.Client(base_url=quota_broker.http_url, timeout=60) as http:
            started = time.monotonic()
            while sent < TOTAL:
                response = http.post(
                    "/topics/quota-http",
                    json=records,
                    headers={"Content-Type": "application/vnd.kafka.json.v2+json"},
                )
                assert response.status_code == 200, response.text
                sent += len(response.request.content)
            elapsed = time.monotonic() - started
    finally:
        set_quota(admin, {"user": "ANONYMOUS"}, producer_byte_rate=None)
    assert sent / elapsed < 2.5 * QUOTA, f"{sent / elapsed:.0f} B/s against {QUOTA} B/s"


def test_an_sse_stream_over_the_users_fetch_rate_is_slowed_and_gets_every_record(
    quota_broker: BrokerProcess, admin: QuotaAdmin
) -> None:
    count = TOTAL // len(VALUE)
    producer = Producer({"bootstrap.servers": quota_broker.bootstrap, "linger.ms": 5})
    for i in range(count):
        producer.produce("quota-sse", value=VALUE, key=str(i).encode())
    assert producer.flush(30) == 0
    set_quota(admin, {"user": "ANONYMOUS"}, consumer_byte_rate=QUOTA)
    keys: list[str] = []
    try:
        with httpx.Client(base_url=quota_broker.http_url, timeout=60) as http:
            params = {"from": "earliest", "format": "binary"}
            with http.stream("GET", "/topics/quota-sse/stream", params=params) as response:
                started = time.monotonic()
                for line in response.iter_lines():
                    if line.startswith("data: "):
                        keys.append(base64.b64decode(json.loads(line[6:])["key"]).decode())
                        if len(keys) == count:
                            break
                    assert time.monotonic() - started < 60, f"only {len(keys)} of {count}"
                elapsed = time.monotonic() - started
    finally:
        set_quota(admin, {"user": "ANONYMOUS"}, consumer_byte_rate=None)
    assert keys == [str(i) for i in range(count)]
    rate = count * len(VALUE) / elapsed
    assert rate < 2.5 * QUOTA, f"{rate:.0f} B/s against {QUOTA} B/s"


# -- connection rates -----------------------------------------------------------------------

KAFKA_API_VERSIONS = struct.pack(">ihhih", 10, 18, 0, 1, -1)  # ApiVersions v0, null client
MQTT_CONNECT = bytes([0x10, 12, 0, 4]) + b"MQTT" + bytes([4, 2, 0, 60, 0, 0])
AMQP_HEADER = b"AMQP\x00\x00\x09\x01"
HTTP_GET = b"GET /topics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"


def probe(port: int, hello: bytes) -> bool:
    """Connect from ``FLOOD_HOST`` and say hello: True when the broker answers, False when
    it closes the connection unanswered."""
    with socket.create_connection(("127.0.0.1", port), 10, (FLOOD_HOST, 0)) as sock:
        sock.sendall(hello)
        try:
            return bool(sock.recv(1))
        except ConnectionResetError:
            return False


def flood(ports: dict[str, tuple[int, bytes]], per_door: int) -> dict[str, int]:
    """``per_door`` connections to each door at once from ``FLOOD_HOST``: how many each
    door answered."""
    answered = dict.fromkeys(ports, 0)
    lock = threading.Lock()

    def one(door: str) -> None:
        port, hello = ports[door]
        if probe(port, hello):
            with lock:
                answered[door] += 1

    threads = [threading.Thread(target=one, args=(d,)) for d in ports for _ in range(per_door)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert not any(t.is_alive() for t in threads)
    return answered


def test_a_connection_flood_from_one_address_is_refused_on_every_door_and_others_are_served(
    quota_broker: BrokerProcess, admin: QuotaAdmin
) -> None:
    b = quota_broker
    ports = {
        "kafka": (b.kafka_port, KAFKA_API_VERSIONS),
        "http": (b.http_port, HTTP_GET),
        "mqtt": (b.mqtt_port, MQTT_CONNECT),
        "amqp": (b.amqp_port, AMQP_HEADER),
    }
    per_door = 10
    assert flood(ports, per_door) == dict.fromkeys(ports, per_door)  # no limit yet
    set_quota(admin, {"ip": FLOOD_HOST}, connection_creation_rate=2)
    try:
        answered = flood(ports, per_door)
        # 2 a second, measured over at least 1 s: a handful of the 40 at most
        assert sum(answered.values()) <= 8, answered
        # meanwhile every door serves other addresses
        producer = Producer({"bootstrap.servers": b.bootstrap})
        producer.produce("quota-others", b"still served")
        assert producer.flush(30) == 0
        assert httpx.get(f"{b.http_url}/topics", timeout=30).status_code == 200
        MqttTestClient(b.mqtt_port, "other-address").close()
        pika.BlockingConnection(pika.ConnectionParameters("127.0.0.1", b.amqp_port)).close()
    finally:
        set_quota(admin, {"ip": FLOOD_HOST}, connection_creation_rate=None)
    with contextlib.suppress(AssertionError):
        wait_until("the log names the refused address", lambda: FLOOD_HOST in b.log_text(), 5)
    assert "over its connection creation rate" in b.log_text()
