"""``/metrics`` on the HTTP port, parsed with prometheus_client's own parser and checked
against what the test itself produced and consumed through every door; and the structured
logs of ``--log-format json`` (the same broker logs that way)."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest
from confluent_kafka import Consumer, Producer, TopicPartition
from confluent_kafka.admin import AdminClient
from paho.mqtt.enums import CallbackAPIVersion
from prometheus_client.parser import text_string_to_metric_families

from tests.integration.test_confluent_kafka import create_topic
from tests.support.amqp import connect
from tests.support.broker import BrokerProcess
from tests.support.http import JSON_V2, client
from tests.support.kafka import unique_topic
from tests.support.wait import wait_until

DASHBOARD = Path(__file__).parents[2] / "tools" / "grafana" / "bayou.json"

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


@pytest.fixture(scope="module")
def broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[BrokerProcess]:
    proc = BrokerProcess(
        tmp_path_factory.mktemp("metrics") / "data", extra_args=["--log-format", "json"]
    ).start()
    try:
        yield proc
    finally:
        proc.kill()


def scrape(broker: BrokerProcess) -> Samples:
    with client(broker.http_url) as http:
        r = http.get("/metrics")
    assert r.status_code == 200, r.text
    assert r.headers["content-type"].startswith("text/plain; version=0.0.4")
    samples: Samples = {}
    for family in text_string_to_metric_families(r.text):
        for s in family.samples:
            samples[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return samples


def value(samples: Samples, name: str, **labels: str) -> float | None:
    return samples.get((name, tuple(sorted(labels.items()))))


def produce(broker: BrokerProcess, topic: str, count: int, size: int, partitions: int) -> int:
    """``count`` records of ``size`` bytes round-robin over the partitions; their value bytes."""
    producer = Producer({"bootstrap.servers": broker.bootstrap, "linger.ms": 5})
    for i in range(count):
        producer.produce(topic, value=b"v" * size, key=b"k%d" % i, partition=i % partitions)
    assert producer.flush(15) == 0
    return count * size


def test_traffic_offsets_and_lag_match_what_was_done(broker: BrokerProcess) -> None:
    topic = unique_topic("metrics")
    create_topic(broker.bootstrap, topic, 2)
    produce(broker, topic, 40, 100, 2)
    # a group that read 15 records of partition 0 and 5 of partition 1, then left: no live
    # member, its lag still reported
    group = unique_topic("g")
    consumer = Consumer(
        {
            "bootstrap.servers": broker.bootstrap,
            "group.id": group,
            "enable.auto.commit": False,
        }
    )
    consumer.commit(
        offsets=[TopicPartition(topic, 0, 15), TopicPartition(topic, 1, 5)], asynchronous=False
    )
    consumer.close()
    samples = scrape(broker)
    assert (
        value(
            samples, "kafka_server_brokertopicmetrics_messagesin_total", topic=topic, door="kafka"
        )
        == 40
    )
    size = value(
        samples, "kafka_server_brokertopicmetrics_bytesin_total", topic=topic, door="kafka"
    )
    assert size is not None and size > 40 * 100  # batch bytes: values, keys and framing
    for p in ("0", "1"):
        assert value(samples, "kafka_log_log_logendoffset", topic=topic, partition=p) == 20
        assert value(samples, "kafka_log_log_logstartoffset", topic=topic, partition=p) == 0
        assert value(samples, "kafka_log_log_numlogsegments", topic=topic, partition=p) == 1
    log_sizes = sum(
        value(samples, "kafka_log_log_size", topic=topic, partition=p) or 0 for p in ("0", "1")
    )
    assert log_sizes == size
    lag = {
        p: value(samples, "kafka_consumergroup_lag", group=group, topic=topic, partition=p)
        for p in ("0", "1")
    }
    assert lag == {"0": 5, "1": 15}
    assert (
        value(
            samples, "kafka_consumergroup_current_offset", group=group, topic=topic, partition="0"
        )
        == 15
    )
    assert value(samples, "kafka_consumergroup_lag_sum", group=group) == 20
    assert value(samples, "kafka_consumergroup_members", group=group) == 0
    produced = value(
        samples, "kafka_network_request_duration_seconds_count", door="kafka", request="Produce"
    )
    assert produced is not None and produced >= 1
    assert (
        value(
            samples,
            "kafka_network_request_duration_seconds_bucket",
            door="kafka",
            request="Produce",
            le="+Inf",
        )
        == produced
    )


def test_kafka_reads_count_bytes_and_messages_out(broker: BrokerProcess) -> None:
    topic = unique_topic("out")
    create_topic(broker.bootstrap, topic, 1)
    produce(broker, topic, 30, 50, 1)
    consumer = Consumer(
        {
            "bootstrap.servers": broker.bootstrap,
            "group.id": unique_topic("reader"),
            "auto.offset.reset": "earliest",
        }
    )
    consumer.subscribe([topic])
    seen = 0
    try:
        for _ in range(200):
            msg = consumer.poll(0.2)
            if msg is not None and msg.error() is None:
                seen += 1
            if seen == 30:
                break
        assert seen == 30

        # messages out are the offsets the connection's fetches moved past: known once it
        # fetches again after the records (it keeps fetching while it polls)
        def counted() -> bool:
            consumer.poll(0.1)
            s = scrape(broker)
            return (
                value(
                    s,
                    "kafka_server_brokertopicmetrics_messagesout_total",
                    topic=topic,
                    door="kafka",
                )
                == 30
            )

        wait_until("30 messages out counted", counted, timeout=20)
        samples = scrape(broker)
        assert (
            value(samples, "kafka_server_socketservermetrics_connection_count", door="kafka") >= 1
        )
    finally:
        consumer.close()
    bytes_out = value(
        samples, "kafka_server_brokertopicmetrics_bytesout_total", topic=topic, door="kafka"
    )
    bytes_in = value(
        samples, "kafka_server_brokertopicmetrics_bytesin_total", topic=topic, door="kafka"
    )
    assert bytes_out == bytes_in  # every batch sent once


def test_http_mqtt_and_amqp_doors_count_their_traffic(broker: BrokerProcess) -> None:
    http_topic = unique_topic("viahttp")
    with client(broker.http_url) as http:
        r = http.post(
            f"/topics/{http_topic}",
            json={"records": [{"value": {"n": i}} for i in range(7)]},
            headers={"Content-Type": JSON_V2},
        )
        assert r.status_code == 200, r.text
    mqtt_topic = unique_topic("viamqtt")
    done: list[int] = []
    paho = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="metrics-test")
    paho.connect(broker.host, broker.mqtt_port)
    paho.loop_start()
    try:
        for i in range(5):
            paho.publish(f"{mqtt_topic}/dev", b"m%d" % i, qos=1).wait_for_publish(10)
            done.append(i)
    finally:
        paho.loop_stop()
        paho.disconnect()
    queue = unique_topic("viaamqp")
    conn = connect(broker)
    try:
        channel = conn.channel()
        channel.queue_declare(queue)
        channel.confirm_delivery()
        for i in range(3):
            channel.basic_publish("", queue, b"a%d" % i)
    finally:
        conn.close()
    samples = scrape(broker)
    name = "kafka_server_brokertopicmetrics_messagesin_total"
    assert value(samples, name, topic=http_topic, door="http") == 7
    assert value(samples, name, topic=mqtt_topic, door="mqtt") == 5
    assert value(samples, name, topic=queue, door="amqp") == 3
    assert value(samples, name, topic=http_topic, door="kafka") is None
    timed = value(
        samples,
        "kafka_network_request_duration_seconds_count",
        door="http",
        request="POST /topics/{topic}",
    )
    assert timed == 1


def test_fsync_latency_is_observed(broker: BrokerProcess) -> None:
    topic = unique_topic("fsync")
    create_topic(broker.bootstrap, topic, 1, **{"flush.messages": "1"})
    before = value(scrape(broker), "bayou_log_fsync_duration_seconds_count") or 0
    produce(broker, topic, 5, 10, 1)
    after = value(scrape(broker), "bayou_log_fsync_duration_seconds_count") or 0
    assert after > before
    assert (value(scrape(broker), "bayou_event_loop_lag_seconds_count") or 0) > 0


def test_grafana_dashboard_queries_only_served_metrics(broker: BrokerProcess) -> None:
    with client(broker.http_url) as http:
        text = http.get("/metrics").text
    served: set[str] = set()
    for family in text_string_to_metric_families(text):
        served.add(family.name)
        served.update(s.name for s in family.samples)
        # a family without samples yet (no traffic on this broker) still names its series
        if family.type == "counter":
            served.add(family.name + "_total")
        elif family.type == "histogram":
            served.update(family.name + part for part in ("_bucket", "_count", "_sum"))
    dashboard = json.loads(DASHBOARD.read_text())
    queried = {
        name
        for expr in _expressions(dashboard)
        for name in re.findall(r"\b(?:kafka|bayou)_[a-z_]+", expr)
    }
    assert len(queried) >= 15
    assert queried <= served, sorted(queried - served)


def _expressions(node: object) -> Iterator[str]:
    if isinstance(node, dict):
        for key, item in node.items():
            if key == "expr" and isinstance(item, str):
                yield item
            else:
                yield from _expressions(item)
    elif isinstance(node, list):
        for item in node:
            yield from _expressions(item)


def test_logs_are_json_lines(broker: BrokerProcess) -> None:
    lines = [line for line in broker.log_text().splitlines() if line.strip()]
    assert lines
    started = None
    for line in lines:
        entry = json.loads(line)
        assert {"time", "level", "logger", "message"} <= set(entry)
        if entry["message"].startswith("Bayou listening"):
            started = entry
    assert started is not None and started["level"] == "INFO" and started["logger"] == "bayou"


def test_deleted_topic_series_go_away(broker: BrokerProcess) -> None:
    topic = unique_topic("gone")
    create_topic(broker.bootstrap, topic, 1)
    produce(broker, topic, 3, 10, 1)
    assert value(scrape(broker), "kafka_log_log_logendoffset", topic=topic, partition="0") == 3
    admin = AdminClient({"bootstrap.servers": broker.bootstrap})
    admin.delete_topics([topic])[topic].result(15)
    samples = scrape(broker)
    assert value(samples, "kafka_log_log_logendoffset", topic=topic, partition="0") is None
    assert (
        value(
            samples, "kafka_server_brokertopicmetrics_messagesin_total", topic=topic, door="kafka"
        )
        is None
    )


def test_share_fetches_count_messages_and_bytes_out(broker: BrokerProcess) -> None:
    from tests.integration.test_share_groups_librdkafka import consumer, setup_topic

    topic, group = unique_topic("shared"), unique_topic("sharers")
    setup_topic(broker, topic, group, 1, 12)
    member = consumer(broker, group, topic)
    try:
        seen = 0
        for _ in range(150):
            seen += sum(1 for msg in member.poll(0.2) or [] if msg.error() is None)
            if seen >= 12:
                break
        assert seen == 12
    finally:
        member.close()
    samples = scrape(broker)
    out = "kafka_server_brokertopicmetrics_messagesout_total"
    assert value(samples, out, topic=topic, door="kafka") == 12
    bytes_out = value(
        samples, "kafka_server_brokertopicmetrics_bytesout_total", topic=topic, door="kafka"
    )
    assert bytes_out == value(
        samples, "kafka_server_brokertopicmetrics_bytesin_total", topic=topic, door="kafka"
    )
