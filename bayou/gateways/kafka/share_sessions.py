"""Kafka share sessions (KIP-932): which partitions a share consumer fetches, per member.

Theory of operation
-------------------
A share consumer opens a session with ShareFetch epoch 0 naming its partitions; later
requests carry the next epoch (1, 2 … wrapping to 1) and name only partitions to add
(``Topics``) or drop (``ForgottenTopicsData``); epoch -1 closes it.  One session per (group,
member) — and, for requests another broker relays (``share_relay.py``), per relaying
connection: a consumer fetching from three leaders has three sessions, and the coordinator
gets two of them relayed beside the one it serves directly.  A new epoch 0 replaces the
old one of the same key.  A wrong epoch answers
INVALID_SHARE_SESSION_EPOCH, an unknown session SHARE_SESSION_NOT_FOUND, as Kafka does.

A session belongs to the connection that opened it.  When the session ends — replaced,
closed with epoch -1, or its connection closed (a consumer killed, a network cut) —
everything the member still holds in the session's partitions is released at once, so the
other members get it without waiting for the acquisition locks to expire.  The records
themselves live in the core's share partitions; a session is only this door's bookkeeping.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Protocol

OPEN = 0
CLOSE = -1
MAX_EPOCH = 2**31 - 1

TopicPartition = tuple[str, int]
Key = tuple[str, str, object]  # group, member, the relaying connection (or None)


class Owner(Protocol):
    """The connection a session belongs to (``context.Connection``)."""

    def on_close(self, callback: Callable[[], None]) -> None: ...


def next_epoch(epoch: int) -> int:
    return 1 if epoch in (MAX_EPOCH, CLOSE) else epoch + 1


@dataclass
class ShareSession:
    group_id: str
    member_id: str
    via: object = None  # the connection that relays it from another broker, if any
    epoch: int = 1  # the epoch the next request must carry
    partitions: dict[TopicPartition, None] = field(default_factory=dict)  # insertion-ordered
    rotation: int = 0  # where the next fetch starts, so every partition gets its turn

    def add(self, parts: Iterable[TopicPartition]) -> None:
        for tp in parts:
            self.partitions.setdefault(tp, None)

    def forget(self, parts: Iterable[TopicPartition]) -> None:
        for tp in parts:
            self.partitions.pop(tp, None)

    def ordered(self) -> list[TopicPartition]:
        """The session's partitions, starting one further at every call."""
        parts = list(self.partitions)
        if not parts:
            return parts
        start = self.rotation % len(parts)
        self.rotation += 1
        return parts[start:] + parts[:start]


class ShareSessions:
    """The door's sessions; ``release`` gives back what an ended session's member holds,
    ``leave`` takes a member tied to its connection out of its group."""

    def __init__(
        self,
        release: Callable[[ShareSession], None],
        leave: Callable[[str, str], None] = lambda _g, _m: None,
    ) -> None:
        self._sessions: dict[Key, ShareSession] = {}
        self._owner: dict[Key, Owner | None] = {}
        self._watched: set[Owner] = set()  # connections whose close we listen for
        self._tied: dict[Owner, set[tuple[str, str]]] = {}
        self._release = release
        self._leave = leave

    def __len__(self) -> int:
        return len(self._sessions)

    def get(self, group_id: str, member_id: str, via: object = None) -> ShareSession | None:
        return self._sessions.get((group_id, member_id, via))

    def open(
        self, group_id: str, member_id: str, owner: Owner | None, via: object = None
    ) -> ShareSession:
        """A new session (epoch 0) of ``owner``'s, replacing — and releasing — any earlier
        one of the same key; the sessions of a connection end when it closes."""
        key = (group_id, member_id, via)
        old = self._sessions.pop(key, None)
        if old is not None:
            self._release(old)
        session = ShareSession(group_id, member_id, via)
        self._sessions[key] = session
        self._owner[key] = owner
        self._watch(owner)
        return session

    def _watch(self, owner: Owner | None) -> None:
        if owner is not None and owner not in self._watched:
            self._watched.add(owner)
            owner.on_close(lambda: self.owner_gone(owner))

    def tie(self, owner: Owner | None, group_id: str, member_id: str) -> None:
        """The member lives as long as ``owner``: a door's member on another broker joined
        over its own connection (``bayou/core/shares/remote.py``), which closes when the
        member closes or its broker dies — it leaves its group then, at once."""
        if owner is not None:
            self._tied.setdefault(owner, set()).add((group_id, member_id))
            self._watch(owner)

    def close(self, session: ShareSession) -> None:
        key = (session.group_id, session.member_id, session.via)
        if self._sessions.get(key) is session:
            del self._sessions[key]
            self._owner.pop(key, None)
        self._release(session)

    def owner_gone(self, owner: Owner) -> None:
        """A connection closed: end the sessions it opened, and the memberships tied to it."""
        self._watched.discard(owner)
        for group_id, member_id in sorted(self._tied.pop(owner, ())):
            self._leave(group_id, member_id)
        for key, who in list(self._owner.items()):
            if who is owner:
                session = self._sessions.get(key)
                if session is not None:
                    self.close(session)
