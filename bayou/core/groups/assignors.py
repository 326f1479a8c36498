"""Server-side assignors for consumer groups (KIP-848): ``uniform`` and ``range``.

Both are pure functions of the members' subscriptions, the topics' partition counts and (for
``uniform``) the current target, so the same inputs always give the same assignment.

- ``uniform`` (Kafka's default): spreads every subscribed partition over the members that
  subscribe to its topic so that counts differ by at most one where subscriptions allow,
  and keeps each partition where it was when that stays balanced (sticky): a member joining
  or leaving moves only the partitions that must move.
- ``range``: per topic, members sorted by id take consecutive ranges of partitions, the first
  ``partitions % members`` one more — so members subscribed to co-partitioned topics get the
  same partition numbers of each.
"""

from __future__ import annotations

from collections.abc import Mapping

from bayou.core.groups.model import Partitions

Subscriptions = Mapping[str, tuple[str, ...]]  # member id -> subscribed topic names


def assign(
    name: str,
    subscriptions: Subscriptions,
    topic_sizes: Mapping[str, int],
    current: Mapping[str, Partitions],
) -> dict[str, Partitions]:
    if name == "range":
        return range_assign(subscriptions, topic_sizes)
    return uniform_assign(subscriptions, topic_sizes, current)


def range_assign(
    subscriptions: Subscriptions, topic_sizes: Mapping[str, int]
) -> dict[str, Partitions]:
    out: dict[str, dict[str, set[int]]] = {m: {} for m in subscriptions}
    for topic in sorted({t for ts in subscriptions.values() for t in ts}):
        size = topic_sizes.get(topic, 0)
        members = sorted(m for m, ts in subscriptions.items() if topic in ts)
        if not size or not members:
            continue
        base, extra = divmod(size, len(members))
        start = 0
        for i, member in enumerate(members):
            count = base + (1 if i < extra else 0)
            if count:
                out[member][topic] = set(range(start, start + count))
            start += count
    return _freeze(out)


def uniform_assign(
    subscriptions: Subscriptions,
    topic_sizes: Mapping[str, int],
    current: Mapping[str, Partitions],
) -> dict[str, Partitions]:
    members = sorted(subscriptions)
    eligible: dict[tuple[str, int], list[str]] = {}
    for topic in sorted({t for ts in subscriptions.values() for t in ts}):
        subs = [m for m in members if topic in subscriptions[m]]
        for p in range(topic_sizes.get(topic, 0)):
            eligible[(topic, p)] = subs
    # Each member's fair share: its part of every topic it subscribes to.
    share: dict[str, float] = dict.fromkeys(members, 0.0)
    for (_topic, _p), subs in eligible.items():
        for m in subs:
            share[m] += 1 / len(subs)
    quota = {m: int(share[m]) + (1 if share[m] % 1 > 1e-9 else 0) for m in members}
    owner: dict[tuple[str, int], str] = {}
    counts = dict.fromkeys(members, 0)
    # 1. Sticky: keep what each member had, up to its quota.
    for m in members:
        for topic, parts in sorted(current.get(m, {}).items()):
            for p in sorted(parts):
                tp = (topic, p)
                ok = tp in eligible and tp not in owner and m in eligible[tp]
                if ok and counts[m] < quota[m]:
                    owner[tp] = m
                    counts[m] += 1
    # 2. The rest to the least-loaded eligible member.
    for tp, subs in eligible.items():
        if tp not in owner and subs:
            m = min(subs, key=lambda x: (counts[x], x))
            owner[tp] = m
            counts[m] += 1
    # 3. Balance: move from the most to the least loaded while it helps.
    for _ in range(len(eligible) + 1):
        moved = False
        for tp in sorted(owner, key=lambda tp: (-counts[owner[tp]], tp)):
            src = owner[tp]
            dst = min(eligible[tp], key=lambda x: (counts[x], x))
            if counts[src] - counts[dst] > 1:
                owner[tp] = dst
                counts[src] -= 1
                counts[dst] += 1
                moved = True
                break
        if not moved:
            break
    out: dict[str, dict[str, set[int]]] = {m: {} for m in members}
    for (topic, p), m in owner.items():
        out[m].setdefault(topic, set()).add(p)
    return _freeze(out)


def _freeze(out: dict[str, dict[str, set[int]]]) -> dict[str, Partitions]:
    return {m: {t: frozenset(ps) for t, ps in parts.items() if ps} for m, parts in out.items()}
