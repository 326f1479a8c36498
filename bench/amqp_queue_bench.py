"""Work-queue benchmark: AMQP publish → competing consumers with acks, Bayou beside RabbitMQ.

Theory of operation
-------------------
The brokers are started as ``bench/amqp_bench.py`` starts them (Bayou with ``bayou
serve``; RabbitMQ 3.x from the Debian package on a private node), one after the other, with
the same load from the same client (pika):

1. one durable queue — on Bayou a classic queue (the share group ``amqp:<queue>``), on
   RabbitMQ a durable classic queue with persistent messages, or a quorum queue
   (``--rabbit-queue quorum``);
2. ``--messages`` bodies of ``--size`` bytes are published with confirms (a window of 1000
   unconfirmed); msgs/s from first publish to last confirm;
3. ``--consumers`` consumer *processes* (pika saturates a core long before either broker)
   start together, each with ``basic.qos`` prefetch ``--prefetch``, and ack every message
   one by one as a work queue's workers do; msgs/s from their start until the last message
   is acked; each consumer's share is reported too.

Reported: msgs/s per phase and Bayou's rate as a ratio of RabbitMQ's; written to
``bench/results/amqp-queue-<timestamp>.json``.  Run from the repository root::

    .venv/bin/python -m bench.amqp_queue_bench                  # 20k x 100 B, 4 consumers
    .venv/bin/python -m bench.amqp_queue_bench --only bayou
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import time
from typing import Any

import pika

from bench.amqp_bench import compare, declare, params, publish_windowed


def _consumer(port: int, queue: str, prefetch: int, start: Any, counts: Any, i: int) -> None:
    conn = pika.BlockingConnection(params(port))
    ch = conn.channel()
    ch.basic_qos(prefetch_count=prefetch)

    def on(ch_: Any, method: Any, _props: Any, _body: bytes) -> None:
        ch_.basic_ack(method.delivery_tag)
        with counts.get_lock():
            counts[i] += 1

    start.wait()
    ch.basic_consume(queue, on)
    while not counts[len(counts) - 1]:  # the last slot: the parent says stop
        conn.process_data_events(time_limit=0.1)
    conn.close()


def consume(port: int, queue: str, messages: int, consumers: int, prefetch: int) -> dict[str, Any]:
    ctx = mp.get_context("spawn")
    start = ctx.Event()
    counts = ctx.Array("q", consumers + 1)
    procs = [
        ctx.Process(target=_consumer, args=(port, queue, prefetch, start, counts, i))
        for i in range(consumers)
    ]
    for p in procs:
        p.start()
    time.sleep(2.0)  # the interpreters start; they connect once released
    t0 = time.perf_counter()
    start.set()
    deadline = time.monotonic() + 600
    while sum(counts[:consumers]) < messages and time.monotonic() < deadline:
        time.sleep(0.01)
    elapsed = time.perf_counter() - t0
    shares = list(counts[:consumers])
    counts[consumers] = 1
    for p in procs:
        p.join(30)
        if p.is_alive():
            p.kill()
    assert sum(shares) >= messages, shares
    return {"consume_ack_msgs_s": messages / elapsed, "shares": shares}


def run(broker: Any, args: argparse.Namespace) -> dict[str, Any]:
    body = os.urandom(args.size)
    kind = "classic" if broker.name == "bayou" else args.rabbit_queue
    queue = f"bench-work-{os.getpid()}"
    declare(broker.port, queue, kind)
    out: dict[str, Any] = {
        "publish_confirm_window_msgs_s": publish_windowed(
            broker.port, queue, args.messages, body, 1000
        )
    }
    out.update(consume(broker.port, queue, args.messages, args.consumers, args.prefetch))
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--messages", type=int, default=20_000)
    ap.add_argument("--size", type=int, default=100)
    ap.add_argument("--consumers", type=int, default=4)
    ap.add_argument("--prefetch", type=int, default=10)
    ap.add_argument("--rabbit-queue", choices=["classic", "quorum"], default="classic")
    ap.add_argument("--only", choices=["bayou", "rabbitmq"])
    args = ap.parse_args(argv)
    return compare(args, run, "amqp-queue")


if __name__ == "__main__":
    raise SystemExit(main())
