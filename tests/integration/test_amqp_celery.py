"""Celery 5 with its default settings (task protocol 2, remote control, the ``rpc://`` result
backend) on Bayou's AMQP door: real ``celery worker`` processes, started and stopped by PID.

Only the worker pool is chosen (``--pool=solo``: the worker's own PID runs the tasks, so
killing it kills the task).  The kill test's task is ``acks_late=True``, as Celery users set
it when a task must survive its worker: acknowledged when done, so a worker that dies mid-task
leaves it unacknowledged and the broker gives it to the other worker.
"""

from __future__ import annotations

import re
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from celery import Celery
from confluent_kafka.admin import AdminClient

from bayou.gateways.amqp.names import topic_for
from tests.support.amqp import connect, kafka_read, unique
from tests.support.broker import BrokerProcess
from tests.support.celery_worker import (
    REPO,
    CeleryWorker,
    amqp_url,
    celery_command,
    celery_env,
)
from tests.support.wait import wait_until

TASKS = 500
RESULT_S = 60.0


@pytest.fixture(scope="module")
def celery_client(shared_broker: BrokerProcess) -> Iterator[Celery]:
    from tests.support import celery_app

    app = celery_app.app
    app.conf.broker_url = amqp_url(shared_broker)
    try:
        yield app
    finally:
        consumer = app.backend.result_consumer
        if getattr(consumer, "_consumer", None) is not None:
            consumer.stop()
        app.close()


@pytest.fixture(scope="module")
def workers(
    shared_broker: BrokerProcess, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[list[CeleryWorker]]:
    logs = tmp_path_factory.mktemp("celery")
    pair = [CeleryWorker(shared_broker, name, logs) for name in ("alpha", "beta")]
    try:
        for worker in pair:
            worker.wait_ready()
        yield pair
    finally:
        for worker in pair:
            worker.stop()


def _topics(broker: BrokerProcess) -> set[str]:
    admin = AdminClient({"bootstrap.servers": broker.bootstrap})
    return set(admin.list_topics(timeout=10).topics)


def test_500_tasks_every_result_returned(
    celery_client: Celery, workers: list[CeleryWorker]
) -> None:
    from tests.support.celery_app import add, describe

    results = [add.delay(i, 1000) for i in range(TASKS)]
    assert [r.get(timeout=RESULT_S) for r in results] == [i + 1000 for i in range(TASKS)]
    # the task message's headers reached the worker with their types (protocol 2)
    seen = describe.delay().get(timeout=RESULT_S)
    assert seen["retries"] == 0 and seen["timelimit"] == [None, None] and seen["eta"] is None
    assert seen["pid"] in {w.pid for w in workers}


def test_inspect_ping_is_answered_and_reply_queues_go(
    shared_broker: BrokerProcess, workers: list[CeleryWorker]
) -> None:
    done = celery_command(shared_broker, "inspect", "ping", "--timeout", "3")
    assert done.returncode == 0, done.stdout + done.stderr
    for worker in workers:
        assert re.search(rf"{worker.name}@\S+: OK\s+pong", done.stdout), done.stdout
    assert "2 nodes online" in done.stdout
    # each worker's own mailbox queue has its (escaped) topic; inspect's reply queue went
    topics = _topics(shared_broker)
    assert {t for t in topics if t.startswith("amqp--alpha-40")}
    wait_until(
        "inspect's reply queue deleted",
        lambda: not any(t.endswith(".reply.celery.pidbox") for t in _topics(shared_broker)),
    )


_RPC_CLIENT = """
from tests.support.celery_app import add, app
print(add.delay(20, 22).get(timeout=60), app.backend.oid)
"""


def test_rpc_reply_queues_do_not_pile_up(
    shared_broker: BrokerProcess, workers: list[CeleryWorker]
) -> None:
    oids = []
    for _ in range(3):
        done = subprocess.run(
            [sys.executable, "-c", _RPC_CLIENT],
            cwd=REPO,
            env=celery_env(shared_broker),
            capture_output=True,
            text=True,
            timeout=90,
            check=False,
        )
        assert done.returncode == 0, done.stderr
        answer, oid = done.stdout.split()
        assert answer == "42"
        oids.append(oid)
    wait_until(
        "the clients' reply queues deleted",
        lambda: not {topic_for(oid) for oid in oids} & _topics(shared_broker),
    )


def test_celery_purge(shared_broker: BrokerProcess, celery_client: Celery) -> None:
    from tests.support.celery_app import add

    queue = unique("purge-tasks")  # no worker consumes it
    for i in range(5):
        add.apply_async((i, i), queue=queue)
    done = celery_command(shared_broker, "purge", "-f", "-Q", queue)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "Purged 5 messages from 1 known task queue" in done.stdout, done.stdout
    conn = connect(shared_broker)
    assert conn.channel().queue_declare(queue, passive=True).method.message_count == 0
    conn.close()
    assert len(kafka_read(shared_broker, queue, 1, 5)) == 5  # nothing deleted from the log


def test_a_worker_killed_mid_task_and_the_other_runs_it(
    shared_broker: BrokerProcess,
    celery_client: Celery,
    tmp_path: Path,
) -> None:
    from tests.support.celery_app import slow_once

    queue = unique("kill-q")
    pair = [
        CeleryWorker(shared_broker, name, tmp_path, queues=queue) for name in ("first", "second")
    ]
    try:
        for worker in pair:
            worker.wait_ready()
        result = slow_once.apply_async((str(tmp_path),), queue=queue)
        wait_until("a worker started the task", lambda: any(tmp_path.glob("attempt-*")))
        (attempt,) = tmp_path.glob("attempt-*")
        victim = next(w for w in pair if attempt.name == f"attempt-{w.pid}")
        survivor = next(w for w in pair if w is not victim)
        victim.kill()  # SIGKILL mid-task: the task was never acknowledged
        started = time.monotonic()
        assert result.get(timeout=RESULT_S) == survivor.pid
        assert time.monotonic() - started < 30  # not the minute the first attempt sleeps
    finally:
        for worker in pair:
            worker.stop()
