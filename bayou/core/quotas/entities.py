"""Client quota entities and keys, as Kafka names them (KIP-55, KIP-257, KIP-546, KIP-612).

An *entity* is what a quota is set on: a user, a client id, a user and a client id together,
or an IP address; a name of None is that type's ``<default>``.  It is kept as a tuple of
(type, name) pairs in a fixed type order, so equal entities are equal tuples.  Which keys an
entity may carry depends on its types: ``producer_byte_rate``, ``consumer_byte_rate``
(bytes/s, whole numbers), ``request_percentage`` and ``controller_mutation_rate`` on users and
client ids; ``connection_creation_rate`` (connections/s, a whole number) on IP addresses.

``check_alteration`` answers what Kafka's controller answers for one AlterClientQuotas entry
(``ClientQuotaControlManager``), and ``DescribeFilter`` is the DescribeClientQuotas filter
with Kafka's checks and matching (``ClientQuotasImage.describe``).  Pure data: no I/O.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

USER, CLIENT_ID, IP = "user", "client-id", "ip"
TYPE_ORDER = {USER: 0, CLIENT_ID: 1, IP: 2}

PRODUCER_BYTE_RATE = "producer_byte_rate"
CONSUMER_BYTE_RATE = "consumer_byte_rate"
REQUEST_PERCENTAGE = "request_percentage"
CONTROLLER_MUTATION_RATE = "controller_mutation_rate"
CONNECTION_CREATION_RATE = "connection_creation_rate"

CLIENT_KEYS = (PRODUCER_BYTE_RATE, CONSUMER_BYTE_RATE, REQUEST_PERCENTAGE, CONTROLLER_MUTATION_RATE)
IP_KEYS = (CONNECTION_CREATION_RATE,)
WHOLE_KEYS = frozenset({PRODUCER_BYTE_RATE, CONSUMER_BYTE_RATE, CONNECTION_CREATION_RATE})
INT_MAX = 2**31 - 1

# (type, name or None for <default>), in TYPE_ORDER
Entity = tuple[tuple[str, str | None], ...]
Values = dict[str, float]

EXACT, DEFAULT, SPECIFIED = 0, 1, 2  # DescribeClientQuotas match types


class QuotaRequestError(Exception):
    """A request Kafka refuses: ``code`` is the Kafka error name (INVALID_REQUEST,
    UNSUPPORTED_VERSION), ``message`` its text."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


def make_entity(pairs: Iterable[tuple[str, str | None]]) -> Entity:
    """The canonical entity of (type, name) pairs (assumed checked)."""
    return tuple(sorted(pairs, key=lambda p: TYPE_ORDER.get(p[0], 9)))


def entity_text(entity: Entity) -> str:
    """``user alice, client-id <default>``: for messages and the CLI."""
    return ", ".join(f"{t} {'<default>' if n is None else n}" for t, n in entity)


def canonical_ip(text: str) -> str | None:
    """``text`` as an IP address in its standard form (an IPv4-mapped IPv6 address as the
    IPv4 one), or None when it is not an IP literal."""
    try:
        address = ipaddress.ip_address(text.strip("[]"))
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return str(address.ipv4_mapped)
    return str(address)


def check_entity(pairs: Sequence[tuple[str, str | None]]) -> Entity:
    """The canonical entity of an AlterClientQuotas entry, or ``QuotaRequestError``."""
    if not pairs:
        raise QuotaRequestError("INVALID_REQUEST", "Invalid empty client quota entity")
    seen: dict[str, str | None] = {}
    for kind, name in pairs:
        if kind in seen:
            raise QuotaRequestError(
                "INVALID_REQUEST",
                f"Invalid empty client quota entity, duplicate entity entry {kind}",
            )
        if kind not in TYPE_ORDER:
            raise QuotaRequestError(
                "INVALID_REQUEST", f"Unhandled client quota entity type: {kind}"
            )
        if name is not None and not name:
            raise QuotaRequestError("INVALID_REQUEST", f"Empty {kind} not supported")
        seen[kind] = name
    if IP in seen:
        if len(seen) > 1:
            raise QuotaRequestError("INVALID_REQUEST", "Invalid empty client quota entity")
        name = seen[IP]
        if name is not None:
            ip = canonical_ip(name)
            if ip is None:  # Kafka also resolves host names; a lookup has no place here
                raise QuotaRequestError("INVALID_REQUEST", f"{name} is not a valid IP.")
            seen[IP] = ip
    return make_entity(seen.items())


def keys_for(entity: Entity) -> tuple[str, ...]:
    return IP_KEYS if entity[0][0] == IP else CLIENT_KEYS


def check_value(entity: Entity, key: str, value: float) -> None:
    """Raise ``QuotaRequestError`` unless ``key`` may be set to ``value`` on ``entity``."""
    if key not in keys_for(entity):
        raise QuotaRequestError("INVALID_REQUEST", f"Invalid configuration key {key}")
    if value != value or value in (float("inf"), float("-inf")):
        raise QuotaRequestError("INVALID_REQUEST", f"Configuration {key} must be a number")
    if key in WHOLE_KEYS and abs(round(value) - value) > 1e-6:
        kind = "an Int" if key == CONNECTION_CREATION_RATE else "a Long"
        raise QuotaRequestError("INVALID_REQUEST", f"Configuration {key} must be {kind} value")
    if key == CONNECTION_CREATION_RATE:
        if not 0 <= value <= INT_MAX:  # 0: refuse every connection (Kafka's range)
            raise QuotaRequestError(
                "INVALID_REQUEST", f"Configuration {key} must be between 0 and {INT_MAX}"
            )
    elif value <= 0:  # a rate of 0 has no throttle time that would bring a client under it
        raise QuotaRequestError("INVALID_REQUEST", f"Configuration {key} must be positive")


def check_alteration(
    pairs: Sequence[tuple[str, str | None]], ops: Sequence[tuple[str, float | None]]
) -> tuple[Entity, dict[str, float | None]]:
    """One AlterClientQuotas entry checked: its entity and {key: new value, None: remove}."""
    changes: dict[str, float | None] = {}
    for key, value in ops:
        if key in changes:
            raise QuotaRequestError(
                "INVALID_REQUEST",
                f"Duplicate quota key {key} not updating quota for this entity",
            )
        changes[key] = value
    entity = check_entity(pairs)
    for key, value in changes.items():
        if value is not None:
            check_value(entity, key, value)
    return entity, changes


@dataclass(frozen=True)
class DescribeFilter:
    """A DescribeClientQuotas filter: exact names (None: the default) and "any name" types."""

    exact: Mapping[str, str | None]
    specified: frozenset[str]
    strict: bool

    @classmethod
    def parse(
        cls, components: Sequence[tuple[str, int, str | None]], strict: bool
    ) -> DescribeFilter:
        """From (entity type, match type, match) components; ``QuotaRequestError`` with
        Kafka's messages for a filter Kafka refuses."""
        exact: dict[str, str | None] = {}
        specified: set[str] = set()
        for kind, match_type, match in components:
            if not kind:
                raise QuotaRequestError("INVALID_REQUEST", "Invalid empty entity type.")
            if kind in exact or kind in specified:
                raise QuotaRequestError(
                    "INVALID_REQUEST",
                    f"Entity type {kind} cannot appear more than once in the filter.",
                )
            if kind not in TYPE_ORDER:
                raise QuotaRequestError("UNSUPPORTED_VERSION", f"Unsupported entity type {kind}")
            if match_type == EXACT:
                if match is None:
                    raise QuotaRequestError(
                        "INVALID_REQUEST",
                        "Request specified MATCH_TYPE_EXACT, but set match string to null.",
                    )
                exact[kind] = canonical_ip(match) or match if kind == IP else match
            elif match_type in (DEFAULT, SPECIFIED):
                if match is not None:
                    name = "MATCH_TYPE_DEFAULT" if match_type == DEFAULT else "MATCH_TYPE_SPECIFIED"
                    raise QuotaRequestError(
                        "INVALID_REQUEST",
                        f"Request specified {name}, but also specified a match string.",
                    )
                if match_type == DEFAULT:
                    exact[kind] = None
                else:
                    specified.add(kind)
            else:
                raise QuotaRequestError("INVALID_REQUEST", f"Unknown match type {match_type}")
        kinds = set(exact) | specified
        if IP in kinds and kinds & {USER, CLIENT_ID}:
            raise QuotaRequestError(
                "INVALID_REQUEST",
                "Invalid entity filter component combination. IP filter component should not "
                "be used with user or clientId filter component.",
            )
        return cls(exact, frozenset(specified), strict)

    def matches(self, entity: Entity) -> bool:
        names = dict(entity)
        for kind, name in self.exact.items():
            if kind not in names or names[kind] != name:
                return False
        if any(kind not in names for kind in self.specified):
            return False
        if self.strict:
            return len(names) == len(self.exact) + len(self.specified)
        return True
