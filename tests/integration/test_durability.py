"""Restarts and crashes: everything acknowledged is read back, in order."""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path

from confluent_kafka import Producer

from tests.integration.test_confluent_kafka import (
    check_received,
    consume_all,
    create_topic,
    produce_all,
)
from tests.support.broker import BrokerProcess
from tests.support.kafka import make_messages, unique_topic


def test_graceful_restart_keeps_everything(broker: BrokerProcess) -> None:
    topic = unique_topic("restart")
    create_topic(broker.bootstrap, topic, 3, **{"segment.bytes": "65536"})
    sent = make_messages(3000, 3)
    produce_all(broker.bootstrap, topic, sent, acks="all", **{"batch.size": 16384})
    assert broker.stop() == 0
    broker.start()
    check_received(sent, consume_all(broker.bootstrap, topic, 3, len(sent)))
    # and the log keeps growing from where it was
    more = make_messages(300, 3, base_ts=sent[-1].timestamp_ms + 1)
    produce_all(broker.bootstrap, topic, more)
    received = consume_all(broker.bootstrap, topic, 3, len(sent) + len(more))
    assert len(received) == len(sent) + len(more)


def test_kill_9_under_load_loses_nothing_acknowledged(
    broker: BrokerProcess, tmp_path: Path
) -> None:
    topic = unique_topic("crash")
    create_topic(broker.bootstrap, topic, 2, **{"segment.bytes": "262144"})
    acked: dict[int, list[tuple[int, bytes]]] = {0: [], 1: []}
    lock = threading.Lock()
    stop = threading.Event()

    def on_delivery(err: object, msg: object) -> None:
        if err is None:
            with lock:
                acked[msg.partition()].append((msg.offset(), msg.value()))  # type: ignore[attr-defined]

    def produce_forever() -> None:
        producer = Producer(
            {
                "bootstrap.servers": broker.bootstrap,
                "acks": "all",
                "linger.ms": 2,
                "batch.size": 65536,
                "message.timeout.ms": 5000,
                "reconnect.backoff.max.ms": 200,
            }
        )
        i = 0
        while not stop.is_set() and i < 2_000_000:
            try:
                producer.produce(
                    topic, value=f"m{i}".encode() * 10, partition=i % 2, on_delivery=on_delivery
                )
                i += 1
            except BufferError:
                producer.poll(0.01)
            producer.poll(0)
        producer.flush(10)

    thread = threading.Thread(target=produce_forever, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        with lock:
            if len(acked[0]) + len(acked[1]) >= 20_000:
                break
        time.sleep(0.05)
    broker.kill()
    with lock:
        snapshot = {p: list(v) for p, v in acked.items()}
    stop.set()
    thread.join(30)
    assert sum(len(v) for v in snapshot.values()) >= 20_000
    broker.start()
    received = consume_all(broker.bootstrap, topic, 2, sum(len(v) for v in snapshot.values()))
    stored = {(m.partition(), m.offset()): m.value() for m in received}
    for partition, entries in snapshot.items():
        for offset, value in entries:
            assert stored.get((partition, offset)) == value, (partition, offset)


def test_fsync_policies_acknowledge_and_keep_everything(shared_broker: BrokerProcess) -> None:
    """flush.messages=1 (fsync before every ack, group-committed) and flush.ms both serve."""
    for config in ({"flush.messages": "1"}, {"flush.ms": "10"}):
        topic = unique_topic("fsync")
        create_topic(shared_broker.bootstrap, topic, 2, **config)
        sent = make_messages(1000, 2)
        produce_all(shared_broker.bootstrap, topic, sent, acks="all", **{"linger.ms": 0})
        check_received(sent, consume_all(shared_broker.bootstrap, topic, 2, len(sent)))


def test_consuming_cold_segments_reads_them_off_the_event_loop(broker: BrokerProcess) -> None:
    """Segments evicted from the page cache are read in a worker thread, and everything comes
    back in order (the mechanism itself: tests/unit/test_storage_cold_reads.py)."""
    topic = unique_topic("cold")
    create_topic(broker.bootstrap, topic, 2, **{"segment.bytes": "65536"})
    sent = make_messages(3000, 2)
    produce_all(broker.bootstrap, topic, sent, acks="all", **{"batch.size": 16384})
    assert broker.stop() == 0  # flushed to disk, so the pages are clean and can be dropped
    for path in (broker.data_dir / "topics" / topic).rglob("*.log"):
        fd = os.open(path, os.O_RDONLY)
        try:
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        finally:
            os.close(fd)
    broker.start()
    check_received(sent, consume_all(broker.bootstrap, topic, 2, len(sent)))
