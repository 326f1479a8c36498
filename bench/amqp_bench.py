"""AMQP 0-9-1 benchmark: Bayou's AMQP door against RabbitMQ, same client (pika), same load.

Theory of operation
-------------------
Both brokers are started here on free loopback ports (Bayou with ``bayou serve``; RabbitMQ
3.x from the Debian package as bench/../PEERS.md describes: a private node name, base
directory and config file, ``rabbitmq-server -detached``, ``rabbitmqctl wait``) and stopped
at the end (``rabbitmqctl stop``, then the ``epmd`` it left, by PID).  Phases, per broker:

1. **publish, confirms, windowed**: one pika ``SelectConnection`` publishes ``--messages``
   bodies of ``--size`` bytes with publisher confirms, keeping up to ``--window`` unconfirmed
   (how a throughput-minded publisher uses confirms).  msgs/s from first publish to last ack.
2. **publish, confirms, one at a time**: pika ``BlockingChannel.confirm_delivery`` — each
   publish waits for its ack (``--sync-messages`` of them); a round-trip-bound figure.
3. **consume**: one pika consumer reads everything back (prefetch ``--prefetch``, manual
   acks with ``multiple`` every 100 messages, ``x-stream-offset: first``).

The queue is a durable stream queue on RabbitMQ (``x-queue-type: stream``, the same
append-only log model as a Kafka topic) and a one-partition topic on Bayou; ``--rabbit-queue
classic`` uses a durable classic queue with persistent messages instead.  Reported: msgs/s
per phase and Bayou's rate as a ratio of RabbitMQ's.  Results are printed and written to
``bench/results/amqp-<timestamp>.json``.  Run from the repository root::

    .venv/bin/python -m bench.amqp_bench                       # 50k x 100 B
    .venv/bin/python -m bench.amqp_bench --only bayou          # Bayou alone
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pika

from tests.support.broker import BrokerProcess
from tests.support.ports import free_port

HOST = "127.0.0.1"
RABBIT_BIN = Path("/usr/lib/rabbitmq/bin")


def wait_port(port: int, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with socket.create_connection((HOST, port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.1)
    raise TimeoutError(f"nothing on port {port} after {timeout}s")


# --------------------------------------------------------------------------- brokers


class Bayou:
    name = "bayou"

    def __init__(self, workdir: Path, taken: set[int]) -> None:
        self.process = BrokerProcess(workdir / "bayou-data", doors=("amqp",)).start()
        self.port = self.process.amqp_port

    def stop(self) -> None:
        self.process.stop()


class RabbitMQ:
    name = "rabbitmq"

    def __init__(self, workdir: Path, taken: set[int]) -> None:
        if not (RABBIT_BIN / "rabbitmq-server").exists():
            raise FileNotFoundError("RabbitMQ not installed: apt-get install rabbitmq-server")
        self.port = free_port(taken=taken)
        base = workdir / "rabbit"
        base.mkdir()
        conf = base / "rabbitmq.conf"
        conf.write_text(f"listeners.tcp.1 = {HOST}:{self.port}\nloopback_users = none\n")
        self.env = {
            **os.environ,
            "RABBITMQ_NODENAME": f"bench{self.port}@localhost",
            "RABBITMQ_BASE": str(base),
            "RABBITMQ_MNESIA_BASE": str(base / "mnesia"),
            "RABBITMQ_LOG_BASE": str(base / "log"),
            "RABBITMQ_PID_FILE": str(base / "rabbit.pid"),
            "RABBITMQ_CONFIG_FILE": str(conf.with_suffix("")),
            "RABBITMQ_DIST_PORT": str(free_port(taken=taken)),
            "ERL_EPMD_ADDRESS": HOST,
            "RABBITMQ_ENABLED_PLUGINS_FILE": str(base / "enabled_plugins"),
        }
        (base / "enabled_plugins").write_text("[].\n")
        subprocess.run(
            [str(RABBIT_BIN / "rabbitmq-server"), "-detached"],
            env=self.env,
            check=True,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        subprocess.run(
            [
                str(RABBIT_BIN / "rabbitmqctl"),
                "wait",
                "--timeout",
                "90",
                self.env["RABBITMQ_PID_FILE"],
            ],
            env=self.env,
            check=True,
            stdout=subprocess.DEVNULL,
        )
        wait_port(self.port)

    def stop(self) -> None:
        pid_file = Path(self.env["RABBITMQ_PID_FILE"])
        pid = int(pid_file.read_text().strip()) if pid_file.exists() else None
        subprocess.run(
            [str(RABBIT_BIN / "rabbitmqctl"), "stop"],
            env=self.env,
            check=False,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            timeout=60,
        )
        deadline = time.monotonic() + 30
        while pid is not None and Path(f"/proc/{pid}").exists() and time.monotonic() < deadline:
            time.sleep(0.1)
        if pid is not None and Path(f"/proc/{pid}").exists():
            os.kill(pid, signal.SIGKILL)
        # the epmd this node started (listening on our loopback address), by PID
        found = subprocess.run(["pgrep", "-x", "epmd"], capture_output=True, text=True, check=False)
        for pid in found.stdout.split():
            try:
                environ = Path(f"/proc/{pid}/environ").read_bytes()
            except OSError:
                continue
            if f"RABBITMQ_BASE={self.env['RABBITMQ_BASE']}".encode() in environ:
                os.kill(int(pid), signal.SIGTERM)


# --------------------------------------------------------------------------- phases


def params(port: int) -> pika.ConnectionParameters:
    return pika.ConnectionParameters(HOST, port, heartbeat=0)


def declare(port: int, queue: str, kind: str) -> None:
    conn = pika.BlockingConnection(params(port))
    ch = conn.channel()
    args = {"x-queue-type": kind} if kind != "classic" else {}  # stream, quorum
    ch.queue_declare(queue, durable=True, arguments=args)
    conn.close()


def publish_windowed(port: int, queue: str, messages: int, body: bytes, window: int) -> float:
    state = {"sent": 0, "acked": 0, "nacked": 0, "start": 0.0, "end": 0.0}
    props = pika.BasicProperties(delivery_mode=2)
    conn: Any = None

    def pump(ch: Any) -> None:
        while state["sent"] < messages and state["sent"] - state["acked"] < window:
            ch.basic_publish("", queue, body, props)
            state["sent"] += 1

    def on_confirm(frame: Any) -> None:
        m = frame.method
        if isinstance(m, pika.spec.Basic.Nack):
            state["nacked"] += 1
        state["acked"] = m.delivery_tag if m.multiple else max(state["acked"], m.delivery_tag)
        if state["acked"] >= messages:
            state["end"] = time.perf_counter()
            conn.close()
        else:
            pump(channel[0])

    channel: list[Any] = []

    def on_channel(ch: Any) -> None:
        channel.append(ch)

        def started(_frame: Any) -> None:
            state["start"] = time.perf_counter()
            pump(ch)

        ch.confirm_delivery(on_confirm, callback=started)

    conn = pika.SelectConnection(
        params(port),
        on_open_callback=lambda c: c.channel(on_open_callback=on_channel),
        on_close_callback=lambda c, _exc: c.ioloop.stop(),
    )
    conn.ioloop.start()
    assert state["acked"] >= messages and not state["nacked"], state
    return messages / (state["end"] - state["start"])


def publish_sync(port: int, queue: str, messages: int, body: bytes) -> float:
    conn = pika.BlockingConnection(params(port))
    ch = conn.channel()
    ch.confirm_delivery()
    props = pika.BasicProperties(delivery_mode=2)
    start = time.perf_counter()
    for _ in range(messages):
        ch.basic_publish("", queue, body, props)
    elapsed = time.perf_counter() - start
    conn.close()
    return messages / elapsed


def consume(port: int, queue: str, messages: int, prefetch: int, stream: bool) -> float:
    conn = pika.BlockingConnection(params(port))
    ch = conn.channel()
    ch.basic_qos(prefetch_count=prefetch)
    state = {"n": 0, "start": 0.0}

    def on(ch_: Any, method: Any, _props: Any, _body: bytes) -> None:
        if state["n"] == 0:
            state["start"] = time.perf_counter()
        state["n"] += 1
        if state["n"] % 100 == 0 or state["n"] == messages:
            ch_.basic_ack(method.delivery_tag, multiple=True)
        if state["n"] >= messages:
            ch_.stop_consuming()

    ch.basic_consume(queue, on, arguments={"x-stream-offset": "first"} if stream else None)
    deadline = time.monotonic() + 600
    while state["n"] < messages and time.monotonic() < deadline:
        conn.process_data_events(time_limit=0.5)
    elapsed = time.perf_counter() - state["start"]
    conn.close()
    assert state["n"] >= messages, state
    return messages / elapsed


def run(broker: Any, args: argparse.Namespace) -> dict[str, Any]:
    body = os.urandom(args.size)
    kind = "stream" if broker.name == "bayou" or args.rabbit_queue == "stream" else "classic"
    q1, q2 = f"bench-window-{os.getpid()}", f"bench-sync-{os.getpid()}"
    declare(broker.port, q1, kind)
    declare(broker.port, q2, kind)
    out = {
        "publish_confirm_window_msgs_s": publish_windowed(
            broker.port, q1, args.messages, body, args.window
        ),
        "publish_confirm_sync_msgs_s": publish_sync(broker.port, q2, args.sync_messages, body),
    }
    out["consume_msgs_s"] = consume(
        broker.port, q1, args.messages, args.prefetch, stream=kind == "stream"
    )
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--messages", type=int, default=50_000)
    ap.add_argument("--sync-messages", type=int, default=3_000)
    ap.add_argument("--size", type=int, default=100)
    ap.add_argument("--window", type=int, default=1000)
    ap.add_argument("--prefetch", type=int, default=1000)
    ap.add_argument("--rabbit-queue", choices=["stream", "classic"], default="stream")
    ap.add_argument("--only", choices=["bayou", "rabbitmq"])
    args = ap.parse_args(argv)
    return compare(args, run, "amqp")


def compare(
    args: argparse.Namespace,
    run: Callable[[Any, argparse.Namespace], dict[str, Any]],
    name: str,
) -> int:
    """``run`` against Bayou, then RabbitMQ (or the ``--only`` one): each broker's numbers,
    the ratios of the rates, written to ``bench/results/<name>-<time>.json``."""
    factories: list[tuple[str, Callable[[Path, set[int]], Any]]] = [
        ("bayou", Bayou),
        ("rabbitmq", RabbitMQ),
    ]
    results: dict[str, dict[str, Any]] = {}
    workdir = Path(tempfile.mkdtemp(prefix=f"{name}-bench-"))
    taken: set[int] = set()
    try:
        for broker_name, factory in factories:
            if args.only and args.only != broker_name:
                continue
            broker = factory(workdir, taken)
            try:
                results[broker_name] = run(broker, args)
            finally:
                broker.stop()
            shown = {
                k: round(v) if isinstance(v, float) else v for k, v in results[broker_name].items()
            }
            print(broker_name, json.dumps(shown), flush=True)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    report: dict[str, Any] = {
        "config": vars(args),
        "results": results,
        "client": f"pika {pika.__version__}",
    }
    if "bayou" in results and "rabbitmq" in results:
        report["ratio_bayou_over_rabbitmq"] = {
            k: round(results["bayou"][k] / results["rabbitmq"][k], 2)
            for k in results["bayou"]
            if isinstance(results["bayou"][k], float)
        }
        print("Bayou / RabbitMQ:", json.dumps(report["ratio_bayou_over_rabbitmq"]))
    out_dir = Path(__file__).parent / "results"
    out_dir.mkdir(exist_ok=True)
    path = out_dir / f"{name}-{time.strftime('%Y%m%d-%H%M%S')}.json"
    path.write_text(json.dumps(report, indent=2))
    print("wrote", path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
