"""A confluent-kafka group member in its own process, so a test can kill -9 it.

``python -m tests.support.group_member BOOTSTRAP TOPIC CONFIG_JSON`` subscribes (eager
assignors) and prints one JSON line per event on stdout: ``{"assigned": [[topic, p], ...]}``
after each assignment (``[]`` on revocation) and ``{"m": [p, offset]}`` per message.  It
runs until killed.
"""

from __future__ import annotations

import json
import sys
from typing import Any

from confluent_kafka import Consumer


def main() -> None:
    bootstrap, topic, raw = sys.argv[1], sys.argv[2], sys.argv[3]
    config: dict[str, Any] = {"bootstrap.servers": bootstrap, **json.loads(raw)}
    consumer = Consumer(config)

    def assigned(_c: Any, partitions: Any) -> None:
        owned = sorted([tp.topic, tp.partition] for tp in partitions)
        print(json.dumps({"assigned": owned}), flush=True)

    def revoked(_c: Any, _partitions: Any) -> None:
        print(json.dumps({"assigned": []}), flush=True)

    consumer.subscribe([topic], on_assign=assigned, on_revoke=revoked, on_lost=revoked)
    while True:
        msg = consumer.poll(0.2)
        if msg is None or msg.error():
            continue
        print(json.dumps({"m": [msg.partition(), msg.offset()]}), flush=True)


if __name__ == "__main__":
    main()
