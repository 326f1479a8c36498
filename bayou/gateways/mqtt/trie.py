"""Topic trees: subscriptions by filter (matched by topic) and retained messages by topic
(matched by filter).  Both walk one level at a time, so a lookup costs the topic's depth
times the wildcard branches taken — never a scan of every filter or every topic."""

from __future__ import annotations

from collections.abc import Hashable, Iterator
from typing import Any, Generic, TypeVar

V = TypeVar("V")


class _Node:
    __slots__ = ("children", "entries")

    def __init__(self) -> None:
        self.children: dict[str, _Node] = {}
        self.entries: dict[Hashable, Any] = {}


class SubscriptionTrie(Generic[V]):
    """filter → {owner: value}; ``match(topic)`` yields every (owner, value) whose filter
    matches, once per matching filter."""

    def __init__(self) -> None:
        self._root = _Node()
        self.count = 0

    def add(self, topic_filter: str, owner: Hashable, value: V) -> bool:
        """Add or replace; True when the owner had no subscription to this filter."""
        node = self._root
        for level in topic_filter.split("/"):
            child = node.children.get(level)
            if child is None:
                child = node.children[level] = _Node()
            node = child
        new = owner not in node.entries
        node.entries[owner] = value
        self.count += new
        return new

    def remove(self, topic_filter: str, owner: Hashable) -> bool:
        path = [self._root]
        levels = topic_filter.split("/")
        for level in levels:
            child = path[-1].children.get(level)
            if child is None:
                return False
            path.append(child)
        if path[-1].entries.pop(owner, None) is None:
            return False
        self.count -= 1
        for i in range(len(levels), 0, -1):  # prune empty branches
            node = path[i]
            if node.entries or node.children:
                break
            del path[i - 1].children[levels[i - 1]]
        return True

    def match(self, topic: str) -> list[tuple[Hashable, V]]:
        levels = topic.split("/")
        out: list[tuple[Hashable, V]] = []
        dollar = topic.startswith("$")
        stack: list[tuple[_Node, int]] = [(self._root, 0)]
        n = len(levels)
        while stack:
            node, i = stack.pop()
            wild_ok = not (dollar and i == 0)
            if wild_ok:
                hash_node = node.children.get("#")
                if hash_node is not None:
                    out.extend(hash_node.entries.items())
            if i == n:
                out.extend(node.entries.items())
                continue
            child = node.children.get(levels[i])
            if child is not None:
                stack.append((child, i + 1))
            if wild_ok:
                plus = node.children.get("+")
                if plus is not None:
                    stack.append((plus, i + 1))
        return out


class _TopicNode:
    __slots__ = ("children", "value")

    def __init__(self) -> None:
        self.children: dict[str, _TopicNode] = {}
        self.value: Any = None


class TopicTree(Generic[V]):
    """topic name → value (retained messages); ``match(filter)`` yields matching values."""

    def __init__(self) -> None:
        self._root = _TopicNode()
        self.count = 0

    def set(self, topic: str, value: V | None) -> None:
        """Store ``value`` under ``topic``; ``None`` removes it."""
        levels = topic.split("/")
        if value is None:
            path = [self._root]
            for level in levels:
                child = path[-1].children.get(level)
                if child is None:
                    return
                path.append(child)
            if path[-1].value is not None:
                self.count -= 1
            path[-1].value = None
            for i in range(len(levels), 0, -1):
                node = path[i]
                if node.value is not None or node.children:
                    break
                del path[i - 1].children[levels[i - 1]]
            return
        node = self._root
        for level in levels:
            child = node.children.get(level)
            if child is None:
                child = node.children[level] = _TopicNode()
            node = child
        self.count += node.value is None
        node.value = value

    def get(self, topic: str) -> V | None:
        node: _TopicNode | None = self._root
        for level in topic.split("/"):
            node = node.children.get(level) if node is not None else None
        return None if node is None else node.value

    def match(self, topic_filter: str) -> Iterator[V]:
        levels = topic_filter.split("/")
        n = len(levels)
        stack: list[tuple[_TopicNode, int]] = [(self._root, 0)]
        while stack:
            node, i = stack.pop()
            if i == n:
                if node.value is not None:
                    yield node.value
                continue
            level = levels[i]
            if level == "#":
                if node.value is not None and i > 0:
                    yield node.value  # "a/#" matches "a" itself
                yield from self._all_below(node, skip_dollar=(i == 0))
            elif level == "+":
                for name, child in node.children.items():
                    if i == 0 and name.startswith("$"):
                        continue
                    stack.append((child, i + 1))
            else:
                found = node.children.get(level)
                if found is not None:
                    stack.append((found, i + 1))

    def _all_below(self, node: _TopicNode, skip_dollar: bool) -> Iterator[V]:
        stack = [
            (child, name)
            for name, child in node.children.items()
            if not (skip_dollar and name.startswith("$"))
        ]
        while stack:
            child, _name = stack.pop()
            if child.value is not None:
                yield child.value
            stack.extend((c, n) for n, c in child.children.items())
