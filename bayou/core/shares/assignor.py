"""The share groups' server-side assignor (Kafka's ``simple``).

Share groups may give one partition to several members — records, not partitions, are what
members compete for — so the assignor only has to keep every partition served and every
member busy:

- with no more members than partitions, each partition goes to one member and the counts
  differ by at most one (the consumer groups' sticky ``uniform`` assignment does exactly
  that);
- with more members than partitions, each partition is shared by ``ceil(members /
  partitions)`` members, so every member gets at least one partition and no partition is
  shared much more than another.

It is sticky: a member keeps what it had while that stays within its share, so a member
joining or leaving moves few partitions.  Members subscribed to different topics are
served per partition from the members eligible for it.  A pure function: the same inputs
always give the same assignment.
"""

from __future__ import annotations

from collections.abc import Mapping

from bayou.core.groups.assignors import uniform_assign
from bayou.core.shares.model import Partitions

Subscriptions = Mapping[str, tuple[str, ...]]  # member id -> subscribed topic names


def simple_assign(
    subscriptions: Subscriptions,
    topic_sizes: Mapping[str, int],
    current: Mapping[str, Partitions],
) -> dict[str, Partitions]:
    members = sorted(subscriptions)
    targets = [
        (topic, p)
        for topic in sorted({t for ts in subscriptions.values() for t in ts})
        for p in range(topic_sizes.get(topic, 0))
    ]
    if not members or not targets:
        return {m: {} for m in members}
    if len(members) <= len(targets):
        return uniform_assign(subscriptions, topic_sizes, current)
    sharing = -(-len(members) // len(targets))  # members per partition, rounded up
    eligible = {tp: [m for m in members if tp[0] in subscriptions[m]] for tp in targets}
    slots = sum(min(sharing, len(subs)) for subs in eligible.values())
    quota = -(-slots // len(members))  # partitions per member, rounded up
    owners: dict[tuple[str, int], set[str]] = {tp: set() for tp in targets}
    counts = dict.fromkeys(members, 0)
    # 1. Sticky: keep what each member had, within its share and the partition's sharing.
    for m in members:
        for topic, parts in sorted(current.get(m, {}).items()):
            for p in sorted(parts):
                tp = (topic, p)
                fits = tp in owners and m in eligible[tp] and len(owners[tp]) < sharing
                if fits and counts[m] < quota:
                    owners[tp].add(m)
                    counts[m] += 1
    # 2. Members with nothing first, then every partition up to its sharing.
    for m in members:
        if counts[m] == 0:
            open_tps = [tp for tp in targets if m in eligible[tp] and len(owners[tp]) < sharing]
            if open_tps:
                tp = min(open_tps, key=lambda tp: (len(owners[tp]), tp))
                owners[tp].add(m)
                counts[m] += 1
    for tp in targets:
        while len(owners[tp]) < min(sharing, len(eligible[tp])):
            free = [m for m in eligible[tp] if m not in owners[tp]]
            m = min(free, key=lambda x: (counts[x], x))
            owners[tp].add(m)
            counts[m] += 1
    out: dict[str, dict[str, set[int]]] = {m: {} for m in members}
    for (topic, p), ms in owners.items():
        for m in ms:
            out[m].setdefault(topic, set()).add(p)
    return {m: {t: frozenset(ps) for t, ps in parts.items()} for m, parts in out.items()}
