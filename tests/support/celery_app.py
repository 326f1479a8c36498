"""The Celery application the Celery acceptance tests run: default settings (task protocol
2, remote control on, the ``rpc://`` result backend) against the broker named by
``BAYOU_AMQP_URL``.  Workers started by the tests import it with ``celery -A``."""

from __future__ import annotations

import os
import time
from pathlib import Path

from celery import Celery

app = Celery(
    "bayou_acceptance",
    broker=os.environ.get("BAYOU_AMQP_URL", "amqp://guest:guest@127.0.0.1:5672//"),
    backend="rpc://",
)
# the only setting changed: keep retrying the first connection without the warning that
# Celery 5 prints when this is left unset
app.conf.broker_connection_retry_on_startup = True


@app.task
def add(x: int, y: int) -> int:
    return x + y


@app.task
def describe() -> dict[str, object]:
    """What the worker saw of the task's own request (types included)."""
    request = describe.request
    return {
        "retries": request.retries,
        "timelimit": list(request.timelimit or ()),
        "eta": request.eta,
        "pid": os.getpid(),
    }


@app.task(acks_late=True)
def slow_once(marker_dir: str) -> int:
    """Acknowledged only when done (``acks_late``): the first worker to run it records its
    PID and then works for a minute (the test kills it meanwhile); a worker that finds an
    earlier attempt by another process finishes at once.  Returns the PID that finished."""
    directory = Path(marker_dir)
    mine = directory / f"attempt-{os.getpid()}"
    earlier = [p for p in directory.glob("attempt-*") if p != mine]
    mine.touch()
    if not earlier:
        time.sleep(60)
    return os.getpid()
