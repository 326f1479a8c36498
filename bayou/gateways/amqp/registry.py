"""Exchanges, queues and bindings declared by AMQP clients: the model, its entries, routing.

Theory of operation
-------------------
Kafka topics are the queues (queue ``Q`` is topic ``names.topic_for(Q)``); this registry
only adds what AMQP has and Kafka lacks: named exchanges with a type, the bindings from
exchanges to queues, and each declared queue's flags (a durable named queue is consumed as
a consumer group).  Every topic is implicitly also an exchange (of type ``direct`` unless
declared otherwise) whose own messages go to that topic.

The model lives in memory and changes on the event loop.  It is kept as *entries* of a
compacted key-value log (``registry_log.py`` writes them to the engine's state store), one
per exchange, queue and binding, keyed by what it is::

    ["exchange", NAME]                                  → {"name", "type", "auto_delete", …}
    ["queue", NAME]                                     → {"name", "topic", "durable", …}
    ["binding", EXCHANGE, QUEUE, ROUTING_KEY, ARGUMENTS] → {"exchange", "queue", …}

(keys and values are compact JSON; a queue's value names its topic for Kafka users, since
the digest form of ``topic_for`` cannot be read back).  Every change notes the keys it
touched in ``dirty``; ``entry(key)`` is what a key holds *now* — None when the thing is gone
or is not kept across restarts: non-durable exchanges and the bindings from them, and
exclusive queues, live in memory only, as in RabbitMQ.  The writer compares and writes
only what differs, so a burst of changes costs one batch.

Routing (``route``) is pure: direct compares the binding key, fanout takes every binding,
topic matches ``*`` (one word) and ``#`` (zero or more words) over dot-separated words, and
headers matches the binding's arguments against the message's headers (``x-match`` ``all``
by default, or ``any``).
"""

from __future__ import annotations

import functools
import json
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from bayou.gateways.amqp.names import topic_for

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
    arguments: tuple[tuple[str, Any], ...] = ()  # hashable: what makes two bindings one
    plain: dict[str, Any] = field(default_factory=dict, compare=False)  # as JSON keeps it


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


def _binding(exchange: str, queue: str, routing_key: str, arguments: Mapping[str, Any]) -> Binding:
    plain = _plain(dict(arguments))
    return Binding(exchange, queue, routing_key, _hashable(plain), plain)


def _json(value: Any) -> bytes:
    return json.dumps(value, separators=(",", ":"), sort_keys=True, ensure_ascii=False).encode()


def exchange_key(name: str) -> bytes:
    return _json(["exchange", name])


def queue_key(name: str) -> bytes:
    return _json(["queue", name])


def binding_key(b: Binding) -> bytes:
    return _json(["binding", b.exchange, b.queue, b.routing_key, b.arguments])


class Registry:
    def __init__(self) -> None:
        self.exchanges: dict[str, Exchange] = {
            name: Exchange(name, kind) for name, kind in BUILTIN.items()
        }
        self.queues: dict[str, QueueInfo] = {}
        self.bindings: set[Binding] = set()
        self._binding_keys: dict[bytes, Binding] = {}
        self.dirty: set[bytes] = set()  # keys changed since the writer last looked

    def clear(self) -> None:
        """Back to the built-in exchanges only (every key that held something is dirty)."""
        self.dirty.update(self.keys())
        self.exchanges = {name: Exchange(name, kind) for name, kind in BUILTIN.items()}
        self.queues = {}
        self.bindings = set()
        self._binding_keys = {}

    # ------------------------------------------------------------------ changes

    def put_exchange(self, exchange: Exchange) -> None:
        self.exchanges[exchange.name] = exchange
        self.dirty.add(exchange_key(exchange.name))

    def put_queue(self, info: QueueInfo) -> None:
        self.queues[info.name] = info
        self.dirty.add(queue_key(info.name))

    def bind(self, exchange: str, queue: str, routing_key: str, arguments: dict[str, Any]) -> bool:
        binding = _binding(exchange, queue, routing_key, arguments)
        if binding in self.bindings:
            return False
        self._add_binding(binding)
        return True

    def unbind(
        self, exchange: str, queue: str, routing_key: str, arguments: dict[str, Any]
    ) -> bool:
        binding = _binding(exchange, queue, routing_key, arguments)
        if binding not in self.bindings:
            return False
        self._drop_bindings([binding])
        return True

    def drop_queue(self, queue: str) -> None:
        self.queues.pop(queue, None)
        self.dirty.add(queue_key(queue))
        self._drop_bindings([b for b in self.bindings if b.queue == queue])

    def drop_exchange(self, exchange: str) -> None:
        self.exchanges.pop(exchange, None)
        self.dirty.add(exchange_key(exchange))
        self._drop_bindings([b for b in self.bindings if b.exchange == exchange])

    def has_bindings(self, exchange: str) -> bool:
        return any(b.exchange == exchange for b in self.bindings)

    def _add_binding(self, binding: Binding) -> None:
        key = binding_key(binding)
        self.bindings.add(binding)
        self._binding_keys[key] = binding
        self.dirty.add(key)

    def _drop_bindings(self, bindings: list[Binding]) -> None:
        for binding in bindings:
            key = binding_key(binding)
            self.bindings.discard(binding)
            self._binding_keys.pop(key, None)
            self.dirty.add(key)

    # ------------------------------------------------------------------ entries

    def keys(self) -> Iterator[bytes]:
        """The key of everything in the model (kept across restarts or not)."""
        for name in self.exchanges:
            if name not in BUILTIN:
                yield exchange_key(name)
        for name in self.queues:
            yield queue_key(name)
        yield from self._binding_keys

    def entry(self, key: bytes) -> bytes | None:
        """What ``key`` holds now: its value, or None (gone, or kept in memory only)."""
        try:
            kind, name, *_rest = json.loads(key)
        except (ValueError, TypeError):
            return None
        if kind == "exchange":
            ex = self.exchanges.get(name)
            if ex is None or not ex.durable or name in BUILTIN:
                return None
            return _json(
                {
                    "name": ex.name,
                    "type": ex.type,
                    "auto_delete": ex.auto_delete,
                    "internal": ex.internal,
                    "arguments": _plain(ex.arguments),
                }
            )
        if kind == "queue":
            q = self.queues.get(name)
            if q is None or q.exclusive:
                return None
            return _json(
                {
                    "name": q.name,
                    "topic": topic_for(q.name),
                    "durable": q.durable,
                    "auto_delete": q.auto_delete,
                    "arguments": _plain(q.arguments),
                    "created_topic": q.created_topic,
                }
            )
        if kind == "binding":
            b = self._binding_keys.get(key)
            if b is None:
                return None
            source = self.exchanges.get(b.exchange)
            if source is not None and not source.durable:
                return None  # bindings from a non-durable exchange go with it
            return _json(
                {
                    "exchange": b.exchange,
                    "queue": b.queue,
                    "routing_key": b.routing_key,
                    "arguments": b.plain,
                }
            )
        return None

    def apply(self, key: bytes, value: bytes) -> bytes | None:
        """Load one entry (replaying the log); the key the model now files it under (the
        same unless the entry was written differently), or None when it is not valid."""
        try:
            raw = json.loads(value)
            kind = json.loads(key)[0]
            return self._apply(kind, raw)
        except (ValueError, TypeError, KeyError, IndexError, AttributeError):
            return None

    def forget(self, key: bytes) -> None:
        """Unload one entry (its tombstone, written by another broker): the exchange, queue
        or binding goes from the model, and nothing else — that broker wrote the tombstones
        of whatever went with it."""
        try:
            kind, name, *_rest = json.loads(key)
        except (ValueError, TypeError):
            return
        if kind == "exchange" and name not in BUILTIN:
            self.exchanges.pop(name, None)
        elif kind == "queue":
            self.queues.pop(name, None)
        elif kind == "binding":
            binding = self._binding_keys.pop(key, None)
            if binding is not None:
                self.bindings.discard(binding)

    def _apply(self, kind: str, raw: Mapping[str, Any]) -> bytes | None:
        if kind == "exchange":
            ex = Exchange(
                str(raw["name"]),
                str(raw["type"]),
                True,
                bool(raw.get("auto_delete", False)),
                bool(raw.get("internal", False)),
                dict(raw.get("arguments") or {}),
            )
            if ex.name in BUILTIN or ex.type not in EXCHANGE_TYPES:
                return None
            self.exchanges[ex.name] = ex
            return exchange_key(ex.name)
        if kind == "queue":
            info = QueueInfo(
                str(raw["name"]),
                bool(raw.get("durable", False)),
                False,
                bool(raw.get("auto_delete", False)),
                dict(raw.get("arguments") or {}),
                bool(raw.get("created_topic", False)),
            )
            self.queues[info.name] = info
            return queue_key(info.name)
        if kind == "binding":
            binding = _binding(
                str(raw["exchange"]),
                str(raw["queue"]),
                str(raw["routing_key"]),
                dict(raw.get("arguments") or {}),
            )
            self._add_binding(binding)
            return binding_key(binding)
        return None

    def load_document(self, doc: Mapping[str, Any]) -> None:
        """Replace the model by a ``registry.json`` of the previous release (one document
        with lists of exchanges, queues and bindings, in the shape of the entries)."""
        self.clear()
        for kind, items in (
            ("exchange", "exchanges"),
            ("queue", "queues"),
            ("binding", "bindings"),
        ):
            for raw in doc.get(items, []):
                try:
                    self._apply(kind, raw)
                except (ValueError, TypeError, KeyError, AttributeError):
                    continue

    # ------------------------------------------------------------------ routing

    def route(
        self, exchange: str, routing_key: str, headers: dict[str, Any] | None, kind: str
    ) -> set[str]:
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
