"""Once serving, the start-up heap is frozen out of the garbage collector's reach.

Every object alive when the broker starts serving (modules, classes, recovered state) is
moved to the permanent generation, so that no later collection traverses it: the older
generations' collections would otherwise pause the event loop for milliseconds, and every
request waiting at that moment would pay.  Run in a child process: freezing is for the
life of the process.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

CHILD = """
import asyncio, gc, os, signal, sys
from bayou.app import serve
from bayou.broker_config import BrokerConfig

config = BrokerConfig.load(flags={
    "data_dir": sys.argv[1], "host": "127.0.0.1", "kafka_port": 0,
    "http_port": 0, "mqtt_port": 0, "amqp_port": 0, "storage": "memory://",
})
seen = []

async def main():
    task = asyncio.create_task(serve(config))
    for _ in range(600):  # bounded: until serving (or 60 s)
        await asyncio.sleep(0.1)
        if gc.get_freeze_count():
            break
    seen.append(gc.get_freeze_count())
    os.kill(os.getpid(), signal.SIGTERM)  # serve() stops on SIGTERM
    await task

asyncio.run(main())
print("FROZEN", seen[0], flush=True)
"""


def test_serving_broker_has_frozen_its_start_up_heap(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-c", CHILD, str(tmp_path / "data")],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    frozen = int(done.stdout.split("FROZEN", 1)[1].split()[0])
    assert frozen > 10_000  # the interpreter, bayou's modules and the started broker
