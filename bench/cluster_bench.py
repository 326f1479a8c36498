"""``make bench-cluster``: the shared engines with 1 and N brokers, beside Tansu on the same
PostgreSQL and the same SeaweedFS.

Theory of operation
-------------------
One PostgreSQL (Debian's, ``tests/support/postgres.py``) and one SeaweedFS (``weed mini``,
``tests/support/seaweedfs.py``) are started for the run on loopback; every target gets a
database (and an S3 prefix) of its own on them, and is measured alone, one after the other,
with the Kafka benchmark's phases (``bench.kafka_bench``: produce and consume throughput from
several client processes, then end-to-end latency at a fixed rate, p50/p99/p99.9):

- ``bayou-pg-1`` / ``bayou-pg-N``: ``bayou serve --storage postgres://…``, one broker, then
  ``--workers N`` (N brokers of one cluster on this host, ``docs/design/cluster.md``);
- ``bayou-s3-1`` / ``bayou-s3-N``: the same with ``--storage s3://…?metadata=postgres://…``;
- ``tansu-pg``, ``tansu-s3``: Tansu 0.6 with ``--storage-engine postgres://…`` and
  ``s3://…`` on the same servers (a Tansu build without an engine's feature is reported as
  that row's error, not skipped silently).

Besides MB/s and the broker's CPU per GB (the broker's process tree: a supervisor and its
workers together), each row carries the **engine's** CPU per GB: PostgreSQL's postmaster
with its backends and SeaweedFS's process, read from ``/proc`` over the phase — on a machine
whose two cores hold the brokers, the load and the engines at once, that is what tells where
each engine saturates (``docs/design/cluster.md``, *Saturation model*).  Results go to
``bench/results/cluster-<timestamp>.json`` and a Markdown table on stdout.

Run ``python -m bench.cluster_bench --help`` from the repository root.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import shutil
import sys
import tempfile
import time
import uuid
from dataclasses import asdict
from pathlib import Path

from confluent_kafka.admin import AdminClient

from bench import kafka_bench
from bench.kafka_bench import RESULTS_DIR, kill_workers, run_target
from bench.peers import Target, tansu_binary
from bench.report import Row, fmt
from tests.support.postgres import PostgresServer, started
from tests.support.seaweedfs import ACCESS_KEY, SECRET_KEY, SeaweedFS

TARGETS = ("bayou-pg-1", "bayou-pg-N", "tansu-pg", "bayou-s3-1", "bayou-s3-N", "tansu-s3")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="python -m bench.cluster_bench",
        description="Kafka load against Bayou on postgres:// and s3:// with 1 and N brokers, "
        "beside Tansu on the same PostgreSQL and SeaweedFS.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument("--workers", type=int, default=3, help="N: brokers of the N-broker targets")
    p.add_argument(
        "--targets",
        default=",".join(TARGETS),
        help="comma-separated subset of " + ",".join(TARGETS),
    )
    p.add_argument("--messages", type=int, default=200_000, help="per throughput phase")
    p.add_argument("--size", type=int, default=1024, help="message value bytes")
    p.add_argument("--partitions", default="8", help="comma-separated partition counts")
    p.add_argument("--producers", type=int, default=2, help="producer processes")
    p.add_argument("--consumers", type=int, default=2, help="consumer processes")
    p.add_argument("--phases", default="produce,consume,latency")
    p.add_argument("--rate", type=float, default=1000.0, help="latency phase: messages/s")
    p.add_argument("--duration", type=float, default=10.0, help="latency phase: seconds")
    p.add_argument("--rounds", type=int, default=1, help="run every target this many times")
    p.add_argument("--tansu-bin", default=None)
    p.add_argument("--results-dir", type=Path, default=RESULTS_DIR)
    args = p.parse_args(argv)
    args.targets = [t for t in args.targets.split(",") if t]
    unknown = set(args.targets) - set(TARGETS)
    if unknown:
        p.error(f"unknown targets {sorted(unknown)}")
    return args


def kafka_args(args: argparse.Namespace) -> argparse.Namespace:
    """The Kafka benchmark's options for every target of this run."""
    return kafka_bench.parse_args(
        [
            "--no-limits",
            "--messages",
            str(args.messages),
            "--sizes",
            str(args.size),
            "--partitions",
            args.partitions,
            "--compression",
            "none",
            "--producers",
            str(args.producers),
            "--consumers",
            str(args.consumers),
            "--phases",
            args.phases,
            "--rate",
            str(args.rate),
            "--duration",
            str(args.duration),
            "--phase-timeout",
            "300",
        ]
    )


def postmaster_pid(pg: PostgresServer) -> int:
    return int((pg.data / "postmaster.pid").read_text().split()[0])


def make_target(
    name: str, workers: int, pg: PostgresServer, s3: SeaweedFS, tansu_bin: str | None
) -> Target:
    """A target on its own database (and S3 prefix) of the shared servers."""
    database = pg.create_database(name.replace("-", "_").lower())
    prefix = f"{name}-{uuid.uuid4().hex[:8]}"
    s3_env = {"AWS_ACCESS_KEY_ID": ACCESS_KEY, "AWS_SECRET_ACCESS_KEY": SECRET_KEY}
    if name.startswith("tansu"):
        binary = tansu_bin or str(tansu_binary())
        engine = database if name == "tansu-pg" else f"s3://{s3.bucket}/{prefix}/"
        url = "tcp://{host}:{port}"
        template = (
            f"{shlex.quote(binary)} broker --listener-url {url} --advertised-listener-url {url}"
            f" --storage-engine {shlex.quote(engine)}"
        )
        env = {
            **s3_env,
            "AWS_ENDPOINT": s3.endpoint,
            "AWS_ALLOW_HTTP": "true",
            "AWS_DEFAULT_REGION": "us-east-1",
        }
        return Target(label=name, kind="tansu", command_template=template, env=env)
    brokers = workers if name.endswith("-N") else 1
    label = name.replace("-N", f"-{workers}")
    if "-pg-" in name:
        storage = database
    else:
        storage = f"s3://{s3.bucket}/{prefix}?endpoint={s3.endpoint}&metadata={database}"
    template = (
        f"{shlex.quote(sys.executable)} -m bayou serve --data-dir {{data_dir}} --host {{host}}"
        f" --kafka-port {{port}} --http-port 0 --mqtt-port 0 --amqp-port 0"
        f" --storage {shlex.quote(storage)}"
    )
    if brokers > 1:
        template += f" --workers {brokers} --node-id 1"
    return Target(label=label, kind="bayou", command_template=template, ports=brokers, env=s3_env)


def wait_brokers(bootstrap: str, count: int, timeout: float = 60.0) -> None:
    """Wait (bounded) until Metadata lists ``count`` brokers: every worker has joined."""
    admin = AdminClient({"bootstrap.servers": bootstrap})
    deadline = time.monotonic() + timeout
    while len(admin.list_topics(timeout=5).brokers) < count:
        if time.monotonic() > deadline:
            raise TimeoutError(f"{bootstrap}: fewer than {count} brokers after {timeout:.0f} s")
        time.sleep(0.2)


def cost(row: Row, cpu_s: float | None) -> str:
    """CPU seconds over a phase as "cores, CPU-s per GB"."""
    cores = cpu_s / row.elapsed_s if cpu_s is not None and row.elapsed_s else None
    per_gb = cpu_s / (row.bytes / 1e9) if cpu_s is not None and row.bytes else None
    return f"{fmt(cores, '.2f')}, {fmt(per_gb, '.1f')}"


def table(rows: list[Row], cpus: int) -> list[str]:
    """One Markdown table: throughput and latency per target, with the CPU of the broker(s),
    of PostgreSQL and of SeaweedFS in cores over the phase and in CPU-seconds per GB."""
    out = [
        "| target | parts | phase | MB/s | p50 / p99 ms | broker cores, s/GB "
        "| PostgreSQL cores, s/GB | SeaweedFS cores, s/GB | limit |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        if r.error:
            out.append(f"| {r.target} | {r.partitions} | {r.phase} | error: {r.error} ||||||")
            continue
        latency = (
            f"{r.p50_ms:.1f} / {r.p99_ms:.1f}"
            if r.p50_ms is not None and r.p99_ms is not None
            else "-"
        )
        engines = r.detail.get("engine_cpu_s", {})

        out.append(
            f"| {r.target} | {r.partitions} | {r.phase} | {fmt(r.mb_s, '.1f')} | {latency} "
            f"| {cost(r, r.broker_cpu_s)} | {cost(r, engines.get('postgres'))} "
            f"| {cost(r, engines.get('seaweedfs'))} | {r.limit(cpus)} |"
        )
    return out


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    kargs = kafka_args(args)
    cpus = os.cpu_count() or 1
    root = Path(tempfile.mkdtemp(prefix="bench-cluster-"))
    root.chmod(0o755)  # PostgreSQL runs as its own user when we are root
    started_at = time.strftime("%Y%m%d-%H%M%S")
    print(
        f"# bench-cluster: {args.messages:,} x {args.size} B per phase, partitions "
        f"{args.partitions}, {args.producers}/{args.consumers} client processes, latency "
        f"{args.rate:,.0f} msg/s; N = {args.workers}; {cpus} CPUs shared by the brokers, "
        f"the load, PostgreSQL and SeaweedFS; load average {os.getloadavg()[0]:.1f}",
        flush=True,
    )
    pg: PostgresServer | None = None
    s3: SeaweedFS | None = None
    rows: list[Row] = []
    loadavg: dict[str, list[float]] = {}
    try:
        pg = started(root / "pg")
        s3 = SeaweedFS(root / "s3").start()
        kafka_bench.ENGINE_PIDS["postgres"] = postmaster_pid(pg)
        if s3.proc is not None:
            kafka_bench.ENGINE_PIDS["seaweedfs"] = s3.proc.pid
        taken: set[int] = set()
        for _ in range(args.rounds):
            for name in args.targets:
                target = make_target(name, args.workers, pg, s3, args.tansu_bin)
                try:
                    target.start(root, taken)
                    if target.ports > 1:
                        wait_brokers(target.bootstrap, target.ports)
                except Exception as exc:
                    target.stop()
                    first = str(exc).splitlines()[0]
                    tail = [line for line in str(exc).splitlines() if "Error" in line][-1:]
                    reason = tail[0].strip(" |") if tail else first
                    print(f"! {target.label} did not start: {reason}", flush=True)
                    print(str(exc), file=sys.stderr, flush=True)
                    rows.append(Row(target.label, 0, "start", error=reason[:160]))
                    continue
                print(f"# {target.label}: {target.bootstrap} (pid {target.pid})", flush=True)
                loadavg[target.label] = list(os.getloadavg())
                try:
                    run_target(target, kargs, rows)
                finally:
                    kill_workers()
                    target.stop()
    except KeyboardInterrupt:
        print("\ninterrupted", file=sys.stderr)
    finally:
        kill_workers()
        if s3 is not None:
            s3.stop()
        if pg is not None:
            pg.stop()
        shutil.rmtree(root, ignore_errors=True)
    print()
    for line in table(rows, cpus):
        print(line)
    args.results_dir.mkdir(parents=True, exist_ok=True)
    out = args.results_dir / f"cluster-{started_at}.json"
    out.write_text(
        json.dumps(
            {
                "started": started_at,
                "config": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
                "loadavg_at_target_start": loadavg,
                "rows": [
                    {
                        **asdict(r),
                        "broker_s_per_gb": r.broker_s_per_gb,
                        "engine_s_per_gb": r.engine_s_per_gb,
                        "limit": r.limit(cpus),
                    }
                    for r in rows
                ],
            },
            indent=2,
        )
        + "\n"
    )
    print(f"\nresults: {out}")
    return 1 if any(r.error for r in rows) else 0


if __name__ == "__main__":
    sys.exit(main())
