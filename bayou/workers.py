"""``bayou serve --workers N``: N broker processes on one host, one supervisor.

Theory of operation
-------------------
One Python process runs one event loop on one core.  To use a machine's other cores,
``--workers N`` makes ``bayou serve`` a **supervisor** that forks N brokers and does
nothing else: the workers are the brokers of a cluster on the shared engine
(``docs/design/cluster.md``: leases, partition leadership, coordinators), exactly as if
they ran on N hosts.  So only a shared engine — ``postgres://`` or ``s3://`` — can be
served by several workers; ``local`` and ``memory://`` are refused at start with the reason
(one process owns a data directory: see *One machine, several cores* in ``cluster.md``).

Worker ``i`` (0 … N-1) is the broker the options describe, with:

- node id ``--node-id + i`` (each worker holds its own lease);
- the Kafka listener on ``--kafka-port + i`` (and ``--kafka-tls-port + i``): Kafka
  clients must reach a partition's leader, so every worker advertises a port of its own;
  clients bootstrap from the first and learn the others from Metadata;
- the HTTP listener on ``--http-port + i`` (and ``--http-tls-port + i``): a REST consumer
  instance, a console login and ``/metrics`` belong to one process, so each worker is
  addressed by its own port (the first is the one a single broker would have);
- the MQTT and AMQP listeners (and their TLS ports) **shared**: every worker binds the same
  port with ``SO_REUSEPORT`` and the kernel spreads the connections over them — a session
  lives on its connection, and the cluster serves any partition on any broker;
- its own ``--data-dir``/``worker-i`` (the engines' read cache, SQL views' state);
- SQL views (``--views serve``) run in worker 0 only.

The supervisor forks the workers before it starts any thread or event loop, waits on their
exit sentinels, and **restarts a worker that died** (whatever killed it) after a pause —
1 s, doubled while the worker keeps dying within ``QUICK_EXIT_S`` of its start, up to 30 s;
a worker that died that quickly ``GIVE_UP_AFTER`` times in a row (a port taken, the
database refusing us) stops everything with exit code 1.  A restarted worker takes its
node id back once the old lease lapsed (``cluster.md``).  SIGTERM or SIGINT stops all: each
worker gets SIGTERM and stops as a broker does (doors, lease, engine), the supervisor
waits ``STOP_WAIT_S`` and kills what is left, then exits 0.  A supervisor that is killed
outright takes its workers with it: each asked the kernel for SIGTERM when its parent dies
(``PR_SET_PDEATHSIG``), so none is left holding the ports and leases of the next start.
"""

from __future__ import annotations

import ctypes
import logging
import multiprocessing
import multiprocessing.connection
import os
import signal
import time
from dataclasses import dataclass, replace
from multiprocessing.process import BaseProcess
from types import FrameType

from bayou.broker_config import BrokerConfig
from bayou.errors import InvalidConfig

log = logging.getLogger("bayou.workers")

QUICK_EXIT_S = 10.0  # a worker dying sooner than this after its start "failed to start"
GIVE_UP_AFTER = 5  # consecutive quick deaths of one worker before the supervisor gives up
FIRST_PAUSE_S = 1.0
MAX_PAUSE_S = 30.0
STOP_WAIT_S = 60.0
PR_SET_PDEATHSIG = 1  # prctl(2)


def shared_engine(config: BrokerConfig) -> bool:
    return config.storage.strip().startswith(("postgres://", "postgresql://", "s3://"))


def worker_config(config: BrokerConfig, index: int) -> BrokerConfig:
    """The options of worker ``index`` (see the module docstring)."""

    def shifted(port: int) -> int:
        return port + index if port else 0

    return replace(
        config,
        workers=1,
        node_id=config.node_id + index,
        data_dir=config.data_dir / f"worker-{index}",
        views=config.views if index == 0 else "workers",
        kafka=replace(
            config.kafka, port=shifted(config.kafka.port), tls_port=shifted(config.kafka.tls_port)
        ),
        http=replace(
            config.http, port=shifted(config.http.port), tls_port=shifted(config.http.tls_port)
        ),
    )


def check_workers(config: BrokerConfig) -> None:
    """Refuse, in one sentence, what N workers cannot serve."""
    n = config.workers
    if n == 1:
        return
    if not shared_engine(config):
        raise InvalidConfig(
            f"--workers {n} needs a shared engine (--storage postgres://… or s3://…): the "
            f"{config.storage!r} engine's data is one process's, so its brokers cannot share it; "
            "run one broker per data directory, or put the data in PostgreSQL "
            "(docs/design/cluster.md)"
        )
    tls = config.tls.cert is not None
    ranges = {
        "--kafka-port": config.kafka.port,
        "--kafka-tls-port": config.kafka.tls_port if tls else 0,
        "--http-port": config.http.port,
        "--http-tls-port": config.http.tls_port if tls else 0,
    }
    taken: dict[int, str] = {}
    for name, base in ranges.items():
        if not base:
            continue
        if base + n - 1 > 65535:
            raise InvalidConfig(f"--workers {n} needs ports {base}-{base + n - 1} for {name}")
        for port in range(base, base + n):
            if port in taken:
                raise InvalidConfig(
                    f"--workers {n} gives each worker {name} + its index, which meets "
                    f"{taken[port]} at port {port}: choose ports {n} apart"
                )
            taken[port] = name
    shared = {
        "--mqtt-port": config.mqtt.port,
        "--mqtt-tls-port": config.mqtt.tls_port if tls else 0,
        "--amqp-port": config.amqp.port,
        "--amqp-tls-port": config.amqp.tls_port if tls else 0,
    }
    for name, port in shared.items():
        if port and port in taken:
            raise InvalidConfig(
                f"{name} {port} is also {taken[port]} of a worker: choose ports {n} apart"
            )


def _end_with_parent(supervisor: int) -> None:
    """Have the kernel send this process SIGTERM when the supervisor dies (kill -9 included),
    so that no worker outlives it holding its ports and lease (Linux; elsewhere a no-op)."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
    except (OSError, AttributeError):
        return
    if os.getppid() != supervisor:  # it died before the request took effect
        os.kill(os.getpid(), signal.SIGTERM)


def _worker_main(config: BrokerConfig, supervisor: int) -> None:
    """A forked worker: the supervisor's signal handlers off, then an ordinary broker."""
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    _end_with_parent(supervisor)
    from bayou.app import run

    run(config, reuse_port=True)


@dataclass
class Worker:
    index: int
    config: BrokerConfig
    process: BaseProcess | None = None
    started: float = 0.0
    quick_exits: int = 0
    restart_at: float | None = None


class Supervisor:
    """Starts the workers, restarts the dead, stops all on SIGTERM/SIGINT."""

    def __init__(self, config: BrokerConfig) -> None:
        check_workers(config)
        self.workers = [Worker(i, worker_config(config, i)) for i in range(config.workers)]
        self._context = multiprocessing.get_context("fork")
        self._stopping = False
        self.exit_code = 0

    def _on_signal(self, signum: int, frame: FrameType | None) -> None:
        self._stopping = True

    def _start(self, worker: Worker) -> None:
        process = self._context.Process(
            target=_worker_main,
            args=(worker.config, os.getpid()),
            name=f"bayou-worker-{worker.index}",
        )
        process.start()
        worker.process, worker.started, worker.restart_at = process, time.monotonic(), None
        log.info(
            "worker %d started: pid %d, node id %d, kafka port %d",
            worker.index,
            process.pid,
            worker.config.node_id,
            worker.config.kafka.port,
        )

    def _reap(self, worker: Worker) -> None:
        """A worker's process ended: plan its restart (or give up)."""
        assert worker.process is not None
        worker.process.join(5)  # its sentinel can be readable a moment before it is reapable
        code = worker.process.exitcode
        lived = time.monotonic() - worker.started
        worker.process.close()
        worker.process = None
        worker.quick_exits = worker.quick_exits + 1 if lived < QUICK_EXIT_S else 0
        if worker.quick_exits >= GIVE_UP_AFTER:
            log.error(
                "worker %d exited (code %s) %d times within %.0f s of its start: stopping",
                worker.index,
                code,
                worker.quick_exits,
                QUICK_EXIT_S,
            )
            self._stopping, self.exit_code = True, 1
            return
        pause = min(MAX_PAUSE_S, FIRST_PAUSE_S * 2 ** max(0, worker.quick_exits - 1))
        log.warning(
            "worker %d (node id %d) exited with code %s after %.1f s: restarting in %.0f s",
            worker.index,
            worker.config.node_id,
            code,
            lived,
            pause,
        )
        worker.restart_at = time.monotonic() + pause

    def run(self) -> int:
        """Serve until SIGTERM/SIGINT (or until a worker cannot start); the exit code."""
        previous = {
            sig: signal.signal(sig, self._on_signal) for sig in (signal.SIGTERM, signal.SIGINT)
        }
        try:
            for worker in self.workers:
                self._start(worker)
            while not self._stopping:
                running = {w.process.sentinel: w for w in self.workers if w.process is not None}
                waits = [w.restart_at - time.monotonic() for w in self.workers if w.restart_at]
                timeout = max(0.0, min([0.5, *waits]))
                for sentinel in multiprocessing.connection.wait(list(running), timeout):
                    self._reap(running[sentinel])  # type: ignore[index]
                now = time.monotonic()
                for worker in self.workers:
                    due = worker.restart_at is not None and now >= worker.restart_at
                    if due and not self._stopping:
                        self._start(worker)
            self._stop_all()
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)
        return self.exit_code

    def _stop_all(self) -> None:
        live = [w.process for w in self.workers if w.process is not None]
        log.info("stopping %d workers", len(live))
        for process in live:
            if process.pid is not None and process.exitcode is None:
                os.kill(process.pid, signal.SIGTERM)
        deadline = time.monotonic() + STOP_WAIT_S
        for process in live:
            process.join(max(0.0, deadline - time.monotonic()))
            if process.exitcode is None:
                log.error("worker pid %s did not stop in %.0f s: killed", process.pid, STOP_WAIT_S)
                process.kill()
                process.join(5)
        log.info("workers stopped")


def supervise(config: BrokerConfig) -> int:
    """Blocking entry point of ``bayou serve --workers N`` (N > 1)."""
    return Supervisor(config).run()
