"""The HTTP, MQTT and AMQP doors read topics written in Kafka transactions as a
read_committed Kafka consumer does: records of aborted transactions never arrive, and the
records of an open transaction arrive only once it commits (the last stable offset holds
the doors' readers back) — and with ``--door-isolation read_uncommitted`` everything does."""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path

from confluent_kafka import Producer

from tests.integration.test_http_stream import read_events
from tests.integration.test_transactions import create_topic, producer
from tests.support.amqp import Collector, connect
from tests.support.broker import BrokerProcess
from tests.support.http import client
from tests.support.kafka import unique_topic
from tests.support.mqtt import MqttTestClient

QUIET_S = 0.7  # how long "nothing more arrives" is watched for, on each door


def values(n: int, prefix: str) -> list[bytes]:
    return [json.dumps(f"{prefix}{i}").encode() for i in range(n)]


def in_transaction(p: Producer, topic: str, records: list[bytes], *, commit: bool | None) -> None:
    """One transaction of ``records``: committed, aborted, or (``None``) left open."""
    p.begin_transaction()
    for value in records:
        p.produce(topic, value, partition=0)
    p.flush(20)
    if commit is True:
        p.commit_transaction(20)
    elif commit is False:
        p.abort_transaction(20)


class Doors:
    """One reader per door on ``topic``, all started before anything is produced."""

    def __init__(self, broker: BrokerProcess, topic: str) -> None:
        self.mqtt = MqttTestClient(broker.mqtt_port, unique_topic("mqtt-reader"), version=5)
        self.mqtt.subscribe(f"{topic}/#", qos=1)
        self.amqp_conn = connect(broker)
        ch = self.amqp_conn.channel()
        ch.queue_declare(topic, durable=True, arguments={"x-queue-type": "stream"})
        ch.basic_qos(prefetch_count=100)
        self.amqp = Collector(
            self.amqp_conn, ch, topic, auto_ack=True, arguments={"x-stream-offset": "first"}
        )
        self.http = client(broker.http_url, timeout=20)
        self._stack = ExitStack()
        self._sse = self._stack.enter_context(
            self.http.stream("GET", f"/topics/{topic}/stream", params={"from": "earliest"})
        )
        assert self._sse.status_code == 200
        self.sse_lines: Iterator[str] = self._sse.iter_lines()

    def next_values(self, n: int) -> dict[str, list[str]]:
        """The next ``n`` record values each door delivers."""
        mqtt = [json.loads(m.payload) for m in self.mqtt.receive(n)]
        before = len(self.amqp.got)
        amqp = [json.loads(d.body) for d in self.amqp.wait_for(before + n)[before:]]
        sse = [e["value"] for _id, e in read_events(self.sse_lines, n)]
        return {"mqtt": mqtt, "amqp": amqp, "http": sse}

    def quiet(self) -> dict[str, int]:
        """How many records MQTT and AMQP deliver in ``QUIET_S`` (the SSE stream is checked
        by what its next event is)."""
        return {
            "mqtt": len(self.mqtt.receive(1, timeout=QUIET_S)),
            "amqp": self.amqp.quiet_for(QUIET_S),
        }

    def close(self) -> None:
        self._stack.close()
        self.http.close()
        self.amqp_conn.close()
        self.mqtt.close()


def test_doors_deliver_only_committed_records_and_wait_for_open_transactions(
    shared_broker: BrokerProcess,
) -> None:
    topic = unique_topic("txn-doors")
    create_topic(shared_broker.bootstrap, topic)
    doors = Doors(shared_broker, topic)
    p = producer(shared_broker.bootstrap, unique_topic("tid"))
    try:
        in_transaction(p, topic, values(3, "aborted-"), commit=False)
        in_transaction(p, topic, values(2, "committed-"), commit=True)
        in_transaction(p, topic, values(2, "open-"), commit=None)
        want = ["committed-0", "committed-1"]
        assert doors.next_values(2) == {"mqtt": want, "amqp": want, "http": want}
        # the open transaction holds every door back at the last stable offset
        assert doors.quiet() == {"mqtt": 0, "amqp": 0}
        p.commit_transaction(20)
        want = ["open-0", "open-1"]
        assert doors.next_values(2) == {"mqtt": want, "amqp": want, "http": want}
    finally:
        doors.close()


def test_door_isolation_read_uncommitted_delivers_aborted_records_too(tmp_path: Path) -> None:
    broker = BrokerProcess(tmp_path / "data", extra_args=["--door-isolation", "read_uncommitted"])
    try:
        broker.start()
        topic = unique_topic("txn-doors-uncommitted")
        create_topic(broker.bootstrap, topic)
        doors = Doors(broker, topic)
        p = producer(broker.bootstrap, unique_topic("tid"))
        try:
            in_transaction(p, topic, values(2, "aborted-"), commit=False)
            in_transaction(p, topic, values(1, "committed-"), commit=True)
            want = ["aborted-0", "aborted-1", "committed-0"]
            assert doors.next_values(3) == {"mqtt": want, "amqp": want, "http": want}
        finally:
            doors.close()
    finally:
        broker.kill()
