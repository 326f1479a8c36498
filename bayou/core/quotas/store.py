"""The quota store: every client quota, persisted in the state log ``__bayou_quotas``.

One entry per entity: the key is the entity as JSON (``[["user","alice"],["client-id",null]]``,
null for ``<default>``), the value a JSON object of its quotas (``{"producer_byte_rate":
1048576.0}``); an entity left without quotas is a tombstone.  ``open`` replays the log.  A
change is written, fsynced, before it applies in memory and is answered, and bumps
``version`` so every door re-resolves the limits of its clients on their next request.  On
a shared engine the changes other brokers write are applied as they land (``apply``, the
replay's own path; ``bayou/core/state_follow.py``), with the same effect.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence

from bayou.core.quotas.entities import (
    TYPE_ORDER,
    DescribeFilter,
    Entity,
    QuotaRequestError,
    Values,
    check_alteration,
    entity_text,
    keys_for,
    make_entity,
)
from bayou.core.state_follow import follow
from bayou.storage.engine import StateEntry, StateLog, StateStore, latest

QUOTAS_LOG = "__bayou_quotas"

# One AlterClientQuotas entry: the entity's (type, name) pairs and (key, value or None) ops
Alteration = tuple[Sequence[tuple[str, str | None]], Sequence[tuple[str, float | None]]]


class QuotaStore:
    """See the module docstring."""

    def __init__(self) -> None:
        self.entities: dict[Entity, Values] = {}
        self.version = 0
        self._log: StateLog | None = None

    async def open(self, state: StateStore, on_change: Callable[[], None] = lambda: None) -> None:
        """Replay the log; on a shared engine, go on applying what other brokers write to
        it (``state_follow.py``), calling ``on_change`` after each change."""
        self._log = await state.open_log(QUOTAS_LOG)
        self.apply(list((await latest(self._log)).values()))

        def followed(entries: list[StateEntry]) -> None:
            self.apply(entries)
            on_change()

        follow(self._log, followed)

    def apply(self, entries: list[StateEntry]) -> None:
        """Entries of the log, in order (the replay at start, and other brokers' writes)."""
        for entry in entries:
            decoded = _decode(entry.key, entry.value)
            if decoded is not None:
                self.entities[decoded[0]] = decoded[1]
                continue
            entity = _entity(entry.key)
            if entity is not None:  # a tombstone, or no quota this release knows
                self.entities.pop(entity, None)
        self.version += 1

    def describe(self, flt: DescribeFilter) -> list[tuple[Entity, Values]]:
        found = [(e, dict(v)) for e, v in self.entities.items() if flt.matches(e)]
        return sorted(found, key=lambda item: _order(item[0]))

    async def alter(
        self, alterations: Sequence[Alteration], validate_only: bool = False
    ) -> list[QuotaRequestError | None]:
        """Apply each entry that is valid (all of its changes, or none); one result per entry,
        in order.  Valid entries are written together, durably, before they apply."""
        results: list[QuotaRequestError | None] = []
        updated: dict[Entity, Values] = {}
        seen: set[Entity] = set()
        for pairs, ops in alterations:
            try:
                entity, changes = check_alteration(pairs, ops)
                if entity in seen:
                    raise QuotaRequestError(
                        "INVALID_REQUEST", f"Ignoring duplicate entity {entity_text(entity)}"
                    )
            except QuotaRequestError as exc:
                results.append(exc)
                continue
            seen.add(entity)
            values = dict(updated.get(entity, self.entities.get(entity, {})))
            for key, value in changes.items():
                if value is None:
                    values.pop(key, None)
                else:
                    values[key] = float(value)
            if values != self.entities.get(entity, {}):
                updated[entity] = values
            results.append(None)
        if updated and not validate_only:
            if self._log is None:
                raise RuntimeError("the quota store is not open")
            await self._log.put(
                [StateEntry(_key(e), _value(v)) for e, v in updated.items()], durable=True
            )
            for entity, values in updated.items():
                if values:
                    self.entities[entity] = values
                else:
                    self.entities.pop(entity, None)
            self.version += 1
        return results


def _order(entity: Entity) -> tuple[tuple[int, int, str], ...]:
    return tuple((TYPE_ORDER[t], 0 if n is None else 1, n or "") for t, n in entity)


def _key(entity: Entity) -> bytes:
    return json.dumps([[t, n] for t, n in entity], separators=(",", ":")).encode()


def _value(values: Values) -> bytes | None:
    return json.dumps(values, sort_keys=True).encode() if values else None


def _entity(key: bytes) -> Entity | None:
    try:
        pairs = json.loads(key)
        entity = make_entity((str(t), None if n is None else str(n)) for t, n in pairs)
    except (ValueError, TypeError, AttributeError):
        return None
    if not entity or any(t not in TYPE_ORDER for t, _ in entity):
        return None
    return entity


def _decode(key: bytes, value: bytes | None) -> tuple[Entity, Values] | None:
    entity = _entity(key)
    if entity is None:
        return None
    try:
        raw = json.loads(value or b"{}")
        allowed = keys_for(entity)
        values = {str(k): float(v) for k, v in raw.items() if k in allowed}
    except (ValueError, TypeError, AttributeError):
        return None
    return (entity, values) if values else None
