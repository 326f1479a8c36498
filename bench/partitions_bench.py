"""The broker's CPU per Produce and per Fetch request of many partitions.

Theory of operation
-------------------
One ``bayou serve`` (Kafka door only) and a topic of ``--partitions`` partitions.  The load
is one connection sending one pre-encoded request over and over (``--window`` in flight):
a Produce (v9, acks=1) carrying one batch of ten 100-byte records for every partition, then
a Fetch (v12) of every partition from offset 0, ``--partition-max-bytes`` each.  The client
does almost nothing per request, so what is measured is the broker's own work per request
and per partition — the per-partition Python of the produce and fetch paths — as CPU seconds
of the broker process (``/proc/PID/stat``: all its threads, so the periodic checkpoint and
flushes count too), which other work on a shared machine moves far less than wall time.
The broker is stopped by PID.  Run from the repository root (Linux)::

    .venv/bin/python -m bench.partitions_bench        # 128 partitions, 3000 + 1500 requests
"""

from __future__ import annotations

import argparse
import socket
import tempfile
import time
from pathlib import Path

from confluent_kafka.admin import AdminClient, NewTopic

from bayou.protocol.kafka import RequestHeader, encode_request
from bayou.protocol.kafka import messages as m
from bayou.protocol.kafka.records import Record, build_batch
from bench.machine import proc_cpu_seconds
from tests.support.broker import BrokerProcess

TOPIC = "partitions-bench"


def create_topic(bootstrap: str, partitions: int) -> None:
    admin = AdminClient({"bootstrap.servers": bootstrap})
    for future in admin.create_topics([NewTopic(TOPIC, partitions, 1)]).values():
        future.result(30)


def produce_frame(partitions: int) -> bytes:
    batch = build_batch(
        [Record(int(time.time() * 1000), b"k%d" % i, b"v" * 100) for i in range(10)]
    )
    request = m.ProduceRequest(
        acks=1,
        timeout_ms=30_000,
        topic_data=[
            m.ProduceRequest.TopicProduceData(
                name=TOPIC,
                partition_data=[
                    m.ProduceRequest.PartitionProduceData(index=p, records=batch)
                    for p in range(partitions)
                ],
            )
        ],
    )
    return encode_request(RequestHeader(0, 9, 1, "partitions-bench"), request)


def fetch_frame(partitions: int, partition_max_bytes: int) -> bytes:
    request = m.FetchRequest(
        replica_id=-1,
        max_wait_ms=0,
        min_bytes=1,
        max_bytes=64 << 20,
        topics=[
            m.FetchRequest.FetchTopic(
                topic=TOPIC,
                partitions=[
                    m.FetchRequest.FetchPartition(
                        partition=p, fetch_offset=0, partition_max_bytes=partition_max_bytes
                    )
                    for p in range(partitions)
                ],
            )
        ],
    )
    return encode_request(RequestHeader(1, 12, 1, "partitions-bench"), request)


def send(port: int, frame: bytes, count: int, window: int) -> float:
    """Send ``frame`` ``count`` times, ``window`` in flight; the seconds it took."""
    with socket.create_connection(("127.0.0.1", port)) as sock:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        buf = bytearray()
        started = time.perf_counter()
        sent = done = 0
        while done < count:
            while sent < count and sent - done < window:
                sock.sendall(frame)
                sent += 1
            while True:  # one whole response
                if len(buf) >= 4:
                    size = int.from_bytes(buf[:4], "big")
                    if len(buf) >= 4 + size:
                        del buf[: 4 + size]
                        break
                chunk = sock.recv(1 << 20)
                if not chunk:
                    raise ConnectionError("the broker closed the connection")
                buf += chunk
            done += 1
        return time.perf_counter() - started


def cpu_seconds(pid: int) -> float:
    """User + system CPU of the broker ``pid`` so far (it must still run)."""
    seconds = proc_cpu_seconds(pid)
    if seconds is None:
        raise RuntimeError(f"the broker (pid {pid}) is gone")
    return seconds


def phase(
    name: str, pid: int, port: int, frame: bytes, count: int, args: argparse.Namespace
) -> None:
    before = cpu_seconds(pid)
    seconds = send(port, frame, count, args.window)
    cpu = cpu_seconds(pid) - before
    print(
        f"{name}: {args.partitions} partitions x {count} requests: {count / seconds:,.0f} req/s, "
        f"broker {1e6 * cpu / count:,.0f} us CPU per request, "
        f"{1e6 * cpu / count / args.partitions:.1f} us per partition",
        flush=True,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--partitions", type=int, default=128)
    parser.add_argument("--produce-requests", type=int, default=3000)
    parser.add_argument("--fetch-requests", type=int, default=1500)
    parser.add_argument("--partition-max-bytes", type=int, default=2048)
    parser.add_argument("--window", type=int, default=8)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        broker = BrokerProcess(Path(tmp) / "data", doors=()).start()
        try:
            create_topic(broker.bootstrap, args.partitions)
            port = int(broker.bootstrap.rsplit(":", 1)[1])
            produce = produce_frame(args.partitions)
            send(port, produce, 300, args.window)  # warm up; data for the fetches
            phase("produce", broker.pid, port, produce, args.produce_requests, args)
            fetch = fetch_frame(args.partitions, args.partition_max_bytes)
            phase("fetch", broker.pid, port, fetch, args.fetch_requests, args)
        finally:
            broker.kill()


if __name__ == "__main__":
    main()
