"""Broker CPU per Kafka request: what one Produce or one Fetch costs the broker, alone.

Theory of operation
-------------------
The throughput benchmarks measure the broker under a client library's batching; this one
measures the per-request path itself.  One connection sends pre-encoded requests (encoded
before the clock starts, so the client spends next to nothing per request) and reads the
answers, ``--window`` in flight; with ``--burst`` each window is written at once and read
back whole (a pipelining client), else one request goes out as each answer comes in.  The
broker's user + system CPU is read from ``/proc/<pid>/stat`` before and after; reported:
requests per second and broker CPU microseconds per request.

- ``produce``: one record of ``--value-bytes`` per request, acks=1, partition 0.
- ``fetch``: from offsets ``--fetch-from`` + (n mod ``--fetch-span``), at most
  ``--fetch-max-bytes`` per partition, no waiting — produce first so the offsets exist.

Run against a broker you started (so its pid is known), from the repository root::

    .venv/bin/python -m bench.request_cost --pid PID --port 9092 --kind produce --window 1
    .venv/bin/python -m bench.request_cost --pid PID --port 9092 --kind fetch --window 8 \\
        --fetch-from 1024 --fetch-span 250 --burst

Two brokers side by side (the code before and after a change, each from its own worktree),
runs interleaved, is how the figures in the performance notes were taken.
"""

from __future__ import annotations

import argparse
import os
import socket
import struct
import time

from bayou.protocol.kafka import RequestHeader, encode_request
from bayou.protocol.kafka import messages as m
from bayou.protocol.kafka.records import Record, build_batch

WARMUP = 200


def broker_cpu_s(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as stat:
        fields = stat.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def produce_frame(topic: str, value: bytes, correlation: int) -> bytes:
    batch = build_batch([Record(int(time.time() * 1000), b"k", value)])
    request = m.ProduceRequest(
        acks=1,
        timeout_ms=30_000,
        topic_data=[
            m.ProduceRequest.TopicProduceData(
                name=topic,
                partition_data=[m.ProduceRequest.PartitionProduceData(index=0, records=batch)],
            )
        ],
    )
    return encode_request(RequestHeader(0, 9, correlation, "request-cost"), request)


def fetch_frame(topic: str, offset: int, max_bytes: int, correlation: int) -> bytes:
    partition = m.FetchRequest.FetchPartition(
        partition=0, fetch_offset=offset, partition_max_bytes=max_bytes
    )
    request = m.FetchRequest(
        max_wait_ms=0,
        min_bytes=0,
        max_bytes=1 << 20,
        isolation_level=0,
        topics=[m.FetchRequest.FetchTopic(topic=topic, partitions=[partition])],
    )
    return encode_request(RequestHeader(1, 12, correlation, "request-cost"), request)


class Answers:
    """Reads size-prefixed answers off the socket."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.buf = bytearray()

    def one(self) -> None:
        while True:
            if len(self.buf) >= 4:
                size = struct.unpack_from(">i", self.buf)[0]
                if len(self.buf) >= 4 + size:
                    del self.buf[: 4 + size]
                    return
            chunk = self.sock.recv(1 << 20)
            if not chunk:
                raise ConnectionError("the broker closed the connection")
            self.buf += chunk


def run(args: argparse.Namespace) -> tuple[float, float]:
    """(requests per second, broker CPU µs per request)."""
    n = args.requests + WARMUP
    if args.kind == "produce":
        value = b"v" * args.value_bytes
        frames = [produce_frame(args.topic, value, i) for i in range(n)]
    else:
        frames = [
            fetch_frame(args.topic, args.fetch_from + i % args.fetch_span, args.fetch_max_bytes, i)
            for i in range(n)
        ]
    with socket.create_connection((args.host, args.port), timeout=30) as sock:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        answers = Answers(sock)
        for frame in frames[:WARMUP]:
            sock.sendall(frame)
            answers.one()
        frames = frames[WARMUP:]
        cpu, started = broker_cpu_s(args.pid), time.perf_counter()
        sent = done = 0
        while done < args.requests:
            if args.burst:
                k = min(args.window, args.requests - sent)
                sock.sendall(b"".join(frames[sent : sent + k]))
                sent += k
                for _ in range(k):
                    answers.one()
                done += k
                continue
            while sent < args.requests and sent - done < args.window:
                sock.sendall(frames[sent])
                sent += 1
            answers.one()
            done += 1
        elapsed = time.perf_counter() - started
        spent = broker_cpu_s(args.pid) - cpu
    return args.requests / elapsed, 1e6 * spent / args.requests


def main() -> None:
    parser = argparse.ArgumentParser(
        prog="python -m bench.request_cost",
        description=__doc__.split("\n\n")[0] if __doc__ else None,
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("--pid", type=int, required=True, help="the broker's process id")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=9092, help="its Kafka port")
    parser.add_argument("--topic", default="request-cost", help="an existing topic")
    parser.add_argument("--kind", choices=("produce", "fetch"), default="produce")
    parser.add_argument("--requests", type=int, default=20_000)
    parser.add_argument("--window", type=int, default=1, help="requests in flight")
    parser.add_argument("--burst", action="store_true", help="write each window at once")
    parser.add_argument("--value-bytes", type=int, default=100)
    parser.add_argument("--fetch-from", type=int, default=0)
    parser.add_argument("--fetch-span", type=int, default=1000)
    parser.add_argument("--fetch-max-bytes", type=int, default=200)
    args = parser.parse_args()
    rate, cost = run(args)
    mode = "burst" if args.burst else "window"
    print(f"{args.kind} {mode} {args.window}: {rate:,.0f} requests/s, {cost:.1f} µs broker CPU")


if __name__ == "__main__":
    main()
