"""``bayou mirror`` copy rate between two local brokers.

Theory of operation
-------------------
Two ``bayou serve`` processes (Kafka door only) are started on free loopback ports as the
source and target sites.  ``--messages`` records of ``--value-bytes`` bytes (keyed, one
header) are produced to a one-partition source topic; then ``bayou mirror run`` is started
and the time until the target partition's end offset reaches the source's is measured
(including the mirror's start-up).  Reported: records/s and MB/s of values.  Brokers and the
mirror are stopped by PID.  Run from the repository root::

    .venv/bin/python -m bench.mirror_bench            # defaults: 200k records of 100 B
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from confluent_kafka import Consumer, KafkaException, Producer, TopicPartition

from tests.support.broker import BrokerProcess

TOPIC = "mirror-bench"


def _end(bootstrap: str) -> int:
    reader = Consumer({"bootstrap.servers": bootstrap, "group.id": "mirror-bench"})
    try:
        return int(reader.get_watermark_offsets(TopicPartition(TOPIC, 0), timeout=10)[1])
    except KafkaException:
        return -1
    finally:
        reader.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--messages", type=int, default=200_000)
    parser.add_argument("--value-bytes", type=int, default=100)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        source = BrokerProcess(Path(tmp) / "source", doors=()).start()
        target = BrokerProcess(Path(tmp) / "target", doors=()).start()
        mirror: subprocess.Popen[bytes] | None = None
        try:
            producer = Producer({"bootstrap.servers": source.bootstrap, "linger.ms": 20})
            value = b"x" * args.value_bytes
            for i in range(args.messages):
                while True:
                    try:
                        producer.produce(
                            TOPIC, value=value, key=b"k%d" % (i % 1000), headers=[("h", b"v")]
                        )
                        break
                    except BufferError:
                        producer.poll(0.1)
            assert producer.flush(120) == 0
            total = _end(source.bootstrap)
            started = time.monotonic()
            mirror = subprocess.Popen(
                [
                    *(sys.executable, "-m", "bayou", "mirror", "run"),
                    *("--source", source.bootstrap, "--target", target.bootstrap),
                    *("--topics", TOPIC, "--interval", "1"),
                ],
                stderr=subprocess.DEVNULL,
            )
            deadline = started + 600
            while _end(target.bootstrap) < total and time.monotonic() < deadline:
                time.sleep(0.2)
            elapsed = time.monotonic() - started
            copied = max(_end(target.bootstrap), 0)
            print(
                f"copied {copied} of {total} records of {args.value_bytes} B in {elapsed:.1f} s "
                f"(start-up included): {copied / elapsed:,.0f} records/s, "
                f"{copied * args.value_bytes / elapsed / 1e6:.2f} MB/s of values"
            )
        finally:
            if mirror is not None:
                mirror.terminate()
                mirror.wait(60)
            source.kill()
            target.kill()


if __name__ == "__main__":
    main()
