"""The console in a real browser (Debian's headless Chromium, driven by Playwright) against a
real broker: a topic created in the browser and written through Kafka shows up there, the
message browser filters by a JSON field and seeks by time, a group's offsets reset in the
browser are where a Kafka consumer resumes, and the overview's charts move while records
arrive.  Each test leaves a screenshot under ``test-artifacts/console/`` (not committed)."""

from __future__ import annotations

import csv
import io
import json
import os
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pika
import pytest
from confluent_kafka import Consumer, Producer, TopicPartition
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties as MqttProperties

from tests.integration.test_confluent_kafka import create_topic
from tests.support.amqp import connect as amqp_connect
from tests.support.broker import BrokerProcess
from tests.support.browser import CHROMIUM, chromium
from tests.support.http import client
from tests.support.kafka import unique_topic
from tests.support.mqtt import MqttTestClient
from tests.support.wait import wait_until

WAIT_MS = 20_000
ARTIFACTS = Path(
    os.environ.get("BAYOU_TEST_ARTIFACTS", Path(__file__).parents[2] / "test-artifacts")
)

pytestmark = pytest.mark.skipif(
    not Path(CHROMIUM).exists() and not os.environ.get("CI"),  # in CI, missing is a failure
    reason="Debian's chromium is installed by make test (scripts/install-test-deps.sh)",
)


@pytest.fixture(scope="module")
def broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[BrokerProcess]:
    proc = BrokerProcess(tmp_path_factory.mktemp("console") / "data").start()
    try:
        yield proc
    finally:
        proc.kill()


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    with chromium() as b:
        yield b


@pytest.fixture
def page(browser: Any, request: pytest.FixtureRequest) -> Iterator[Any]:
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    page = context.new_page()
    page.set_default_timeout(WAIT_MS)
    try:
        yield page
    finally:
        (ARTIFACTS / "console").mkdir(parents=True, exist_ok=True)
        page.screenshot(
            path=str(ARTIFACTS / "console" / f"{request.node.name}.png"), full_page=True
        )
        context.close()


def produce(broker: BrokerProcess, topic: str, values: list[Any], **kwargs: Any) -> None:
    producer = Producer({"bootstrap.servers": broker.bootstrap})
    for i, value in enumerate(values):
        extra = {k: v[i] if isinstance(v, list) else v for k, v in kwargs.items()}
        producer.produce(topic, key=f"k{i}".encode(), value=json.dumps(value).encode(), **extra)
    assert producer.flush(15) == 0


def cells(page: Any, selector: str) -> list[str]:
    return [text.strip() for text in page.locator(selector).all_inner_texts()]


def test_create_topic_in_browser_produce_through_kafka_and_see_it(
    broker: BrokerProcess, page: Any
) -> None:
    topic = unique_topic("made-in-browser")
    page.goto(f"{broker.http_url}/console/topics")
    page.get_by_text("Create a topic").click()
    page.get_by_label("Name", exact=True).fill(topic)
    page.get_by_label("Partitions", exact=True).fill("2")
    page.get_by_label("Configs").fill("retention.ms=86400000")
    page.get_by_role("button", name="Create", exact=True).click()
    page.wait_for_url(f"**/console/topics/{topic}")
    assert page.locator("h1").inner_text() == topic
    row = page.locator('#configs tr[data-config="retention.ms"] td')
    assert row.all_inner_texts() == ["retention.ms", "86400000", "topic"]

    produce(broker, topic, [{"n": i} for i in range(6)], partition=[i % 2 for i in range(6)])
    page.reload()
    ends = [row.locator("td").nth(2).inner_text() for row in page.locator("#partitions tr").all()]
    assert ends == ["3", "3"]
    page.get_by_role("link", name="Browse messages").click()
    page.wait_for_url(f"**/console/topics/{topic}/messages")
    assert sorted(json.loads(v)["n"] for v in cells(page, "#messages pre.value")) == list(range(6))

    # search in the topic list
    page.goto(f"{broker.http_url}/console/topics")
    page.get_by_label("Search topics").fill(topic[-12:])
    page.get_by_label("Search topics").press("Enter")
    assert cells(page, "#topics td a") == [topic]


def test_create_refusal_is_explained_beside_the_form(broker: BrokerProcess, page: Any) -> None:
    page.goto(f"{broker.http_url}/console/topics")
    page.get_by_text("Create a topic").click()
    page.get_by_label("Name", exact=True).fill("fine-name")
    page.get_by_label("Configs").fill("cleanup.policy=sideways")
    page.get_by_role("button", name="Create", exact=True).click()
    error = page.locator("#create-error")
    assert "cleanup.policy" in error.inner_text()
    assert (
        page.get_by_label("Name", exact=True).input_value() == "fine-name"
    )  # what was typed is kept


def test_message_browser_filters_by_json_field(broker: BrokerProcess, page: Any) -> None:
    topic = unique_topic("sensors")
    create_topic(broker.bootstrap, topic, 3)
    readings = [{"sensor": f"s{i % 4}", "temp": 15 + i} for i in range(20)]
    produce(broker, topic, readings, partition=[i % 3 for i in range(20)])
    page.goto(f"{broker.http_url}/console/topics/{topic}/messages")
    page.get_by_label("From", exact=True).select_option("beginning")
    page.get_by_label("Filter", exact=True).fill("$.temp >= 30")
    page.get_by_role("button", name="Show").click()
    page.wait_for_url("**filter=**")
    shown = [json.loads(v) for v in cells(page, "#messages pre.value")]
    assert sorted(r["temp"] for r in shown) == list(range(30, 35))
    assert "Scanned 20 record(s)" in page.locator("#scan-summary").inner_text()

    page.get_by_label("Filter", exact=True).fill('$.sensor == "s1"')
    page.get_by_role("button", name="Show").click()
    page.wait_for_load_state()
    assert sorted(json.loads(v)["temp"] for v in cells(page, "#messages pre.value")) == [
        16,
        20,
        24,
        28,
        32,
    ]

    page.get_by_label("Filter", exact=True).fill("$.temp >")
    page.get_by_role("button", name="Show").click()
    page.wait_for_load_state()
    assert "Filter:" in page.locator("#browse-error").inner_text()


def test_long_scan_shows_progress_and_cancel_stops_it(broker: BrokerProcess, page: Any) -> None:
    topic = unique_topic("haystack")
    create_topic(broker.bootstrap, topic, 1)
    total = 500_000  # seconds of scanning (most of its 5 s bound here)
    producer = Producer({"bootstrap.servers": broker.bootstrap, "linger.ms": 50})
    for start in range(0, total, 50_000):
        for i in range(start, start + 50_000):
            producer.produce(topic, value=b'{"n": %d}' % i)
        assert producer.flush(30) == 0
    page.goto(
        f"{broker.http_url}/console/topics/{topic}/messages"
        "?partition=0&start=beginning&filter=%24.n+%3C+0",  # $.n < 0: matches nothing
        wait_until="commit",
    )
    # the page streams while the broker scans: progress arrives, then grows
    page.wait_for_function("window.consoleScan && window.consoleScan.updates.length >= 2")
    first = page.evaluate("window.consoleScan.updates[0]")
    assert first["total"] == total and 0 < first["done"] < total
    assert first["bytes_bound"] == 64 * 1024 * 1024 and first["seconds_bound"] == 5
    assert page.locator("#scan-bar").get_attribute("max") == str(total)
    status = page.locator("#scan-status").inner_text()
    assert status.startswith("Scanning partition 0 (1 of 1)") and f"of {total:,} in all" in status
    page.get_by_role("button", name="Cancel scan").click()
    page.wait_for_function("window.consoleScan.finished")
    summary = page.locator("#scan-summary").inner_text()
    assert "Cancelled" in summary and "time bound" not in summary
    scanned = int(summary.split("Scanned ")[1].split(" ")[0])
    # the scan stopped where it was: no further progress, short of the end
    last = page.evaluate("window.consoleScan.updates.at(-1)")
    assert last["scanned"] <= scanned < total
    page.wait_for_load_state("load")
    assert page.evaluate("window.consoleScan.updates.at(-1)") == last
    assert cells(page, "#messages td") == ["No messages."]
    # and it is over in the broker: its id is no longer a running scan
    cancel_url = page.locator("#scan-cancel").get_attribute("data-cancel")
    with client(broker.http_url) as http:
        assert http.post(cancel_url).status_code == 404


def test_mqtt_and_amqp_properties_are_shown_by_name(broker: BrokerProcess, page: Any) -> None:
    topic = unique_topic("doors")
    create_topic(broker.bootstrap, topic, 1)
    client_id = unique_topic("sensor")
    publisher = MqttTestClient(broker.mqtt_port, client_id, version=5)
    try:
        props = MqttProperties(PacketTypes.PUBLISH)
        props.ContentType = "application/json"
        props.PayloadFormatIndicator = 1
        props.MessageExpiryInterval = 600
        props.ResponseTopic = f"{topic}/replies"
        props.CorrelationData = b"req-42"
        props.UserProperty = [("site", "north"), ("unit", "C")]
        publisher.publish(f"{topic}/room1", b'{"t": 21}', qos=1, retain=True, properties=props)
    finally:
        publisher.close()
    amqp = amqp_connect(broker)
    try:
        channel = amqp.channel()
        channel.confirm_delivery()
        channel.basic_publish(
            topic,  # the topic as an exchange
            "order-9",
            b"paid",
            pika.BasicProperties(
                content_type="text/plain",
                delivery_mode=2,
                correlation_id="c-9",
                reply_to="replies",
                message_id="m-9",
                timestamp=1_700_000_000,
                headers={"retries": 0, "source": "shop"},
            ),
        )
    finally:
        amqp.close()
    produce(broker, topic, [{"plain": True}])  # from Kafka: headers only

    page.goto(f"{broker.http_url}/console/topics/{topic}/messages?start=beginning")
    assert cells(page, "#messages td.offset") == ["0", "1", "2"]
    rows = page.locator("#messages tr.message")
    assert cells(page, "#messages .protocol") == [
        "MQTT: QoS 1, retain, content type application/json, payload format UTF-8, "
        f"message expiry 600 s, response topic {topic}/replies, correlation data req-42, "
        f"user properties site=north, unit=C, client id {client_id}",
        "AMQP: content-type text/plain, delivery-mode 2 (persistent), correlation-id c-9, "
        "reply-to replies, message-id m-9, timestamp 2023-11-14T22:13:20Z, "
        "headers retries=0, source=shop",
    ]
    assert rows.nth(0).locator(".protocol").get_attribute("data-protocol") == "MQTT"
    assert rows.nth(2).locator(".protocol").count() == 0
    # the headers they are stored as are one click away
    stored = rows.nth(1).locator("details")
    assert stored.locator("summary").inner_text() == "Stored as 9 header(s)"
    stored.locator("summary").click()
    assert "amqp-reply-to: replies" in stored.inner_text()


def test_message_browser_seeks_by_time(broker: BrokerProcess, page: Any) -> None:
    topic = unique_topic("incident")
    create_topic(broker.bootstrap, topic, 1)
    t0 = 1_700_000_000_000  # ms, one record a second from here
    produce(
        broker, topic, [{"i": i} for i in range(10)], timestamp=[t0 + i * 1000 for i in range(10)]
    )
    moment = datetime.fromtimestamp((t0 + 6000) / 1000, UTC).strftime("%Y-%m-%dT%H:%M:%S")
    page.goto(f"{broker.http_url}/console/topics/{topic}/messages")
    page.get_by_label("From", exact=True).select_option("time")
    page.get_by_label("Time (UTC)", exact=True).fill(moment)
    page.get_by_role("button", name="Show").click()
    page.wait_for_url("**start=time**")
    assert cells(page, "#messages td.offset") == ["6", "7", "8", "9"]


def test_reset_group_in_browser_and_consumer_resumes_there(
    broker: BrokerProcess, page: Any
) -> None:
    topic = unique_topic("resume")
    group = unique_topic("readers")
    create_topic(broker.bootstrap, topic, 1)
    produce(broker, topic, [{"i": i} for i in range(10)])
    config = {
        "bootstrap.servers": broker.bootstrap,
        "group.id": group,
        "auto.offset.reset": "earliest",
        "enable.auto.commit": False,
        "session.timeout.ms": 6000,
    }
    member = Consumer(config)
    member.subscribe([topic])
    try:
        seen = 0
        for _ in range(100):
            msg = member.poll(0.2)
            if msg is not None and msg.error() is None:
                seen += 1
            if seen == 10:
                break
        assert seen == 10
        member.commit(asynchronous=False)
        page.goto(f"{broker.http_url}/console/groups/{group}")
        assert page.locator("#offsets td.committed").inner_text() == "10"
        page.get_by_label("To", exact=True).select_option("offset")
        page.get_by_label("Offset", exact=True).fill("4")
        page.get_by_role("button", name="Reset", exact=True).click()
        # refused while the member is in the group
        assert "active members" in page.locator("#group-error").inner_text()
    finally:
        member.close()  # leaves the group

    page.goto(f"{broker.http_url}/console/groups/{group}")
    wait_until("the member left", lambda: _no_members(page, broker, group), timeout=20)
    page.get_by_label("To", exact=True).select_option("offset")
    page.get_by_label("Offset", exact=True).fill("4")
    page.get_by_role("button", name="Preview (dry run)").click()
    assert cells(page, "#preview td.new") == ["4"]
    assert page.locator("#offsets td.committed").inner_text() == "10"  # a dry run changes nothing
    page.get_by_role("button", name="Reset", exact=True).click()
    assert "Reset 1 partition" in page.locator("#group-notice").inner_text()
    assert page.locator("#offsets td.committed").inner_text() == "4"

    # the lag chart follows: 6 now, 16 once ten more records land
    page.wait_for_function("window.consoleLag && window.consoleLag.ticks >= 1")
    assert page.evaluate("window.consoleLag.data[1].at(-1)") == 6
    produce(broker, topic, [{"i": i} for i in range(10, 20)])
    page.wait_for_function("window.consoleLag.data[1].at(-1) === 16")
    assert page.locator("#group-lag").inner_text() == "16"

    resumed = Consumer(config)
    resumed.subscribe([topic])
    try:
        first = None
        for _ in range(100):
            msg = resumed.poll(0.2)
            if msg is not None and msg.error() is None:
                first = msg.offset()
                break
        assert first == 4
    finally:
        resumed.close()


def _no_members(page: Any, broker: BrokerProcess, group: str) -> bool:
    page.goto(f"{broker.http_url}/console/groups/{group}")
    return bool(cells(page, "#members td") == ["No active members."])


def test_overview_charts_update_live(broker: BrokerProcess, page: Any) -> None:
    topic = unique_topic("live")
    create_topic(broker.bootstrap, topic, 1)
    page.goto(f"{broker.http_url}/console")
    page.wait_for_function("window.consoleLive && window.consoleLive.ticks >= 1")
    assert page.locator("#live-status").inner_text().startswith("Live")
    produce(broker, topic, [{"i": i} for i in range(200)])
    # the Kafka line of "messages in / s" rises above zero within a few ticks
    page.wait_for_function(
        "Math.max(...window.consoleLive.data.messages_in[1].filter(v => v !== null)) > 0"
    )
    # the rates plotted, times each tick's length, add up to the records sent once they are
    # all counted
    page.wait_for_function(
        """() => {
          const [t, kafka] = window.consoleLive.data.messages_in;
          let sum = 0;
          for (let i = 1; i < t.length; i++) sum += (kafka[i] || 0) * (t[i] - t[i - 1]);
          return Math.abs(sum - 200) < 0.5;
        }"""
    )
    assert int(page.locator("#stat-topics").inner_text()) >= 1


def test_pages_have_real_urls_and_assets_come_from_the_broker(
    broker: BrokerProcess, page: Any
) -> None:
    requested: list[str] = []
    page.on("request", lambda r: requested.append(r.url))
    topic = unique_topic("urls")
    create_topic(broker.bootstrap, topic, 1)
    for path in ("/console", "/console/topics", f"/console/topics/{topic}", "/console/groups"):
        response = page.goto(f"{broker.http_url}{path}")
        assert response is not None and response.status == 200, path
    assert requested and all(u.startswith(broker.http_url) for u in requested), requested
    missing = page.goto(f"{broker.http_url}/console/topics/no-such-topic")
    assert missing is not None and missing.status == 404
    with client(broker.http_url) as http:  # the HTTP door's index links the console
        assert http.get("/").json()["console"] == "/console"


def test_pages_fit_a_phone_width(broker: BrokerProcess, browser: Any) -> None:
    topic = unique_topic("phone")
    create_topic(broker.bootstrap, topic, 1)
    produce(broker, topic, [{"reading": {"celsius": 20 + i}, "site": "north"} for i in range(3)])
    context = browser.new_context(viewport={"width": 390, "height": 844}, is_mobile=True)
    try:
        page = context.new_page()
        for path in (
            "/console",
            "/console/topics",
            f"/console/topics/{topic}",
            f"/console/topics/{topic}/messages",
            "/console/groups",
            "/console/dashboards",
        ):
            page.goto(f"{broker.http_url}{path}")
            overflow = page.evaluate(
                "document.documentElement.scrollWidth - document.documentElement.clientWidth"
            )
            assert overflow <= 0, (path, overflow)
        (ARTIFACTS / "console").mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(ARTIFACTS / "console" / "phone-messages.png"), full_page=True)
    finally:
        context.close()


def test_delete_topic_needs_its_name_typed(broker: BrokerProcess, page: Any) -> None:
    topic = unique_topic("doomed")
    create_topic(broker.bootstrap, topic, 1)
    page.goto(f"{broker.http_url}/console/topics/{topic}")
    page.get_by_label("Type").fill("wrong")
    page.get_by_role("button", name="Delete topic").click()
    assert "Type the topic's name" in page.locator("[role=alert]").inner_text()
    page.get_by_label("Type").fill(topic)
    page.get_by_role("button", name="Delete topic").click()
    page.wait_for_url("**/console/topics")
    assert topic not in cells(page, "#topics td")


def test_alter_config_and_add_partitions(broker: BrokerProcess, page: Any) -> None:
    topic = unique_topic("altered")
    create_topic(broker.bootstrap, topic, 1)
    page.goto(f"{broker.http_url}/console/topics/{topic}")
    page.locator("#config").select_option("retention.bytes")
    page.locator("#value").fill("1048576")
    page.get_by_role("button", name="Set", exact=True).click()
    page.wait_for_load_state()
    row = page.locator('#configs tr[data-config="retention.bytes"] td')
    assert row.all_inner_texts() == ["retention.bytes", "1048576", "topic"]
    page.locator("#total").fill("3")
    page.get_by_role("button", name="Add partitions").click()
    page.wait_for_load_state()
    assert len(page.locator("#partitions tr").all()) == 3
    consumer = Consumer({"bootstrap.servers": broker.bootstrap, "group.id": "meta"})
    try:
        meta = consumer.list_topics(topic, timeout=10)
        assert len(meta.topics[topic].partitions) == 3
    finally:
        consumer.close()


def test_download_reproduce_and_delete_records(broker: BrokerProcess, page: Any) -> None:
    topic, other = unique_topic("orders"), unique_topic("orders-retry")
    create_topic(broker.bootstrap, topic, 1)
    create_topic(broker.bootstrap, other, 1)
    producer = Producer({"bootstrap.servers": broker.bootstrap})
    for i in range(4):
        producer.produce(
            topic, key=f"o{i}".encode(), value=json.dumps({"n": i}), headers={"src": b"shop"}
        )
    assert producer.flush(15) == 0
    query = "partition=0&start=beginning&filter=%24.n+%3E%3D+2"
    with client(broker.http_url) as http:
        lines = http.get(f"/console/topics/{topic}/messages?{query}&format=jsonl")
        assert lines.headers["content-disposition"] == f'attachment; filename="{topic}.jsonl"'
        rows = [json.loads(line) for line in lines.text.splitlines()]
        assert [(r["offset"], r["key"], json.loads(r["value"]), r["headers"]) for r in rows] == [
            (2, "o2", {"n": 2}, {"src": "shop"}),
            (3, "o3", {"n": 3}, {"src": "shop"}),
        ]
        table = http.get(f"/console/topics/{topic}/messages?{query}&format=csv")
        parsed = list(csv.reader(io.StringIO(table.text)))
        assert parsed[0] == ["partition", "offset", "timestamp", "key", "value", "headers"]
        assert [(r[1], r[3], r[4], r[5]) for r in parsed[1:]] == [
            ("2", "o2", '{"n":2}', '{"src": "shop"}'),
            ("3", "o3", '{"n":3}', '{"src": "shop"}'),
        ]

    # re-produce offset 1, edited, to another topic
    page.goto(f"{broker.http_url}/console/topics/{topic}/messages?start=beginning")
    page.get_by_label("Produce offset 1 of partition 0 again").click()
    assert page.get_by_label("Value", exact=True).input_value() == '{"n": 1}'
    page.get_by_label("To topic").select_option(other)
    page.get_by_label("Value", exact=True).fill('{"n": 1, "retried": true}')
    page.get_by_role("button", name="Produce").click()
    page.wait_for_url(f"**/console/topics/{other}/messages**")
    consumer = Consumer({"bootstrap.servers": broker.bootstrap, "group.id": unique_topic("g")})
    try:
        consumer.assign([TopicPartition(other, 0, 0)])
        msg = None
        for _ in range(100):
            msg = consumer.poll(0.2)
            if msg is not None and msg.error() is None:
                break
        assert msg is not None and msg.error() is None
        assert (msg.key(), json.loads(msg.value())) == (b"o1", {"n": 1, "retried": True})
        assert msg.headers() == [("src", b"shop")]
    finally:
        consumer.close()

    # delete the first two records of the original topic
    page.goto(f"{broker.http_url}/console/topics/{topic}")
    page.locator("#records-offset").fill("2")
    page.get_by_role("button", name="Delete records").click()
    page.wait_for_load_state()
    first = page.locator("#partitions tr").first.locator("td")
    assert first.all_inner_texts()[:3] == ["0", "2", "4"]


def test_live_tail_shows_new_matching_records(broker: BrokerProcess, page: Any) -> None:
    topic = unique_topic("tail")
    create_topic(broker.bootstrap, topic, 2)
    produce(broker, topic, [{"temp": 99}])  # before the tail: not shown
    page.goto(f"{broker.http_url}/console/topics/{topic}/messages")
    page.get_by_label("Filter", exact=True).fill("$.temp > 30")
    page.get_by_role("button", name="Live tail").click()
    page.wait_for_function("window.consoleTail.open")
    produce(broker, topic, [{"temp": t} for t in (10, 31, 20, 45)], partition=[0, 1, 0, 1])
    page.wait_for_function("window.consoleTail.rows >= 2")
    shown = sorted(json.loads(v)["temp"] for v in cells(page, "#messages tr.tailed pre.value"))
    assert shown == [31, 45]
    page.get_by_role("button", name="Stop live tail").click()
    assert page.locator("#tail-status").inner_text() == "Live tail stopped."


def test_dashboard_plots_a_json_field_live_and_is_kept_by_the_broker(
    broker: BrokerProcess, page: Any
) -> None:
    """Last in the module: it restarts the broker."""
    topic = unique_topic("greenhouse")
    create_topic(broker.bootstrap, topic, 2)
    page.goto(f"{broker.http_url}/console/dashboards")
    page.get_by_label("Title", exact=True).fill("Greenhouse temperature")
    page.get_by_label("Topic", exact=True).select_option(topic)
    page.get_by_label("Numeric JSON field", exact=True).fill("$.reading.celsius")
    page.get_by_label("Plot", exact=True).select_option("per-key")
    page.get_by_role("button", name="Save dashboard").click()
    page.wait_for_url("**/console/dashboards/greenhouse-temperature")
    page.wait_for_function("window.consoleBoard && window.consoleBoard.ticks >= 1")

    # two sensors (keys), each with a steady reading; and a record without the field
    producer = Producer({"bootstrap.servers": broker.bootstrap})
    for _ in range(10):
        producer.produce(topic, key=b"north", value=json.dumps({"reading": {"celsius": 21.5}}))
        producer.produce(topic, key=b"south", value=json.dumps({"reading": {"celsius": 18}}))
    producer.produce(topic, key=b"north", value=b"not json")
    assert producer.flush(15) == 0
    page.wait_for_function(
        "['north', 'south'].every(k => (window.consoleBoard.lines[k] || []).some(v => v !== null))"
    )
    plotted = page.evaluate(
        "Object.fromEntries(['north', 'south'].map(k => "
        "[k, [...new Set(window.consoleBoard.lines[k].filter(v => v !== null))]]))"
    )
    assert plotted == {"north": [21.5], "south": [18]}
    page.wait_for_function("window.consoleBoard.count.reduce((a, v) => a + v, 0) === 21")

    page.goto("about:blank")  # closes the live stream
    broker.restart()
    page.goto(f"{broker.http_url}/console/dashboards")
    assert cells(page, "#boards td a") == ["Greenhouse temperature"]
    page.get_by_role("link", name="Greenhouse temperature").click()
    assert page.locator("h1").inner_text() == "Greenhouse temperature"
    assert "$.reading.celsius" in page.locator("main").inner_text()
