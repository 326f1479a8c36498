"""Consumer-group benchmark phase: group consume throughput and failover time after kill -9.

Theory of operation
-------------------
One Bayou broker (started here on a free port with a temporary data directory, or an already
running one given with ``--bootstrap``), one topic of ``--partitions`` partitions, and
``--members`` confluent-kafka consumers in one group, each in its own child process
(``python -m bench.group_bench --member ...``) that reports JSON lines on stdout.

1. **Consume MB/s**: N messages of S bytes are produced first; then the members start and
   consume them all as a group.  Throughput = message-value bytes / (last message received -
   first partition assigned), so the group join itself is not counted (it is reported apart:
   time from the members' start to the first assignment).  Messages are counted in 50 ms
   windows, so the end time is up to 50 ms late (a conservative figure).
2. **Failover**: a paced producer keeps writing to every partition; once every member is
   consuming, one member is killed with SIGKILL.  Failover time = from the kill to the moment
   every partition it owned has delivered a message to a surviving member.  It is bounded
   below by the session timeout (``--session-timeout-ms``, default 6000, Kafka's minimum),
   since a killed classic member is only noticed when its session expires.

Results print as a table and go to ``bench/results/group-<timestamp>.json``.
Run ``python -m bench.group_bench --help`` from the repository root.
"""

from __future__ import annotations

import argparse
import json
import os
import queue
import signal
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path
from typing import Any

from tests.support.broker import BrokerProcess

REPO_ROOT = Path(__file__).resolve().parent.parent
RESULTS_DIR = Path(__file__).resolve().parent / "results"
MB = 1_000_000


# ----------------------------------------------------------------------------- member process


def member_main(bootstrap: str, topic: str, group: str, session_ms: int) -> None:
    """Consume as a group member; every 50 ms print what arrived: counts and partitions."""
    from confluent_kafka import Consumer

    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": group,
            "auto.offset.reset": "earliest",
            "session.timeout.ms": session_ms,
            "heartbeat.interval.ms": max(session_ms // 10, 100),
            "enable.auto.commit": True,
            "fetch.max.bytes": 8 * 1024 * 1024,
        }
    )

    def assigned(_c: Any, parts: Any) -> None:
        print(
            json.dumps({"assigned": sorted(tp.partition for tp in parts), "t": time.time()}),
            flush=True,
        )

    consumer.subscribe([topic], on_assign=assigned)
    count = nbytes = 0
    parts: set[int] = set()
    last = time.monotonic()
    while True:
        for msg in consumer.consume(1000, 0.05):
            if msg.error():
                continue
            count += 1
            nbytes += len(msg.value() or b"")
            parts.add(msg.partition())
        now = time.monotonic()
        if count and now - last >= 0.05:
            print(
                json.dumps({"n": count, "bytes": nbytes, "parts": sorted(parts), "t": time.time()}),
                flush=True,
            )
            count = nbytes = 0
            parts.clear()
            last = now


class Member:
    def __init__(self, bootstrap: str, topic: str, group: str, session_ms: int) -> None:
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "bench.group_bench",
                "--member",
                bootstrap,
                topic,
                group,
                str(session_ms),
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
            cwd=REPO_ROOT,
        )
        self.events: queue.Queue[dict[str, Any]] = queue.Queue()
        self.assigned: list[int] = []
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            event = json.loads(line)
            if "assigned" in event:
                self.assigned = event["assigned"]
            self.events.put(event)

    def kill9(self) -> None:
        if self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGKILL)
            self.proc.wait(10)


def drain(members: list[Member]) -> list[tuple[Member, dict[str, Any]]]:
    out = []
    for m in members:
        while True:
            try:
                out.append((m, m.events.get_nowait()))
            except queue.Empty:
                break
    return out


# ----------------------------------------------------------------------------- orchestration


def produce(bootstrap: str, topic: str, count: int, size: int, partitions: int) -> None:
    from confluent_kafka import Producer

    producer = Producer(
        {"bootstrap.servers": bootstrap, "linger.ms": 5, "batch.size": 1_000_000, "acks": "all"}
    )
    value = os.urandom(size)
    for i in range(count):
        while True:
            try:
                producer.produce(topic, value=value, partition=i % partitions)
                break
            except BufferError:
                producer.poll(0.01)
        if i % 1000 == 0:
            producer.poll(0)
    if producer.flush(60) != 0:
        raise RuntimeError("produce did not complete")


def paced_producer(
    bootstrap: str, topic: str, partitions: int, rate: int, stop: threading.Event
) -> None:
    from confluent_kafka import Producer

    producer = Producer({"bootstrap.servers": bootstrap, "linger.ms": 5})
    i = 0
    start = time.monotonic()
    while not stop.is_set():
        due = start + i / rate
        pause = due - time.monotonic()
        if pause > 0:
            time.sleep(min(pause, 0.01))
            continue
        producer.produce(topic, value=b"x" * 100, partition=i % partitions)
        producer.poll(0)
        i += 1
    producer.flush(10)


def run(args: argparse.Namespace) -> dict[str, Any]:
    from confluent_kafka.admin import AdminClient, NewTopic

    broker: BrokerProcess | None = None
    tmp: tempfile.TemporaryDirectory[str] | None = None
    bootstrap = args.bootstrap
    if bootstrap is None:
        tmp = tempfile.TemporaryDirectory(prefix="bayou-group-bench-")
        broker = BrokerProcess(
            Path(tmp.name) / "data",
            doors=(),
            env={"BAYOU_GROUP_INITIAL_REBALANCE_DELAY_MS": "500"},
        ).start()
        bootstrap = broker.bootstrap
    members: list[Member] = []
    try:
        admin = AdminClient({"bootstrap.servers": bootstrap})
        topic = f"group-bench-{uuid.uuid4().hex[:8]}"
        admin.create_topics([NewTopic(topic, args.partitions, 1)])[topic].result(30)
        produce(bootstrap, topic, args.messages, args.size, args.partitions)

        # Phase 1: consume throughput.
        group = f"bench-{uuid.uuid4().hex[:8]}"
        started = time.time()
        members = [
            Member(bootstrap, topic, group, args.session_timeout_ms) for _ in range(args.members)
        ]
        total = nbytes = 0
        first = last = 0.0
        deadline = time.monotonic() + args.timeout
        while total < args.messages:
            if time.monotonic() > deadline:
                raise RuntimeError(f"consumed {total} of {args.messages} before the timeout")
            for _m, ev in drain(members):
                if ev.get("assigned"):
                    first = min(first, ev["t"]) if first else ev["t"]
                if "n" in ev:
                    total += ev["n"]
                    nbytes += ev["bytes"]
                    last = max(last, ev["t"])
            time.sleep(0.02)
        consume_s = max(last - first, 1e-6)
        result: dict[str, Any] = {
            "members": args.members,
            "partitions": args.partitions,
            "messages": args.messages,
            "size": args.size,
            "consume_mb_s": nbytes / MB / consume_s,
            "consume_msgs_s": total / consume_s,
            "join_to_first_assignment_s": first - started,
            "session_timeout_ms": args.session_timeout_ms,
        }

        # Phase 2: failover after kill -9 of one member, under a steady produce load.
        stop = threading.Event()
        feeder = threading.Thread(
            target=paced_producer, args=(bootstrap, topic, args.partitions, args.rate, stop)
        )
        feeder.start()
        try:
            steady = time.monotonic() + 30
            while not all(m.assigned for m in members):
                if time.monotonic() > steady:
                    raise RuntimeError("members did not all get partitions")
                drain(members)
                time.sleep(0.05)
            time.sleep(1.0)
            drain(members)
            victim = members[0]
            orphaned = set(victim.assigned)
            killed_at = time.time()
            victim.kill9()
            survivors = members[1:]
            recovered: dict[int, float] = {}
            deadline = time.monotonic() + args.session_timeout_ms / 1000 + 60
            while len(recovered) < len(orphaned):
                if time.monotonic() > deadline:
                    raise RuntimeError(f"partitions {orphaned - set(recovered)} never resumed")
                for _m, ev in drain(survivors):
                    for p in ev.get("parts", ()):
                        if p in orphaned and p not in recovered and ev["t"] > killed_at:
                            recovered[p] = ev["t"]
                time.sleep(0.02)
            result["failover_s"] = max(recovered.values()) - killed_at
            result["failover_partitions"] = sorted(orphaned)
        finally:
            stop.set()
            feeder.join(15)
        return result
    finally:
        for m in members:
            m.kill9()
        if broker is not None:
            broker.stop()
        if tmp is not None:
            tmp.cleanup()


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["--member"]:
        member_main(argv[1], argv[2], argv[3], int(argv[4]))
        return 0
    parser = argparse.ArgumentParser(
        prog="python -m bench.group_bench",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--bootstrap", help="Use a running broker instead of starting one.")
    parser.add_argument("--members", type=int, default=4)
    parser.add_argument("--partitions", type=int, default=8)
    parser.add_argument("--messages", type=int, default=400_000)
    parser.add_argument("--size", type=int, default=1000, help="Message value bytes.")
    parser.add_argument(
        "--rate", type=int, default=2000, help="Paced msgs/s in the failover phase."
    )
    parser.add_argument("--session-timeout-ms", type=int, default=6000)
    parser.add_argument("--timeout", type=float, default=300.0)
    args = parser.parse_args(argv)
    result = run(args)
    print(
        f"group phase: {args.members} consumers, {args.partitions} partitions, "
        f"{args.messages} x {args.size} B"
    )
    print(
        f"  consume            {result['consume_mb_s']:8.1f} MB/s "
        f"{result['consume_msgs_s']:10.0f} msgs/s"
    )
    print(f"  join → assignment  {result['join_to_first_assignment_s']:8.2f} s")
    print(
        f"  failover (kill -9) {result['failover_s']:8.2f} s "
        f"(session timeout {args.session_timeout_ms} ms)"
    )
    RESULTS_DIR.mkdir(exist_ok=True)
    out = RESULTS_DIR / f"group-{time.strftime('%Y%m%d-%H%M%S')}.json"
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"  results: {out.relative_to(REPO_ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
