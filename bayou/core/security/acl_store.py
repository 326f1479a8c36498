"""The ACL store: every ACL binding, persisted in the state log ``__bayou_acls``.

One entry per binding (its key is the binding itself, the value ``1``; a deleted binding is a
tombstone).  Changes are written, fsynced, before they apply, and each change bumps
``version`` so the authorizer drops its cached answers: a revoked ACL takes effect on the
next question, including on connections that are already open.  On a shared engine the
changes other brokers write are applied as they land (``apply``, the replay's own path;
``bayou/core/state_follow.py``), with the same effect.
"""

from __future__ import annotations

from collections.abc import Iterable

from bayou.core.security.acl import AclBinding, AclFilter
from bayou.core.state_follow import follow
from bayou.storage.engine import StateEntry, StateLog, StateStore, latest

ACLS_LOG = "__bayou_acls"


class AclStore:
    def __init__(self) -> None:
        self.bindings: set[AclBinding] = set()
        self.version = 0
        self._log: StateLog | None = None

    async def open(self, state: StateStore) -> None:
        self._log = await state.open_log(ACLS_LOG)
        self.apply(list((await latest(self._log)).values()))
        follow(self._log, self.apply)

    def apply(self, entries: list[StateEntry]) -> None:
        """Entries of the log, in order: the replay at start, and what other brokers of a
        shared engine write later (``state_follow.py``); the authorizer asks again."""
        for entry in entries:
            try:
                binding = AclBinding.from_key(entry.key)
            except (ValueError, TypeError):
                continue  # written by a later release: not ours to judge
            if entry.value is None:
                self.bindings.discard(binding)
            else:
                self.bindings.add(binding)
        self.version += 1

    def find(self, flt: AclFilter) -> list[AclBinding]:
        return sorted((b for b in self.bindings if flt.matches(b)), key=_order)

    async def add(self, bindings: Iterable[AclBinding]) -> None:
        new = [b for b in dict.fromkeys(bindings) if b not in self.bindings]
        if new:
            await self._put([StateEntry(b.key(), b"1") for b in new])
            self.bindings.update(new)
            self.version += 1

    async def remove(self, flt: AclFilter) -> list[AclBinding]:
        gone = self.find(flt)
        if gone:
            await self._put([StateEntry(b.key(), None) for b in gone])
            self.bindings.difference_update(gone)
            self.version += 1
        return gone

    async def _put(self, entries: list[StateEntry]) -> None:
        if self._log is None:
            raise RuntimeError("the ACL store is not open")
        await self._log.put(entries, durable=True)


def _order(b: AclBinding) -> tuple[int, str, int, str, str, int, int]:
    return (
        int(b.resource_type),
        b.resource_name,
        int(b.pattern_type),
        b.principal,
        b.host,
        int(b.operation),
        int(b.permission),
    )
