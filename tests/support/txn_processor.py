"""A consume-transform-produce processor with exactly-once (confluent-kafka transactions), run
as its own process by the tests so that it can be killed -9.

    python -m tests.support.txn_processor BOOTSTRAP INPUT OUTPUT GROUP TXN_ID [CRASH_AFTER]

Reads INPUT in group GROUP (read_committed, static membership so that a restarted instance
takes over at once), writes each record to OUTPUT as ``out:<value>`` with the same key, and
commits its consumed offsets inside the same transaction (``send_offsets_to_transaction``),
a few records per transaction.  With CRASH_AFTER it kills itself with SIGKILL in the middle
of transaction CRASH_AFTER + 1: after that transaction's records were produced and its
offsets sent, before the commit.  It exits 0 once its position reached the end of every
input partition.  Prints ``committed N`` after each commit (the tests wait on it).
"""

from __future__ import annotations

import os
import signal
import sys
import time

from confluent_kafka import Consumer, Producer, TopicPartition

BATCH = 7
DEADLINE_S = 60.0


def main() -> int:
    bootstrap, source, sink, group, tid = sys.argv[1:6]
    crash_after = int(sys.argv[6]) if len(sys.argv) > 6 else -1
    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": group,
            "group.instance.id": group + "-0",
            "isolation.level": "read_committed",
            "enable.auto.commit": False,
            "auto.offset.reset": "earliest",
            "session.timeout.ms": 6000,
        }
    )
    producer = Producer({"bootstrap.servers": bootstrap, "transactional.id": tid, "linger.ms": 2})
    producer.init_transactions(20)
    consumer.subscribe([source])
    commits = 0
    deadline = time.monotonic() + DEADLINE_S
    while time.monotonic() < deadline:
        messages = [m for m in consumer.consume(BATCH, 0.5) if not m.error()]
        if not messages:
            assignment = consumer.assignment()
            if assignment and _at_end(consumer, assignment):
                consumer.close()
                return 0
            continue
        producer.begin_transaction()
        for msg in messages:
            producer.produce(sink, key=msg.key(), value=b"out:" + (msg.value() or b""))
        producer.send_offsets_to_transaction(
            consumer.position(consumer.assignment()), consumer.consumer_group_metadata(), 20
        )
        if commits == crash_after:
            producer.flush(20)
            os.kill(os.getpid(), signal.SIGKILL)
        producer.commit_transaction(20)
        commits += 1
        print(f"committed {commits}", flush=True)
    print("gave up: the input did not end", flush=True)
    return 1


def _at_end(consumer: Consumer, assignment: list[TopicPartition]) -> bool:
    for tp in consumer.position(assignment):
        _low, high = consumer.get_watermark_offsets(tp, 5)
        if tp.offset < high:
            return False
    return True


if __name__ == "__main__":
    sys.exit(main())
