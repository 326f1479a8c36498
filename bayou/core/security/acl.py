"""Kafka's ACL model: resource types, pattern types, operations, permissions, bindings, filters.

The wire values are Kafka's (``ResourceType``, ``PatternType``, ``AclOperation``,
``AclPermissionType``), so CreateAcls/DescribeAcls/DeleteAcls carry them unchanged and every
door asks the same questions in the same words.  A binding is (resource type, resource name,
pattern type — literal or prefixed —, principal, host, operation, permission); a filter is the
same with "any" in any place, plus the MATCH pattern type (every binding that applies to the
named resource: the literal name, the literal wildcard ``*`` and every prefix of the name), as
Kafka's ``AclBindingFilter`` means them.
"""

from __future__ import annotations

import enum
import json
from dataclasses import dataclass

WILDCARD = "*"  # the resource name, principal or host that matches every one
WILDCARD_PRINCIPAL = "User:*"


class ResourceType(enum.IntEnum):
    UNKNOWN = 0
    ANY = 1
    TOPIC = 2
    GROUP = 3
    CLUSTER = 4
    TRANSACTIONAL_ID = 5
    DELEGATION_TOKEN = 6
    USER = 7


class PatternType(enum.IntEnum):
    UNKNOWN = 0
    ANY = 1
    MATCH = 2
    LITERAL = 3
    PREFIXED = 4


class AclOperation(enum.IntEnum):
    UNKNOWN = 0
    ANY = 1
    ALL = 2
    READ = 3
    WRITE = 4
    CREATE = 5
    DELETE = 6
    ALTER = 7
    DESCRIBE = 8
    CLUSTER_ACTION = 9
    DESCRIBE_CONFIGS = 10
    ALTER_CONFIGS = 11
    IDEMPOTENT_WRITE = 12
    CREATE_TOKENS = 13
    DESCRIBE_TOKENS = 14


class Permission(enum.IntEnum):
    UNKNOWN = 0
    ANY = 1
    DENY = 2
    ALLOW = 3


CLUSTER_NAME = "kafka-cluster"  # the one cluster resource's name

_O = AclOperation
# Kafka's ``AclEntry.supportedOperations``: what can be granted on each resource type.
SUPPORTED_OPERATIONS: dict[ResourceType, frozenset[AclOperation]] = {
    ResourceType.TOPIC: frozenset(
        {_O.READ, _O.WRITE, _O.CREATE, _O.DESCRIBE, _O.DELETE, _O.ALTER}
        | {_O.DESCRIBE_CONFIGS, _O.ALTER_CONFIGS}
    ),
    ResourceType.GROUP: frozenset({_O.READ, _O.DESCRIBE, _O.DELETE}),
    ResourceType.CLUSTER: frozenset(
        {_O.CREATE, _O.CLUSTER_ACTION, _O.DESCRIBE_CONFIGS, _O.ALTER_CONFIGS}
        | {_O.IDEMPOTENT_WRITE, _O.ALTER, _O.DESCRIBE}
    ),
    ResourceType.TRANSACTIONAL_ID: frozenset({_O.DESCRIBE, _O.WRITE}),
    ResourceType.DELEGATION_TOKEN: frozenset({_O.DESCRIBE}),
    ResourceType.USER: frozenset({_O.CREATE_TOKENS, _O.DESCRIBE_TOKENS}),
}

# An ALLOW of the key also allows these (Kafka's ``AclAuthorizer``): anything but DESCRIBE
# implies DESCRIBE's question, ALTER_CONFIGS implies DESCRIBE_CONFIGS.
IMPLIED_BY: dict[AclOperation, frozenset[AclOperation]] = {
    _O.DESCRIBE: frozenset({_O.DESCRIBE, _O.READ, _O.WRITE, _O.DELETE, _O.ALTER, _O.ALL}),
    _O.DESCRIBE_CONFIGS: frozenset({_O.DESCRIBE_CONFIGS, _O.ALTER_CONFIGS, _O.ALL}),
}


def allowing(operation: AclOperation) -> frozenset[AclOperation]:
    """The operations whose ALLOW answers yes to ``operation``."""
    return IMPLIED_BY.get(operation, frozenset({operation, _O.ALL}))


@dataclass(frozen=True)
class AclBinding:
    """One ACL (see the module docstring)."""

    resource_type: ResourceType
    resource_name: str
    pattern_type: PatternType
    principal: str
    host: str
    operation: AclOperation
    permission: Permission

    def matches_resource(self, resource_type: ResourceType, name: str) -> bool:
        """Does this binding apply to the resource ``(resource_type, name)``?"""
        if self.resource_type != resource_type:
            return False
        if self.pattern_type == PatternType.LITERAL:
            return self.resource_name in (name, WILDCARD)
        return self.pattern_type == PatternType.PREFIXED and name.startswith(self.resource_name)

    def key(self) -> bytes:
        """The binding's identity in the ACL state log."""
        return json.dumps(
            [
                int(self.resource_type),
                self.resource_name,
                int(self.pattern_type),
                self.principal,
                self.host,
                int(self.operation),
                int(self.permission),
            ],
            separators=(",", ":"),
        ).encode()

    @classmethod
    def from_key(cls, key: bytes) -> AclBinding:
        rt, name, pt, principal, host, op, perm = json.loads(key)
        return cls(
            ResourceType(rt),
            str(name),
            PatternType(pt),
            str(principal),
            str(host),
            AclOperation(op),
            Permission(perm),
        )

    def problem(self) -> str | None:
        """Why Kafka would refuse to create this binding, or None."""
        if self.resource_type in (ResourceType.ANY, ResourceType.UNKNOWN):
            return "Invalid resource type"
        if self.pattern_type not in (PatternType.LITERAL, PatternType.PREFIXED):
            return "Invalid pattern type"
        if self.operation in (_O.ANY, _O.UNKNOWN):
            return "Invalid operation"
        if self.permission not in (Permission.ALLOW, Permission.DENY):
            return "Invalid permission type"
        if not self.resource_name:
            return "Resource name must not be empty"
        if self.resource_type == ResourceType.CLUSTER and self.resource_name != CLUSTER_NAME:
            return f"The only valid name for the CLUSTER resource is {CLUSTER_NAME}"
        if ":" not in self.principal:
            return f"Could not parse principal from `{self.principal}` (no colon is present)"
        if self.operation != _O.ALL and self.operation not in SUPPORTED_OPERATIONS.get(
            self.resource_type, frozenset()
        ):
            return (
                f"ACL operation {self.operation.name} is not valid for resource type "
                f"{self.resource_type.name}"
            )
        return None


@dataclass(frozen=True)
class AclFilter:
    """Kafka's ``AclBindingFilter``: None matches any name, principal or host."""

    resource_type: ResourceType = ResourceType.ANY
    resource_name: str | None = None
    pattern_type: PatternType = PatternType.ANY
    principal: str | None = None
    host: str | None = None
    operation: AclOperation = AclOperation.ANY
    permission: Permission = Permission.ANY

    def matches(self, b: AclBinding) -> bool:
        if self.resource_type != ResourceType.ANY and b.resource_type != self.resource_type:
            return False
        if not self._matches_pattern(b):
            return False
        if self.principal is not None and b.principal != self.principal:
            return False
        if self.host is not None and b.host != self.host:
            return False
        if self.operation != AclOperation.ANY and b.operation != self.operation:
            return False
        return self.permission == Permission.ANY or b.permission == self.permission

    def _matches_pattern(self, b: AclBinding) -> bool:
        name, pattern = self.resource_name, self.pattern_type
        if pattern == PatternType.MATCH:
            if name is None:
                return True
            if b.pattern_type == PatternType.LITERAL:
                return b.resource_name in (name, WILDCARD)
            return b.pattern_type == PatternType.PREFIXED and name.startswith(b.resource_name)
        if pattern not in (PatternType.ANY, b.pattern_type):
            return False
        return name is None or b.resource_name == name
