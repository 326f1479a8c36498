"""Exchanges, queues and bindings declared by AMQP clients, kept in the data directory.

Theory of operation
-------------------
Kafka topics are the queues (queue ``Q`` is topic ``names.topic_for(Q)``, recorded beside
each queue in the document for Kafka users); this registry only adds what AMQP has and
Kafka lacks: named exchanges with a type, the bindings from exchanges to queues, and each
declared queue's flags (a durable named queue is consumed as a consumer group).  Every topic
is implicitly also an exchange (of type ``direct`` unless declared otherwise) whose own
messages go to that topic.

The state is one small JSON document, ``DATA/amqp/registry.json``, rewritten whole after
each change.  Changes are made in memory on the event loop and then made durable by
``persist()``, which serialises the writes: one save at a time (an ``asyncio.Lock``), each to
a temporary file with a unique name in the same directory, fsynced, renamed over the
document, and the directory fsynced — in a worker thread, so the loop never waits on the
disk.  A caller that arrives while a save runs waits for it and then saves once for
everything changed meanwhile (its own change included), so a burst of declarations costs a
few writes, not one each, and no client ever sees another's write half done.  A crash
leaves the old or the new document (and perhaps a stray temporary file, removed on load).
Non-durable exchanges, and bindings from them, live in memory only, as in RabbitMQ.

Routing (``route``) is pure: direct compares the binding key, fanout takes every binding,
topic matches ``*`` (one word) and ``#`` (zero or more words) over dot-separated words, and
headers matches the binding's arguments against the message's headers (``x-match`` ``all``
by default, or ``any``).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bayou.gateways.amqp.names import topic_for
from bayou.storage.files import fsync_dir

TEMP_PREFIX = "registry."
TEMP_SUFFIX = ".tmp"
EXCHANGE_TYPES = frozenset({"direct", "fanout", "topic", "headers"})
BUILTIN = {
    "amq.direct": "direct",
    "amq.fanout": "fanout",
    "amq.topic": "topic",
    "amq.headers": "headers",
    "amq.match": "headers",
}


@dataclass
class Exchange:
    name: str
    type: str
    durable: bool = True
    auto_delete: bool = False
    internal: bool = False
    arguments: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Binding:
    exchange: str
    queue: str
    routing_key: str
    arguments: tuple[tuple[str, Any], ...] = ()


@dataclass
class QueueInfo:
    name: str
    durable: bool = False
    exclusive: bool = False
    auto_delete: bool = False
    arguments: dict[str, Any] = field(default_factory=dict)
    created_topic: bool = False  # its topic was created by an AMQP declaration


def _plain(value: Any) -> Any:
    """A JSON-storable copy of a field-table value."""
    if value is None or isinstance(value, bool | int | float | str):
        return value
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    if isinstance(value, bytes | bytearray):
        return bytes(value).decode(errors="replace")
    return str(value)


def _hashable(value: Any) -> Any:
    if isinstance(value, dict):
        return tuple(sorted((k, _hashable(v)) for k, v in value.items()))
    if isinstance(value, list):
        return tuple(_hashable(v) for v in value)
    return value


class Registry:
    def __init__(self, data_dir: Path) -> None:
        self.path = data_dir / "amqp" / "registry.json"
        self.exchanges: dict[str, Exchange] = {
            name: Exchange(name, kind) for name, kind in BUILTIN.items()
        }
        self.queues: dict[str, QueueInfo] = {}
        self.bindings: set[Binding] = set()
        self._changes = 0  # persist() calls so far
        self._saved = 0  # the last call whose changes are on disk
        self._save_lock = asyncio.Lock()

    # ------------------------------------------------------------------ persistence

    def load(self) -> None:
        """Read the document (blocking: run it in a worker thread before serving)."""
        if self.path.parent.is_dir():
            for stray in self.path.parent.glob(TEMP_PREFIX + "*" + TEMP_SUFFIX):
                stray.unlink(missing_ok=True)  # a save a crash interrupted
        try:
            doc = json.loads(self.path.read_text())
        except FileNotFoundError:
            return
        for raw in doc.get("exchanges", []):
            ex = Exchange(raw["name"], raw["type"], True, raw.get("auto_delete", False),
                          raw.get("internal", False), raw.get("arguments", {}))
            self.exchanges[ex.name] = ex
        for raw in doc.get("queues", []):
            self.queues[raw["name"]] = QueueInfo(raw["name"], raw.get("durable", False),
                                                 False, raw.get("auto_delete", False),
                                                 raw.get("arguments", {}),
                                                 raw.get("created_topic", False))
        for raw in doc.get("bindings", []):
            self.bindings.add(Binding(raw["exchange"], raw["queue"], raw["routing_key"],
                                      _hashable(raw.get("arguments", {}))))

    def snapshot(self) -> bytes:
        durable = {n for n, e in self.exchanges.items() if e.durable and n not in BUILTIN}
        transient = {n for n, e in self.exchanges.items() if not e.durable}
        doc = {
            "exchanges": [
                {"name": e.name, "type": e.type, "auto_delete": e.auto_delete,
                 "internal": e.internal, "arguments": _plain(e.arguments)}
                for n, e in sorted(self.exchanges.items()) if n in durable
            ],
            "queues": [
                {"name": q.name, "topic": topic_for(q.name), "durable": q.durable,
                 "auto_delete": q.auto_delete, "arguments": _plain(q.arguments),
                 "created_topic": q.created_topic}
                for _, q in sorted(self.queues.items()) if not q.exclusive
            ],
            "bindings": [
                {"exchange": b.exchange, "queue": b.queue, "routing_key": b.routing_key,
                 "arguments": _plain(dict(b.arguments))}
                for b in sorted(self.bindings, key=lambda b: (b.exchange, b.queue,
                                                               b.routing_key, repr(b.arguments)))
                if b.exchange not in transient
            ],
        }
        return json.dumps(doc, indent=1, sort_keys=True).encode()

    async def persist(self) -> None:
        """Make every change made so far durable; returns once it is on disk.

        Saves never overlap: while one runs, later callers wait, and the first of them to
        get the lock writes one snapshot covering all of their changes."""
        self._changes += 1
        wanted = self._changes
        async with self._save_lock:
            if self._saved >= wanted:
                return  # a save that started after our change already covered it
            covered, snapshot = self._changes, self.snapshot()
            await asyncio.to_thread(self.save, snapshot)
            self._saved = covered

    def save(self, snapshot: bytes) -> None:
        """Write a snapshot durably (blocking: run it in a worker thread): a temporary file
        with a unique name, fsync, rename over the document, fsync the directory."""
        directory = self.path.parent
        directory.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=TEMP_PREFIX, suffix=TEMP_SUFFIX, dir=directory)
        try:
            with open(fd, "wb") as f:
                f.write(snapshot)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, self.path)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise
        fsync_dir(directory)

    # ------------------------------------------------------------------ changes

    def bind(self, exchange: str, queue: str, routing_key: str, arguments: dict[str, Any]) -> bool:
        binding = Binding(exchange, queue, routing_key, _hashable(_plain(arguments)))
        if binding in self.bindings:
            return False
        self.bindings.add(binding)
        return True

    def unbind(self, exchange: str, queue: str, routing_key: str,
               arguments: dict[str, Any]) -> bool:
        binding = Binding(exchange, queue, routing_key, _hashable(_plain(arguments)))
        if binding not in self.bindings:
            return False
        self.bindings.discard(binding)
        return True

    def drop_queue(self, queue: str) -> None:
        self.queues.pop(queue, None)
        self.bindings = {b for b in self.bindings if b.queue != queue}

    def drop_exchange(self, exchange: str) -> None:
        self.exchanges.pop(exchange, None)
        self.bindings = {b for b in self.bindings if b.exchange != exchange}

    def has_bindings(self, exchange: str) -> bool:
        return any(b.exchange == exchange for b in self.bindings)

    # ------------------------------------------------------------------ routing

    def route(self, exchange: str, routing_key: str, headers: dict[str, Any] | None,
              kind: str) -> set[str]:
        """Queues bound to ``exchange`` (of type ``kind``) that this message matches."""
        out: set[str] = set()
        for b in self.bindings:
            if b.exchange != exchange:
                continue
            if kind == "fanout":
                out.add(b.queue)
            elif kind == "topic":
                if topic_match(b.routing_key, routing_key):
                    out.add(b.queue)
            elif kind == "headers":
                if _headers_match(dict(b.arguments), headers or {}):
                    out.add(b.queue)
            elif b.routing_key == routing_key:
                out.add(b.queue)
        return out



@functools.lru_cache(maxsize=8192)
def topic_match(pattern: str, key: str) -> bool:
    """Topic-exchange matching: ``*`` is exactly one word, ``#`` zero or more words."""
    pat = pattern.split(".") if pattern else []
    words = key.split(".") if key else []

    @functools.cache
    def match(i: int, j: int) -> bool:
        if i == len(pat):
            return j == len(words)
        if pat[i] == "#":
            return any(match(i + 1, k) for k in range(j, len(words) + 1))
        if j == len(words):
            return False
        return (pat[i] == "*" or pat[i] == words[j]) and match(i + 1, j + 1)

    return match(0, 0)


def _headers_match(binding: dict[str, Any], headers: dict[str, Any]) -> bool:
    mode = binding.get("x-match", "all")
    wanted = {k: v for k, v in binding.items() if not k.startswith("x-")}
    plain = {k: _plain(v) for k, v in headers.items()}
    hits = [k in plain and (v is None or plain[k] == v) for k, v in wanted.items()]
    if mode in ("any", "any-with-x"):
        return any(hits)
    return all(hits)
