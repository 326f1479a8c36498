"""Topic names and topic filters: validation, shared-subscription parsing, matching.

A topic name has no wildcards; a filter may use ``+`` (exactly one level) and ``#`` (the rest,
last level only, alone in its level).  Topics starting with ``$`` are not matched by a filter
whose first level is a wildcard.  ``$share/<group>/<filter>`` names a shared subscription.
"""

from __future__ import annotations

from bayou.protocol.mqtt.errors import MqttError
from bayou.protocol.mqtt.packets import Reason

MAX_TOPIC_BYTES = 65535
SHARE_PREFIX = "$share/"
SYS = "$SYS"


def is_sys(topic: str) -> bool:
    """Whether a topic name or filter lies in the broker's ``$SYS`` tree."""
    return topic.startswith(SYS) and (len(topic) == len(SYS) or topic[len(SYS)] == "/")


def valid_topic_name(topic: str) -> bool:
    return bool(topic) and "+" not in topic and "#" not in topic and "\x00" not in topic


def valid_topic_filter(topic_filter: str) -> bool:
    if not topic_filter or "\x00" in topic_filter:
        return False
    levels = topic_filter.split("/")
    for i, level in enumerate(levels):
        if "#" in level and (level != "#" or i != len(levels) - 1):
            return False
        if "+" in level and level != "+":
            return False
    return True


def parse_shared(topic_filter: str) -> tuple[str | None, str]:
    """``$share/g/f`` → ``("g", "f")``; any other filter → ``(None, filter)``.

    Raises MqttError(TOPIC_FILTER_INVALID) for a malformed shared subscription.
    """
    if not topic_filter.startswith(SHARE_PREFIX):
        return None, topic_filter
    rest = topic_filter[len(SHARE_PREFIX) :]
    group, sep, inner = rest.partition("/")
    if not sep or not group or "+" in group or "#" in group or not valid_topic_filter(inner):
        raise MqttError(
            f"invalid shared subscription {topic_filter!r}", Reason.TOPIC_FILTER_INVALID
        )
    return group, inner


def matches(topic_filter: str, topic: str) -> bool:
    """Whether ``topic`` (a name) matches ``topic_filter`` (a plain, unshared filter)."""
    if topic.startswith("$") and topic_filter[:1] in ("+", "#"):
        return False
    f_levels = topic_filter.split("/")
    t_levels = topic.split("/")
    for i, level in enumerate(f_levels):
        if level == "#":
            return True
        if i >= len(t_levels):
            return False
        if level != "+" and level != t_levels[i]:
            return False
    return len(f_levels) == len(t_levels)


def filters_may_overlap(a: str, b: str) -> bool:
    """Whether some topic name could match both filters (used to route filters to topics)."""
    a_levels = a.split("/")
    b_levels = b.split("/")
    for i in range(max(len(a_levels), len(b_levels))):
        x = a_levels[i] if i < len(a_levels) else None
        y = b_levels[i] if i < len(b_levels) else None
        if x == "#" or y == "#":
            return True
        if x is None or y is None:
            return False
        if x != "+" and y != "+" and x != y:
            return False
    return True
