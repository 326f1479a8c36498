"""MQTT benchmark: Bayou's MQTT door next to mosquitto, same machine, same load generator.

The load generator is mosquitto's own C clients: ``mosquitto_pub -l`` processes (each sends
one PUBLISH per stdin line, 100-byte payloads) and ``mosquitto_sub -C N`` processes (each exits
after N messages).  Phases, each on a fresh topic:

* ``pub-qos0`` / ``pub-qos1``: P publishers send M messages in total; the rate is M divided
  by the time until every publisher has exited (QoS 1: every PUBACK received).
* ``fanout-qos0`` / ``fanout-qos1``: S subscribers on ``topic/#`` and P publishers; the rate is
  S*M deliveries divided by the time until every subscriber has its M messages.

Every phase also reports the broker's CPU over the phase, read from ``/proc`` (user + system
seconds of the broker process): ``cpu_s_per_M`` (CPU-seconds per million deliveries, or per
million publishes in the publish phases) and ``cpu_busy`` (CPU-seconds per wall second: near
1.0 the broker's one event loop is saturated, well below it the phase is bound by something
else — the clients, the in-flight window's round trips, or the machine: ``cpu_waited`` is the
share of the phase the broker's threads were runnable but waiting for a CPU; ``cpu_sys_share``
the kernel's part of the broker's CPU).

``mosquitto_pub -l`` disconnects once it has read its input and seen the PUBACK of the last
message's packet id; ids are 16 bits, so past 65,535 lines it stops at the first id that
matches, early and without an error.  Each publisher is therefore given at most
``PER_PUBLISHER`` messages (more processes when ``--messages`` asks for more); fan-out
phases count every delivery, so a short publisher shows there as an incomplete phase.

Brokers run one at a time, started on free loopback ports and stopped by PID.  Usage::

    .venv/bin/python -m bench.mqtt_bench                       # Bayou and mosquitto
    .venv/bin/python -m bench.mqtt_bench --messages 400000 --publishers 8 --subscribers 2
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
import uuid
from pathlib import Path

from bench.machine import proc_cpu_seconds, proc_wait_seconds
from tests.support.ports import free_port

HOST = "127.0.0.1"


def wait_port(port: int, proc: subprocess.Popen[bytes], timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"broker exited with {proc.returncode}")
        try:
            with socket.create_connection((HOST, port), 0.5):
                return
        except OSError:
            time.sleep(0.05)
    raise TimeoutError(f"nothing on port {port}")


def stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)


def start_broker(name: str, workdir: Path) -> tuple[subprocess.Popen[bytes], int]:
    port = free_port()
    log = open(workdir / f"{name}.log", "wb")  # noqa: SIM115 - handed to the child
    if name == "bayou":
        cmd = [
            sys.executable,
            "-m",
            "bayou",
            "serve",
            "--data-dir",
            str(workdir / "data"),
            "--host",
            HOST,
            "--kafka-port",
            str(free_port()),
            "--http-port",
            "0",
            "--amqp-port",
            "0",
            "--mqtt-port",
            str(port),
            "--log-level",
            "WARNING",
        ]
    else:
        conf = workdir / "mosquitto.conf"
        conf.write_text(f"listener {port} {HOST}\nallow_anonymous true\nmax_queued_messages 0\n")
        cmd = ["mosquitto", "-c", str(conf)]
    proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT)
    log.close()
    wait_port(port, proc)
    return proc, port


PER_PUBLISHER = 60_000  # below mosquitto_pub's 16-bit packet ids (see above)


def publisher_count(messages: int, asked: int) -> int:
    """Publishers for ``messages``: as asked, or more so none sends over PER_PUBLISHER."""
    return max(asked, -(-messages // PER_PUBLISHER))


def _publishers(
    port: int, topic: str, qos: int, messages: int, publishers: int
) -> list[subprocess.Popen[bytes]]:
    per = messages // publishers
    line = b"x" * 100 + b"\n"
    procs = []
    for i in range(publishers):
        p = subprocess.Popen(
            [
                "mosquitto_pub",
                "-h",
                HOST,
                "-p",
                str(port),
                "-q",
                str(qos),
                "-t",
                f"{topic}/dev{i}",
                "-l",
                "-i",
                f"bench-pub-{uuid.uuid4().hex[:8]}",
            ],
            stdin=subprocess.PIPE,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        procs.append(p)
    payload = line * per
    for p in procs:
        assert p.stdin is not None
        p.stdin.write(payload)
        p.stdin.close()
    return procs


def _sys_seconds(pid: int) -> float | None:
    """System (kernel) CPU seconds of ``pid`` so far, or None if gone."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    except OSError:
        return None
    return int(fields[12]) / os.sysconf("SC_CLK_TCK")


def _cpu(
    pid: int, before: tuple[float | None, float | None, float | None], seconds: float, count: int
) -> dict[str, float]:
    """The broker's CPU over a phase: per million messages and per wall second, and the
    share of the wall time its threads waited for a CPU (a busy machine, not the broker)."""
    cpu0, wait0, sys0 = before
    cpu1, wait1, sys1 = proc_cpu_seconds(pid), proc_wait_seconds(pid), _sys_seconds(pid)
    if cpu0 is None or cpu1 is None or not count:
        return {}
    used = cpu1 - cpu0
    row = {
        "cpu_s": round(used, 2),
        "cpu_s_per_M": round(used / count * 1e6, 2),
        "cpu_busy": round(used / seconds, 2),
    }
    if wait0 is not None and wait1 is not None:
        row["cpu_waited"] = round((wait1 - wait0) / seconds, 2)
    if sys0 is not None and sys1 is not None and used > 0:
        row["cpu_sys_share"] = round((sys1 - sys0) / used, 2)
    return row


def run_phase(
    pid: int,
    port: int,
    phase: str,
    messages: int,
    publishers: int,
    subscribers: int,
    workdir: Path,
    timeout_s: float,
) -> dict:
    qos = 1 if phase.endswith("qos1") else 0
    topic = f"bench{uuid.uuid4().hex[:8]}"
    publishers = publisher_count(messages, publishers)
    messages -= messages % publishers
    subs: list[tuple[subprocess.Popen[bytes], Path]] = []
    if phase.startswith("fanout"):
        for i in range(subscribers):
            out = workdir / f"{topic}-sub{i}.out"
            with open(out, "wb") as f:
                subs.append(
                    (
                        subprocess.Popen(
                            [
                                "stdbuf",
                                "-oL",
                                "mosquitto_sub",
                                "-h",
                                HOST,
                                "-p",
                                str(port),
                                "-q",
                                str(qos),
                                "-t",
                                f"{topic}/#",
                                "-C",
                                str(messages),
                                "-d",
                            ],
                            stdout=f,
                            stderr=subprocess.DEVNULL,
                        ),
                        out,
                    )
                )
        for _proc, out in subs:  # wait for each SUBACK (bounded)
            deadline = time.monotonic() + 30
            while b"SUBACK" not in out.read_bytes() and time.monotonic() < deadline:
                time.sleep(0.02)
    cpu0 = (proc_cpu_seconds(pid), proc_wait_seconds(pid), _sys_seconds(pid))
    start = time.monotonic()
    # the publishers' stdin is written inside the timing: the rate includes the generator
    procs = _publishers(port, topic, qos, messages, publishers)
    for p in procs:
        p.wait(timeout_s)
    pub_s = time.monotonic() - start
    if not subs:
        return {
            "phase": phase,
            "messages": messages,
            "seconds": round(pub_s, 3),
            "rate": round(messages / pub_s),
        } | _cpu(pid, cpu0, pub_s, messages)
    deadline = start + timeout_s
    complete = True
    for proc, _out in subs:
        try:
            proc.wait(max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            complete = False
            proc.kill()
            proc.wait(5)
    total_s = time.monotonic() - start
    cpu = _cpu(pid, cpu0, total_s, messages * len(subs))
    payload = b"x" * 100
    received = sum(
        sum(1 for line in out.read_bytes().splitlines() if line == payload) for _p, out in subs
    )
    row = {
        "phase": phase,
        "messages": messages,
        "deliveries": received,
        "expected": messages * len(subs),
        "seconds": round(total_s, 3),
        "rate": round(received / total_s),
    } | cpu
    if not complete:
        row["note"] = f"incomplete after {timeout_s:.0f} s: {received} of {messages * len(subs)}"
    return row


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--messages",
        type=int,
        default=200_000,
        help="messages per phase, split over the publishers (default 200000)",
    )
    parser.add_argument("--publishers", type=int, default=4, help="publisher processes (4)")
    parser.add_argument(
        "--subscribers", type=int, default=2, help="subscriber processes in the fan-out phases (2)"
    )
    parser.add_argument("--phases", default="pub-qos0,pub-qos1,fanout-qos0,fanout-qos1")
    parser.add_argument("--target", action="append", choices=["bayou", "mosquitto"])
    parser.add_argument(
        "--timeout", type=float, default=60.0, help="seconds a phase may take before it is cut (60)"
    )
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args(argv)
    for tool in ("mosquitto_pub", "mosquitto_sub", "stdbuf"):
        if shutil.which(tool) is None:
            print(f"{tool} is missing (apt-get install mosquitto-clients)", file=sys.stderr)
            return 2
    targets = args.target or ["bayou", "mosquitto"]
    if "mosquitto" in targets and shutil.which("mosquitto") is None:
        print("mosquitto is missing (apt-get install mosquitto)", file=sys.stderr)
        return 2
    results: dict[str, dict[str, dict]] = {}
    for target in targets:
        with tempfile.TemporaryDirectory(prefix=f"mqtt-bench-{target}-") as tmp:
            proc, port = start_broker(target, Path(tmp))
            try:
                for phase in args.phases.split(","):
                    row = run_phase(
                        proc.pid,
                        port,
                        phase,
                        args.messages,
                        args.publishers,
                        args.subscribers,
                        Path(tmp),
                        args.timeout,
                    )
                    results.setdefault(phase, {})[target] = row
                    print(
                        f"{target:10s} {phase:12s} {row['rate']:>10,} msg/s "
                        f"({row['seconds']} s) cpu {row.get('cpu_s_per_M', '-')} s/M "
                        f"busy {row.get('cpu_busy', '-')} waited {row.get('cpu_waited', '-')} "
                        f"sys {row.get('cpu_sys_share', '-')} "
                        f"{row.get('note', '')}",
                        flush=True,
                    )
            finally:
                stop(proc)
    print(
        "\nphase          bayou msg/s   mosquitto msg/s   bayou/mosquitto"
        "   bayou CPU-s/M   mosquitto CPU-s/M"
    )
    for phase, rows in results.items():
        b = rows.get("bayou", {}).get("rate")
        m = rows.get("mosquitto", {}).get("rate")
        ratio = f"{b / m:.2f}" if b and m else "-"
        bc = rows.get("bayou", {}).get("cpu_s_per_M", "-")
        mc = rows.get("mosquitto", {}).get("cpu_s_per_M", "-")
        print(f"{phase:12s} {b or '-':>13} {m or '-':>17} {ratio:>17} {bc:>15} {mc:>19}")
    if args.json:
        args.json.write_text(
            json.dumps(
                {
                    "load_generator": "mosquitto_pub -l / mosquitto_sub",
                    "args": vars(args) | {"json": str(args.json)},
                    "results": results,
                },
                indent=1,
            )
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
