"""The AMQP topology as a running broker's local engine keeps it, read from its files.

The door keeps exchanges, queues and bindings in the state log ``__amqp_topology``
(``DATA/internal/__amqp_topology/0/``): one keyed entry each, a tombstone when one goes.
``topology(data_dir)`` reads the segment files as they are (a batch still being written is
skipped) and returns what is alive, by kind: ``{"exchange": [...], "queue": [...],
"binding": [...]}`` (each the entry's JSON value)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from bayou.gateways.amqp.registry_log import LOG_NAME
from bayou.protocol.kafka.records import iter_batches, iter_records


def entries(data_dir: Path) -> dict[bytes, bytes]:
    """The last value of every live key, in the order keys were first written."""
    state: dict[bytes, bytes] = {}
    for segment in sorted((data_dir / "internal" / LOG_NAME / "0").glob("*.log")):
        view = memoryview(segment.read_bytes())
        for pos, header in iter_batches(view):
            if header.is_control:
                continue
            for record in iter_records(view[pos : pos + header.size]):
                if record.key is None:
                    continue
                if record.value is None:
                    state.pop(record.key, None)
                else:
                    state[record.key] = record.value
    return state


def topology(data_dir: Path) -> dict[str, list[dict[str, Any]]]:
    out: dict[str, list[dict[str, Any]]] = {"exchange": [], "queue": [], "binding": []}
    for key, value in entries(data_dir).items():
        out[json.loads(key)[0]].append(json.loads(value))
    return out
