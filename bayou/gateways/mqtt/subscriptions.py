"""Subscriptions: who wants which MQTT topic.

Theory of operation
-------------------
``Subscriptions`` is the door-wide index: one ``SubscriptionTrie`` of every filter, whose
owners are sessions (their own subscriptions) and ``ShareGroup``s (``$share/group/filter``:
the trie holds the group once, whatever its number of members; it serves the ``$SYS``
messages only, which are in no log — records reach shared subscriptions through Kafka
share groups, ``shared.py``).  ``owners_of(topic)`` walks
the trie once per MQTT topic and groups the matches per owner — a session with overlapping
subscriptions gets the message once, with the options of all of them (``merge_options``:
the highest QoS, every subscription id); the answer is cached per topic until the next
subscribe or unsubscribe.  It also counts subscriptions per plain filter, and the filters of
the subscriptions that are not shared (``tailed``), which the gateway turns into the Kafka
partitions it tails, and the subscribers that have such subscriptions (``own``; ``version``
changes with every subscribe and unsubscribe, for what the gateway derives from them).

A ``ShareGroup`` hands each ``$SYS`` message to one connected member with room, round robin;
when none has room, QoS 1/2 messages wait in its pending queue (bounded: beyond
``MAX_GROUP_PENDING`` they are dropped, counted and warned about once).

The subscribers here are anything with the ``Subscriber`` shape (a session): this module
knows nothing of connections or of the log.
"""

from __future__ import annotations

import logging
from collections import deque
from dataclasses import dataclass, field
from typing import Any, Protocol

from bayou.gateways.mqtt.messages import TP, Delivery, Message
from bayou.gateways.mqtt.systree import SysCounters
from bayou.gateways.mqtt.trie import SubscriptionTrie
from bayou.protocol.mqtt.topics import parse_shared

log = logging.getLogger("bayou.mqtt")

MAX_GROUP_PENDING = 10_000
OWNERS_CACHE = 100_000


@dataclass
class SubOptions:
    qos: int
    no_local: bool = False
    retain_as_published: bool = False
    retain_handling: int = 0
    sub_id: int | None = None
    # what ``merge_options`` answers for this subscription alone, per message QoS 0..2
    single: tuple[tuple[int, bool, tuple[int, ...]], ...] = field(
        init=False, repr=False, compare=False
    )

    def __post_init__(self) -> None:
        ids = () if self.sub_id is None else (self.sub_id,)
        self.single = tuple((min(self.qos, q), self.retain_as_published, ids) for q in range(3))

    def dump(self) -> list[Any]:
        return [
            self.qos,
            self.no_local,
            self.retain_as_published,
            self.retain_handling,
            self.sub_id,
        ]

    @classmethod
    def load(cls, raw: list[Any]) -> SubOptions:
        return cls(
            int(raw[0]),
            bool(raw[1]),
            bool(raw[2]),
            int(raw[3]),
            None if raw[4] is None else int(raw[4]),
        )


def merge_options(
    options: list[SubOptions], origin: str | None, client_id: str, msg_qos: int
) -> tuple[int, bool, tuple[int, ...]] | None:
    """(qos, retain-as-published, subscription ids) for overlapping subscriptions, or None."""
    if len(options) == 1:
        opts = options[0]
        if opts.no_local and origin == client_id:
            return None
        return opts.single[msg_qos]
    qos = -1
    rap = False
    ids: list[int] = []
    for opts in options:
        if opts.no_local and origin == client_id:
            continue
        qos = max(qos, min(opts.qos, msg_qos))
        rap = rap or opts.retain_as_published
        if opts.sub_id is not None:
            ids.append(opts.sub_id)
    if qos < 0:
        return None
    return qos, rap, tuple(ids)


class Member(Protocol):
    """A member of a shared subscription, as the group sees it."""

    client_id: str

    def can_take(self) -> bool: ...

    def enqueue(self, delivery: Delivery, pump: bool = True) -> None: ...


class Subscriber(Member, Protocol):
    """A session, as the index sees it: its filters and the share groups it is in."""

    subs: dict[str, SubOptions]
    groups: dict[str, ShareGroup]

    def __hash__(self) -> int: ...


class ShareGroup:
    """``$share/<name>/<filter>``: each message to one member (see the module docstring)."""

    def __init__(self, name: str, topic_filter: str, stats: SysCounters) -> None:
        self.name = name
        self.topic_filter = topic_filter
        self.stats = stats
        self.members: dict[str, tuple[Member, SubOptions]] = {}
        self.pending: deque[tuple[Message, int, TP | None, int]] = deque()
        self._turn = 0
        self._warned = False

    def offer(self, msg: Message, opts: SubOptions, tp: TP | None, offset: int) -> None:
        qos = min(msg.qos, opts.qos)
        if self._hand_out(msg, tp, offset):
            return
        if qos == 0:
            return
        if len(self.pending) >= MAX_GROUP_PENDING:
            self.stats.publish_dropped += 1
            if not self._warned:
                log.warning(
                    "shared subscription $share/%s/%s: no member keeps up, dropping messages",
                    self.name,
                    self.topic_filter,
                )
                self._warned = True
            return
        self.pending.append((msg, qos, tp, offset))

    def _hand_out(self, msg: Message, tp: TP | None, offset: int) -> bool:
        members = list(self.members.values())
        n = len(members)
        for i in range(n):
            member, opts = members[(self._turn + i) % n]
            if member.can_take():
                self._turn = (self._turn + i + 1) % n
                qos = min(msg.qos, opts.qos)
                ids = (opts.sub_id,) if opts.sub_id is not None else ()
                member.enqueue(Delivery(msg, qos, False, ids, tp, offset, False))
                return True
        return False

    def pull(self, member: Member) -> bool:
        """Give ``member`` one pending message; False when there is none."""
        if not self.pending:
            return False
        msg, _qos, tp, offset = self.pending.popleft()
        _member, opts = self.members[member.client_id]
        ids = (opts.sub_id,) if opts.sub_id is not None else ()
        member.enqueue(
            Delivery(msg, min(msg.qos, opts.qos), False, ids, tp, offset, False), pump=False
        )
        return True


Owners = list[tuple[Any, list[SubOptions]]]  # (a Subscriber or a ShareGroup, its options)


class Subscriptions:
    """Every subscription of the door (see the module docstring)."""

    def __init__(self, stats: SysCounters) -> None:
        self.stats = stats
        self.trie: SubscriptionTrie[SubOptions] = SubscriptionTrie()
        self.groups: dict[tuple[str, str], ShareGroup] = {}
        self.filters: dict[str, int] = {}  # plain filter → subscriptions using it
        self.tailed: dict[str, int] = {}  # the same, for filters that are not shared
        #: subscriber → its subscriptions that are not shared (the tailers offer to these)
        self.own: dict[Any, int] = {}
        self.version = 0  # bumped by every subscribe and unsubscribe
        self._owners: dict[str, Owners] = {}

    def owners_of(self, mqtt_topic: str) -> Owners:
        """The sessions and share groups whose filters match ``mqtt_topic``, each with the
        options of its matching subscriptions (one trie walk per topic, then cached)."""
        owners = self._owners.get(mqtt_topic)
        if owners is None:
            by_owner: dict[Any, list[SubOptions]] = {}
            for owner, opts in self.trie.match(mqtt_topic):
                by_owner.setdefault(owner, []).append(opts)
            owners = list(by_owner.items())
            if len(self._owners) >= OWNERS_CACHE:
                self._owners.clear()
            self._owners[mqtt_topic] = owners
        return owners

    def add(self, subscriber: Subscriber, topic_filter: str, opts: SubOptions) -> bool:
        """Subscribe (or replace the options); True when the filter is new to it."""
        self._owners.clear()
        self.version += 1
        group_name, plain = parse_shared(topic_filter)
        new = topic_filter not in subscriber.subs
        subscriber.subs[topic_filter] = opts
        if group_name is None:
            self.trie.add(plain, subscriber, opts)
        else:
            key = (group_name, plain)
            group = self.groups.get(key)
            if group is None:
                group = self.groups[key] = ShareGroup(group_name, plain, self.stats)
                self.trie.add(plain, group, SubOptions(2))
            group.members[subscriber.client_id] = (subscriber, opts)
            subscriber.groups[topic_filter] = group
        if new:
            self.filters[plain] = self.filters.get(plain, 0) + 1
            if group_name is None:
                self.tailed[plain] = self.tailed.get(plain, 0) + 1
                self.own[subscriber] = self.own.get(subscriber, 0) + 1
        return new

    def remove(self, subscriber: Subscriber, topic_filter: str) -> bool:
        """Unsubscribe; False when there was no such subscription."""
        if subscriber.subs.pop(topic_filter, None) is None:
            return False
        self._owners.clear()
        self.version += 1
        group_name, plain = parse_shared(topic_filter)
        if group_name is None:
            self.trie.remove(plain, subscriber)
        else:
            group = subscriber.groups.pop(topic_filter, None)
            if group is not None:
                group.members.pop(subscriber.client_id, None)
                if not group.members:
                    self.trie.remove(plain, group)
                    self.groups.pop((group_name, plain), None)
        _uncount(self.filters, plain)
        if group_name is None:
            _uncount(self.tailed, plain)
            _uncount(self.own, subscriber)
        return True

    def remove_all(self, subscriber: Subscriber) -> None:
        for topic_filter in list(subscriber.subs):
            self.remove(subscriber, topic_filter)

    def count(self) -> int:
        return sum(self.filters.values())

    def shared_count(self) -> int:
        return sum(len(group.members) for group in self.groups.values())


def _uncount(counts: dict[Any, int], key: Any) -> None:
    left = counts.get(key, 1) - 1
    if left:
        counts[key] = left
    else:
        counts.pop(key, None)
