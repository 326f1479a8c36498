"""Memory one client can take is bounded: a Fetch of everything, half-sent huge requests.

Each test watches the broker process's resident memory (``VmRSS``) stay under a stated bound
while the client misbehaves, and checks that another client is served meanwhile.
"""

from __future__ import annotations

import os
import socket
import struct
import threading
import time
from collections.abc import Iterator

import pytest
from confluent_kafka import Consumer, KafkaError, KafkaException, Producer, TopicPartition

from bayou.protocol.kafka import RequestHeader, decode_response, encode_request
from bayou.protocol.kafka import messages as m
from bayou.protocol.kafka import records as R
from tests.integration.test_confluent_kafka import create_topic
from tests.support.broker import BrokerProcess
from tests.support.kafka import unique_topic
from tests.support.mqtt import MqttTestClient
from tests.support.raw_kafka import RawKafka
from tests.support.wait import wait_until

MB = 1024 * 1024
FETCH_MAX_BYTES = 16 * 1024 * 1024  # Bayou's default fetch.max.bytes (Kafka's is 55 MiB)


def rss_mb(pid: int) -> float:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    raise AssertionError("no VmRSS")


class RssWatch:
    """Samples a process's RSS every 20 ms in a thread; ``peak`` is the largest seen."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.peak = rss_mb(pid)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> RssWatch:
        self._thread.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self._stop.set()
        self._thread.join(5)

    def _run(self) -> None:
        while not self._stop.wait(0.02):
            self.peak = max(self.peak, rss_mb(self.pid))


def round_trip(bootstrap: str, topic: str, count: int = 20) -> None:
    """A real client produces and reads back ``count`` messages: the broker is serving."""
    producer = Producer({"bootstrap.servers": bootstrap, "linger.ms": 0})
    sent = [f"m{i}".encode() for i in range(count)]
    for value in sent:
        producer.produce(topic, value, partition=0)
    assert producer.flush(20) == 0
    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": unique_topic("g"),
            "enable.partition.eof": True,
        }
    )
    consumer.assign([TopicPartition(topic, 0, 0)])
    got: list[bytes] = []
    deadline = time.monotonic() + 20
    try:
        while time.monotonic() < deadline and len(got) < count:
            msg = consumer.poll(0.5)
            if msg is None or (msg.error() and msg.error().code() == KafkaError._PARTITION_EOF):
                continue
            if msg.error():
                raise KafkaException(msg.error())
            got.append(msg.value())
    finally:
        consumer.close()
    assert got == sent


# --------------------------------------------------------------------------- Fetch


@pytest.fixture(scope="module")
def fetch_broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[BrokerProcess]:
    proc = BrokerProcess(tmp_path_factory.mktemp("fetch-memory") / "data", doors=()).start()
    try:
        yield proc
    finally:
        proc.kill()


def fill_partition(bootstrap: str, topic: str, total: int) -> int:
    """Produce ``total`` bytes as 1 MB batches (raw Produce, pipelined); returns batches."""
    value = os.urandom(MB - 200)  # incompressible, under max.message.bytes
    batch = R.build_batch([R.Record(int(time.time() * 1000), b"k", value)])
    count = total // len(batch)
    request = m.ProduceRequest(
        acks=1,
        timeout_ms=30_000,
        topic_data=[
            m.ProduceRequestTopicProduceData(
                name=topic,
                partition_data=[m.ProduceRequestPartitionProduceData(index=0, records=batch)],
            )
        ],
    )
    with RawKafka(bootstrap) as client:
        for start in range(0, count, 8):
            n = min(8, count - start)
            for _ in range(n):
                client.send(0, 7, request)
            for _ in range(n):
                response = client.receive(0, 7)
                assert response.responses[0].partition_responses[0].error_code == 0
    return count


def test_a_fetch_of_everything_is_capped_and_streamed(fetch_broker: BrokerProcess) -> None:
    bootstrap = fetch_broker.bootstrap
    big, other = unique_topic("big"), unique_topic("other")
    create_topic(bootstrap, big, 1)
    create_topic(bootstrap, other, 1)
    batches = fill_partition(bootstrap, big, 120 * MB)
    round_trip(bootstrap, other)  # warm up the other client's path
    baseline = rss_mb(fetch_broker.pid)

    request = m.FetchRequest(
        replica_id=-1,
        max_wait_ms=0,
        min_bytes=1,
        max_bytes=2**31 - 1,
        isolation_level=0,
        topics=[
            m.FetchRequestFetchTopic(
                topic=big,
                partitions=[
                    m.FetchRequestFetchPartition(
                        partition=0, fetch_offset=0, partition_max_bytes=2**31 - 1
                    )
                ],
            )
        ],
    )
    host, port = bootstrap.split(":")
    with (
        socket.create_connection((host, int(port)), timeout=30) as sock,
        RssWatch(fetch_broker.pid) as watch,
    ):
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 256 * 1024)
        sock.sendall(encode_request(RequestHeader(1, 11, 1, "greedy"), request))
        # The greedy client does not read for a while; another client is served meanwhile.
        time.sleep(1.0)
        round_trip(bootstrap, other)
        frame = bytearray()
        size = struct.unpack(">i", sock.recv(4, socket.MSG_WAITALL))[0]
        while len(frame) < size:
            chunk = sock.recv(min(4 * MB, size - len(frame)))
            assert chunk, "connection closed mid-response"
            frame += chunk
            if len(frame) < 8 * MB:
                time.sleep(0.05)  # slowly at first: the broker must not read ahead
    growth = watch.peak - baseline
    print(
        f"broker RSS: baseline {baseline:.0f} MB, peak {watch.peak:.0f} MB while a client "
        f"fetched {size / MB:.0f} MB with max_bytes 2^31-1 from {batches} MB"
    )
    assert growth < 40, f"broker RSS grew {growth:.0f} MB during one Fetch"

    _correlation, response = decode_response(1, 11, memoryview(frame))
    part = response.responses[0].partitions[0]
    assert part.error_code == 0 and part.high_watermark == batches
    records = bytes(part.records)
    headers = [h for _pos, h in R.iter_batches(records)]
    assert FETCH_MAX_BYTES - MB < len(records) <= FETCH_MAX_BYTES  # fetch.max.bytes
    assert sum(h.size for h in headers) == len(records)  # whole batches only
    assert [h.base_offset for h in headers] == list(range(len(headers)))
    assert R.validate_batches(records)


def test_partition_max_bytes_and_the_first_batch_rule(fetch_broker: BrokerProcess) -> None:
    """KIP-74: the first partition's first batch comes whole even over the limits; a later
    partition's batches must fit its own limit."""
    bootstrap = fetch_broker.bootstrap
    topic = unique_topic("kip74")
    create_topic(bootstrap, topic, 2)
    big = R.build_batch([R.Record(1, None, b"x" * 50_000)])
    for partition in (0, 1):
        request = m.ProduceRequest(
            acks=1,
            timeout_ms=10_000,
            topic_data=[
                m.ProduceRequestTopicProduceData(
                    name=topic,
                    partition_data=[
                        m.ProduceRequestPartitionProduceData(index=partition, records=big)
                    ],
                )
            ],
        )
        with RawKafka(bootstrap) as client:
            assert client.call(0, 7, request).responses[0].partition_responses[0].error_code == 0
    request = m.FetchRequest(
        replica_id=-1,
        max_wait_ms=0,
        min_bytes=1,
        max_bytes=1 << 20,
        topics=[
            m.FetchRequestFetchTopic(
                topic=topic,
                partitions=[
                    m.FetchRequestFetchPartition(
                        partition=p, fetch_offset=0, partition_max_bytes=1000
                    )
                    for p in (0, 1)
                ],
            )
        ],
    )
    with RawKafka(bootstrap) as client:
        response = client.call(1, 11, request)
    first, second = response.responses[0].partitions
    assert len(first.records) == len(big)  # over partition_max_bytes, but the first
    assert len(second.records or b"") == 0  # over its partition_max_bytes: nothing this time


# --------------------------------------------------------------------------- request bytes


BUDGET = 32 * MB


@pytest.fixture(scope="module")
def budget_broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[BrokerProcess]:
    proc = BrokerProcess(
        tmp_path_factory.mktemp("budget") / "data",
        env={"BAYOU_QUEUED_MAX_REQUEST_BYTES": str(BUDGET)},
        doors=(),
    ).start()
    try:
        yield proc
    finally:
        proc.kill()


def push_half_frame(
    bootstrap: str, declared: int, send: int, done: threading.Event, sent: list[int]
) -> socket.socket:
    """Connect and send the first ``send`` bytes of a ``declared``-byte frame, as far as the
    broker reads them (non-blocking sends; gives up after 1 s without progress)."""
    host, port = bootstrap.split(":")
    sock = socket.create_connection((host, int(port)), timeout=10)
    sock.sendall(struct.pack(">i", declared))
    sock.setblocking(False)
    chunk = b"\0" * (256 * 1024)
    total, last_progress = 0, time.monotonic()
    while total < send and time.monotonic() - last_progress < 1.0 and not done.is_set():
        try:
            n = sock.send(chunk[: send - total])
        except BlockingIOError:
            time.sleep(0.01)
            continue
        total += n
        last_progress = time.monotonic()
    sent.append(total)
    return sock


def test_half_sent_huge_frames_stay_within_the_budget(budget_broker: BrokerProcess) -> None:
    bootstrap = budget_broker.bootstrap
    topic = unique_topic("served")
    create_topic(bootstrap, topic, 1)
    round_trip(bootstrap, topic)
    baseline = rss_mb(budget_broker.pid)
    done = threading.Event()
    sent: list[int] = []
    sockets: list[socket.socket] = []
    # Six clients each promise a 24 MB frame and send 20 MB of it, then stall.
    threads = [
        threading.Thread(
            target=lambda: sockets.append(push_half_frame(bootstrap, 24 * MB, 20 * MB, done, sent))
        )
        for _ in range(6)
    ]
    try:
        with RssWatch(budget_broker.pid) as watch:
            for t in threads:
                t.start()
            for t in threads:
                t.join(60)
            round_trip(bootstrap, topic)  # small requests from another client are served
        growth = watch.peak - baseline
        print(
            f"broker RSS: baseline {baseline:.0f} MB, peak {watch.peak:.0f} MB with six "
            f"half-sent 24 MB frames ({sum(sent) / MB:.0f} MB sent into socket buffers "
            f"and the broker), budget {BUDGET // MB} MB"
        )
        assert growth < BUDGET / MB + 24, f"broker RSS grew {growth:.0f} MB"
    finally:
        done.set()
        for s in sockets:
            s.close()


@pytest.fixture(scope="module")
def stall_broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[BrokerProcess]:
    proc = BrokerProcess(
        tmp_path_factory.mktemp("stall") / "data",
        env={"BAYOU_REQUEST_STALL_TIMEOUT_MS": "1000"},
    ).start()
    try:
        yield proc
    finally:
        proc.kill()


def closed_by_peer(sock: socket.socket, within: float) -> bool:
    sock.settimeout(within)
    try:
        while True:
            if not sock.recv(65536):
                return True
    except TimeoutError:
        return False
    except ConnectionResetError:
        return True


def api_versions_frame() -> bytes:
    return encode_request(
        RequestHeader(18, 3, 7, "slow"),
        m.ApiVersionsRequest(client_software_name="t", client_software_version="1"),
    )


def test_a_stalled_frame_is_closed_but_a_slow_one_is_served(stall_broker: BrokerProcess) -> None:
    host, port = stall_broker.bootstrap.split(":")
    frame = api_versions_frame()
    with (
        socket.create_connection((host, int(port)), timeout=10) as stalled,
        socket.create_connection((host, int(port)), timeout=10) as slow,
    ):
        stalled.sendall(frame[:10])  # half a request, then nothing
        for i in range(len(frame)):  # the whole request, a byte every 150 ms
            slow.sendall(frame[i : i + 1])
            time.sleep(0.15 if i < 20 else 0)
        assert closed_by_peer(stalled, within=8)
        size = struct.unpack(">i", slow.recv(4, socket.MSG_WAITALL))[0]
        body = slow.recv(size, socket.MSG_WAITALL)
        assert struct.unpack_from(">ih", body) == (7, 0)  # answered, no error
    wait_until("the stall logged", lambda: "made no progress" in stall_broker.log_text(), 10)


def test_stalled_requests_are_closed_at_every_door(stall_broker: BrokerProcess) -> None:
    """The same budget and stall rule for MQTT packets, AMQP frames and HTTP bodies."""
    host = stall_broker.host
    connect = b"\x00\x04MQTT\x04\x02\x00\x3c\x00\x03abc"  # CONNECT body, client "abc"
    half_mqtt = bytes([0x10, len(connect)]) + connect[:6]
    half_amqp = b"AMQP\x00\x00\x09\x01" + b"\x01\x00\x00\x00\x00\x01\x00"  # a frame begun
    half_http = (
        b"POST /topics/stalled HTTP/1.1\r\nHost: x\r\n"
        b"Content-Type: application/vnd.kafka.json.v2+json\r\n"
        b'Content-Length: 100000\r\n\r\n{"records": ['
    )
    doors = [
        ("mqtt", stall_broker.mqtt_port, half_mqtt),
        ("amqp", stall_broker.amqp_port, half_amqp),
        ("http", stall_broker.http_port, half_http),
    ]
    sockets = []
    try:
        for _door, port, half in doors:
            sock = socket.create_connection((host, port), timeout=10)
            sock.sendall(half)
            sockets.append(sock)
        for (door, _port, _half), sock in zip(doors, sockets, strict=True):
            sock.settimeout(8)
            data = b""
            try:
                while chunk := sock.recv(65536):
                    data += chunk
            except TimeoutError:
                pytest.fail(f"{door}: a stalled request kept its connection")
            except ConnectionResetError:
                pass
            if door == "http":
                assert data.startswith(b"HTTP/1.1 408"), data[:100]
    finally:
        for sock in sockets:
            sock.close()


@pytest.fixture(scope="module")
def mqtt_broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[BrokerProcess]:
    proc = BrokerProcess(tmp_path_factory.mktemp("mqtt-memory") / "data").start()
    try:
        yield proc
    finally:
        proc.kill()


def mqtt_string(text: str) -> bytes:
    data = text.encode()
    return len(data).to_bytes(2, "big") + data


def test_a_subscriber_that_stops_reading_holds_a_bounded_queue(
    mqtt_broker: BrokerProcess,
) -> None:
    """A QoS 0 subscriber that stops reading is queued at most 1000 messages; the rest waits
    in the log.  Small records published many at a time (the tailer offers them to it as runs)
    do not make its queue hold more."""
    topic = unique_topic("mqttslow")
    bootstrap = mqtt_broker.bootstrap
    create_topic(bootstrap, topic, 1)
    port = mqtt_broker.mqtt_port
    total, size = 48_000, 1024
    fast = MqttTestClient(port, f"{topic}-fast")
    slow = socket.socket()
    slow.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)  # fills at once
    try:
        fast.subscribe(f"{topic}/#", 0)
        slow.settimeout(10)
        slow.connect(("127.0.0.1", port))
        connect = b"\x00\x04MQTT\x04\x02\x00\x3c" + mqtt_string(f"{topic}-slow")
        subscribe = b"\x00\x01" + mqtt_string(f"{topic}/#") + b"\x00"
        slow.sendall(
            bytes([0x10, len(connect)]) + connect + bytes([0x82, len(subscribe)]) + subscribe
        )
        got = b""
        while len(got) < 9:  # CONNACK, SUBACK; then it reads no more
            got += slow.recv(9 - len(got))
        assert got[0] == 0x20 and got[4] == 0x90, got
        producer = Producer({"bootstrap.servers": bootstrap, "linger.ms": 20})
        producer.produce(topic, b"first", f"{topic}/x".encode())
        producer.flush(30)
        assert [m.payload for m in fast.receive(1)] == [b"first"]
        baseline = rss_mb(mqtt_broker.pid)
        value = os.urandom(size)
        with RssWatch(mqtt_broker.pid) as watch:
            for i in range(total):
                producer.produce(topic, value, f"{topic}/x".encode())
                if i % 5000 == 0:
                    producer.poll(0)
            assert producer.flush(60) == 0
            # the fast subscriber has everything: the tailer offered it all to both
            assert len(fast.receive(total, timeout=120)) == total
        grown = watch.peak - baseline
        assert grown < 30, f"broker RSS grew {grown:.0f} MB ({total * size / MB:.0f} MB sent)"
    finally:
        slow.close()
        fast.close()
