"""Stream processing: records per CPU-second for a windowed average and a windowed count
distinct, Bayou's ``bayou.streams`` beside Quix Streams, same broker, same data.

    .venv/bin/python -m bench.streams_bench [--records 200000] [--quix-python PATH]

One Bayou broker is started; N JSON records ``{"device", "temp", "user"}`` (100 devices,
1000 users, keyed by device, event times 10 ms apart) are produced to one partition. Each
engine then runs each aggregation as a separate process from the beginning of the topic,
exactly-once, committing every second, per key over 10-second tumbling windows (Bayou:
``.window(tumbling(seconds=10)).agg(avg("temp"))`` / ``count_distinct("user")``, a
HyperLogLog; Quix: ``.tumbling_window(10000).mean("temp").final()`` / a ``reduce`` into the
set of users, exact, since Quix has no sketch). Neither repartitions (the records are keyed by
device already). The process's CPU time is sampled from ``/proc`` when its group's first
commit is seen (start-up done) and when the committed offset reaches N: the rate is the
records between the two samples over the CPU seconds between them. Quix runs from the
virtual environment ``--quix-python`` (default ``.venv/quixstreams-env``, the one the
transactions tests make).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

from confluent_kafka import Consumer, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic  # type: ignore[attr-defined]

from bench.peers import stop_process
from tests.support.broker import BrokerProcess

T0 = 1_767_225_600_000
TOPIC = "readings"
HZ = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / HZ  # utime + stime


def produce(bootstrap: str, n: int) -> None:
    admin = AdminClient({"bootstrap.servers": bootstrap})
    for future in admin.create_topics([NewTopic(TOPIC, 1)]).values():
        future.result(30)
    producer = Producer({"bootstrap.servers": bootstrap, "linger.ms": 20})
    for i in range(n):
        device = f"d{i % 100}"
        value = {"device": device, "temp": 20 + (i * 7919 % 1000) / 100, "user": i * 31 % 1000}
        while True:
            try:
                producer.produce(
                    TOPIC, json.dumps(value).encode(), device.encode(), timestamp=T0 + i * 10
                )
                break
            except BufferError:
                producer.poll(0.1)
    assert producer.flush(60) == 0


def committed(bootstrap: str, group: str) -> int:
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": group})
    try:
        [tp] = consumer.committed([TopicPartition(TOPIC, 0)], timeout=10)
        return max(0, tp.offset)
    finally:
        consumer.close()


BAYOU_APP = """
from bayou.streams import App, avg, count_distinct, tumbling
app = App({group!r}, commit_interval_s=1.0, state_dir={state!r})
(app.stream({topic!r}).window(tumbling(seconds=10)).agg({agg}).to({out!r}))
"""

QUIX_APP = """
from quixstreams import Application
app = Application(broker_address={bootstrap!r}, consumer_group={group!r},
                  auto_offset_reset="earliest", processing_guarantee="exactly-once",
                  commit_interval=1.0, state_dir={state!r})
source = app.topic({topic!r}, value_deserializer="json")
out = app.topic({out!r}, value_serializer="json")
sdf = app.dataframe(source)
{body}
sdf.to_topic(out)
app.run()
"""
QUIX_AVG = 'sdf = sdf.apply(lambda v: v["temp"]).tumbling_window(10_000).mean().final()'
QUIX_DISTINCT = """
def add(users, value):
    users[str(value["user"])] = 1
    return users
sdf = sdf.tumbling_window(10_000).reduce(add, lambda v: {str(v["user"]): 1}).final()
sdf = sdf.apply(lambda w: {"start": w["start"], "end": w["end"], "users": len(w["value"])})
"""


def run_one(cmd: list[str], bootstrap: str, group: str, n: int, timeout: float) -> dict[str, float]:
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    start = time.monotonic()
    first: tuple[int, float, float] | None = None
    try:
        while True:
            if proc.poll() is not None:
                err = proc.stderr.read().decode(errors="replace")[-2000:] if proc.stderr else ""
                raise RuntimeError(f"{cmd[:3]} exited {proc.returncode}: {err}")
            if time.monotonic() - start > timeout:
                raise RuntimeError(f"{group}: not done in {timeout} s")
            offset = committed(bootstrap, group)
            now_cpu, now = cpu_seconds(proc.pid), time.monotonic()
            if first is None and offset > 0:
                first = (offset, now_cpu, now)
            if offset >= n and first is not None:
                records = n - first[0]
                cpu = now_cpu - first[1]
                return {
                    "records": records,
                    "cpu_s": cpu,
                    "per_cpu_s": records / cpu if cpu > 0 else float("inf"),
                    "wall_s": now - first[2],
                }
            time.sleep(0.2)
    finally:
        stop_process(proc)  # type: ignore[arg-type]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--records", type=int, default=200_000)
    parser.add_argument(
        "--quix-python", default=str(Path(sys.prefix) / "quixstreams-env/bin/python")
    )
    parser.add_argument("--timeout", type=float, default=600.0)
    args = parser.parse_args()
    quix = Path(args.quix_python)
    with tempfile.TemporaryDirectory() as tmp:
        broker = BrokerProcess(Path(tmp) / "data", doors=()).start()
        bootstrap = broker.bootstrap
        try:
            produce(bootstrap, args.records)
            rows = []
            for agg_name, bayou_agg, quix_body in (
                ("windowed avg", 'avg("temp")', QUIX_AVG),
                ("count distinct", 'count_distinct("user")', QUIX_DISTINCT),
            ):
                engines = [("bayou.streams", "bayou")]
                if quix.exists():
                    engines.append(("Quix Streams", "quix"))
                for label, engine in engines:
                    group = f"{engine}-{agg_name.replace(' ', '-')}"
                    state = f"{tmp}/state-{group}"
                    app_file = Path(tmp) / f"{group}.py"
                    if engine == "bayou":
                        app_file.write_text(
                            BAYOU_APP.format(
                                group=group,
                                state=state,
                                topic=TOPIC,
                                agg=bayou_agg,
                                out=f"{group}-out",
                            )
                        )
                        cmd = [
                            sys.executable,
                            "-m",
                            "bayou",
                            "streams",
                            "run",
                            str(app_file),
                            "-b",
                            bootstrap,
                        ]
                    else:
                        app_file.write_text(
                            QUIX_APP.format(
                                bootstrap=bootstrap,
                                group=group,
                                state=state,
                                topic=TOPIC,
                                out=f"{group}-out",
                                body=textwrap.dedent(quix_body),
                            )
                        )
                        cmd = [str(quix), "-P", str(app_file)]
                    result = run_one(cmd, bootstrap, group, args.records, args.timeout)
                    rows.append((agg_name, label, result))
                    print(
                        f"{agg_name:15} {label:14} {result['per_cpu_s']:>10,.0f} records/CPU-s"
                        f"  ({result['records']:,} records, {result['cpu_s']:.2f} CPU-s,"
                        f" {result['wall_s']:.2f} s wall)",
                        flush=True,
                    )
        finally:
            broker.stop(60)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
