"""State recovery: seconds for an app to get its state back and process the next record,
Bayou's ``bayou.streams`` beside Quix Streams, same broker, same data.

    .venv/bin/python -m bench.streams_recovery_bench [--mb 100] [--quix-python PATH]

One Bayou broker is started; ``--mb`` times 1000 records of 1000-byte payloads, each with a key of
its own, are produced to one partition.  Each engine runs a stateful function keeping the
payload per key (Bayou: ``.process(fn)`` with ``state.set``; Quix: ``sdf.update(fn,
stateful=True)`` into RocksDB), exactly-once, until it has committed every record: its state
is then ≈ ``--mb`` MB, in its changelog topic and on its local disk.  The process is stopped
(SIGTERM) and a probe record is produced, then:

- cold: the local state directory is deleted (a new machine, a lost disk) and the app is
  started again: it restores from the changelog (Bayou: the whole changelog; Quix: the
  same, into RocksDB);
- warm: the app is stopped and started again with its local state (Bayou: the snapshot
  written at the stop plus the changelog's tail; Quix: RocksDB plus its changelog offsets).

Each time is from the process's start to the probe's offset being committed by the app's
group; ``baseline`` is the same for an app whose state is empty (start-up, group join, the
first transaction), so recovery ≈ time - baseline.  Rates are state MB over recovery s.
"""

from __future__ import annotations

import argparse
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from confluent_kafka import Consumer, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic  # type: ignore[attr-defined]

from bench.peers import stop_process
from bench.streams_bench import cpu_seconds
from tests.support.broker import BrokerProcess

PAYLOAD = 1000

BAYOU_APP = """
from bayou.streams import App
app = App({group!r}, commit_interval_s=1.0, state_dir={state!r})

def keep(value, state):
    if "probe" in value:
        return value
    state.set("p", value["payload"])
    return None

app.stream({topic!r}).process(keep).to({out!r})
"""

QUIX_APP = """
from quixstreams import Application
app = Application(broker_address={bootstrap!r}, consumer_group={group!r},
                  auto_offset_reset="earliest", processing_guarantee="exactly-once",
                  commit_interval=1.0, state_dir={state!r})
source = app.topic({topic!r}, value_deserializer="json")
out = app.topic({out!r}, value_serializer="json")

def keep(value, state):
    if "probe" not in value:
        state.set("p", value["payload"])

sdf = app.dataframe(source)
sdf = sdf.update(keep, stateful=True)
sdf = sdf.filter(lambda v: "probe" in v)
sdf.to_topic(out)
app.run()
"""


def produce(bootstrap: str, topic: str, start: int, n: int) -> None:
    producer = Producer({"bootstrap.servers": bootstrap, "linger.ms": 20})
    payload = "x" * PAYLOAD
    for i in range(start, start + n):
        value = b'{"payload": "' + payload.encode() + b'"}'
        while True:
            try:
                producer.produce(topic, value, f"k{i:09d}".encode())
                break
            except BufferError:
                producer.poll(0.1)
    assert producer.flush(120) == 0


def probe(bootstrap: str, topic: str) -> None:
    producer = Producer({"bootstrap.servers": bootstrap})
    producer.produce(topic, b'{"probe": 1}', b"probe")
    assert producer.flush(30) == 0


def end_offset(bootstrap: str, topic: str) -> int:
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": "bench-ends"})
    try:
        return int(consumer.get_watermark_offsets(TopicPartition(topic, 0), timeout=10)[1])
    finally:
        consumer.close()


def committed(bootstrap: str, group: str, topic: str) -> int:
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": group})
    try:
        [tp] = consumer.committed([TopicPartition(topic, 0)], timeout=10)
        return max(0, tp.offset)
    finally:
        consumer.close()


def run_until(
    cmd: list[str], bootstrap: str, group: str, topic: str, offset: int, timeout: float
) -> tuple[float, float]:
    """Start ``cmd``; the seconds until ``group`` committed ``offset`` on ``topic`` and the
    process's CPU seconds then; stop it (SIGTERM: the app closes as on a planned restart)."""
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    start = time.monotonic()
    try:
        while committed(bootstrap, group, topic) < offset:
            if proc.poll() is not None:
                err = proc.stderr.read().decode(errors="replace")[-2000:] if proc.stderr else ""
                raise RuntimeError(f"{cmd[:3]} exited {proc.returncode}: {err}")
            if time.monotonic() - start > timeout:
                raise RuntimeError(f"{group}: offset {offset} not committed in {timeout} s")
            time.sleep(0.1)
        return time.monotonic() - start, cpu_seconds(proc.pid)
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(max(60.0, timeout))
        except subprocess.TimeoutExpired:
            stop_process(proc)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--mb", type=int, default=100, help="state size (MB of payloads)")
    parser.add_argument(
        "--quix-python", default=str(Path(sys.prefix) / "quixstreams-env/bin/python")
    )
    parser.add_argument("--timeout", type=float, default=1800.0)
    parser.add_argument("--engines", default="bayou,quix")
    args = parser.parse_args()
    quix = Path(args.quix_python)
    n = args.mb * 1000
    with tempfile.TemporaryDirectory() as tmp:
        broker = BrokerProcess(Path(tmp) / "data", doors=()).start()
        bootstrap = broker.bootstrap
        try:
            admin = AdminClient({"bootstrap.servers": bootstrap})
            futures = admin.create_topics([NewTopic(t, 1) for t in ("state-in", "empty-in")])
            for future in futures.values():
                future.result(30)
            started = time.monotonic()
            produce(bootstrap, "state-in", 0, n)
            elapsed = time.monotonic() - started
            print(f"produced {n:,} records ({args.mb} MB) in {elapsed:.1f} s", flush=True)
            for engine in args.engines.split(","):
                if engine == "quix" and not quix.exists():
                    print(f"Quix Streams: no {quix} (make bench-streams creates it)")
                    continue
                measure(engine, Path(tmp), bootstrap, n, args, quix)
        finally:
            broker.stop(60)
    return 0


def measure(
    engine: str, tmp: Path, bootstrap: str, n: int, args: argparse.Namespace, quix: Path
) -> None:
    label = "bayou.streams" if engine == "bayou" else "Quix Streams"

    def command(group: str, topic: str) -> tuple[list[str], Path]:
        state = tmp / f"state-{group}"
        app_file = tmp / f"{group}.py"
        if engine == "bayou":
            app_file.write_text(
                BAYOU_APP.format(group=group, state=str(state), topic=topic, out=f"{group}-out")
            )
            return [
                sys.executable,
                "-m",
                "bayou",
                "streams",
                "run",
                str(app_file),
                "-b",
                bootstrap,
            ], state
        app_file.write_text(
            QUIX_APP.format(
                bootstrap=bootstrap, group=group, state=str(state), topic=topic, out=f"{group}-out"
            )
        )
        return [str(quix), "-P", str(app_file)], state

    group = f"{engine}-state"

    def until_end(cmd: list[str], group: str, topic: str) -> tuple[float, float]:
        """Run ``cmd`` until ``group`` committed ``topic`` to its end (another engine's
        probes are in the topics too)."""
        return run_until(cmd, bootstrap, group, topic, end_offset(bootstrap, topic), args.timeout)

    # baseline: an empty state, one probe
    base_cmd, _ = command(f"{engine}-empty", "empty-in")
    probe(bootstrap, "empty-in")
    baseline = until_end(base_cmd, f"{engine}-empty", "empty-in")
    cmd, state = command(group, "state-in")
    build = until_end(cmd, group, "state-in")
    print(
        f"{label:14} built {args.mb} MB of state in {build[0]:.1f} s;"
        f" an empty app's start {baseline[0]:.1f} s, {baseline[1]:.2f} CPU-s",
        flush=True,
    )
    probe(bootstrap, "state-in")  # the first probe: after a cold start
    shutil.rmtree(state, ignore_errors=True)
    cold = until_end(cmd, group, "state-in")
    probe(bootstrap, "state-in")  # the second: after a warm restart
    warm = until_end(cmd, group, "state-in")
    for kind, (seconds, cpu) in (("cold (changelog)", cold), ("warm (local)", warm)):
        recovery = max(seconds - baseline[0], 0.001)
        recovery_cpu = max(cpu - baseline[1], 0.001)
        print(
            f"{label:14} {kind:17} {seconds:6.1f} s to the probe, {cpu:6.2f} CPU-s;"
            f" recovery ≈ {recovery:5.1f} s ({args.mb / recovery:6.1f} MB/s),"
            f" {recovery_cpu:5.2f} CPU-s ({args.mb / recovery_cpu:6.1f} MB/CPU-s)",
            flush=True,
        )


if __name__ == "__main__":
    raise SystemExit(main())
