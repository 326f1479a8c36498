"""The authorizer: Kafka's ``AclAuthorizer`` questions, answered from the ACL store.

``authorize(principal, host, operation, resource_type, name)``:

1. no authorizer configured: yes (Kafka without ``authorizer.class.name``);
2. a super user (``--super-user``): yes;
3. no ACL applies to the resource at all (none literal on its name, none literal ``*``,
   none prefixed by a prefix of its name, whoever they are for): the
   ``allow.everyone.if.no.acl.found`` setting (false by default);
4. a DENY for the principal (or ``User:*``) from the host (or ``*``) for the operation (or
   ALL): no — deny beats allow;
5. an ALLOW likewise, where an ALLOW of READ, WRITE, DELETE or ALTER also answers DESCRIBE
   and ALTER_CONFIGS also answers DESCRIBE_CONFIGS: yes;
6. otherwise no.

``authorize_any`` is Kafka's ``authorizeByResourceType`` (does the principal hold the
operation on *some* resource of the type — how an idempotent producer without a
transactional id is allowed); ``operations`` the set a principal holds on a resource (the
``*_authorized_operations`` fields).  Answers are cached until the ACL store changes.
"""

from __future__ import annotations

from bayou.core.security.acl import (
    SUPPORTED_OPERATIONS,
    WILDCARD,
    WILDCARD_PRINCIPAL,
    AclBinding,
    AclOperation,
    PatternType,
    Permission,
    ResourceType,
    allowing,
)
from bayou.core.security.acl_store import AclStore

CACHE_LIMIT = 50_000

_Question = tuple[str, str, AclOperation, ResourceType, str]


class Authorizer:
    def __init__(
        self,
        acls: AclStore,
        *,
        enabled: bool,
        super_users: frozenset[str] = frozenset(),
        allow_if_no_acl: bool = False,
    ) -> None:
        self.acls = acls
        self.enabled = enabled
        self.super_users = super_users
        self.allow_if_no_acl = allow_if_no_acl
        self._cache: dict[_Question, bool] = {}
        self._cache_version = -1

    def is_super(self, principal: str) -> bool:
        return principal in self.super_users

    def authorize(
        self,
        principal: str,
        host: str,
        operation: AclOperation,
        resource_type: ResourceType,
        name: str,
    ) -> bool:
        if not self.enabled or principal in self.super_users:
            return True
        if self._cache_version != self.acls.version or len(self._cache) > CACHE_LIMIT:
            self._cache.clear()
            self._cache_version = self.acls.version
        question = (principal, host, operation, resource_type, name)
        answer = self._cache.get(question)
        if answer is None:
            answer = self._decide(principal, host, operation, resource_type, name)
            self._cache[question] = answer
        return answer

    def _decide(
        self,
        principal: str,
        host: str,
        operation: AclOperation,
        resource_type: ResourceType,
        name: str,
    ) -> bool:
        applying = [b for b in self.acls.bindings if b.matches_resource(resource_type, name)]
        if not applying:
            return self.allow_if_no_acl
        mine = [b for b in applying if _for(b, principal, host)]
        if any(
            b.permission == Permission.DENY and b.operation in (operation, AclOperation.ALL)
            for b in mine
        ):
            return False
        allowed_by = allowing(operation)
        return any(b.permission == Permission.ALLOW and b.operation in allowed_by for b in mine)

    def authorize_any(
        self, principal: str, host: str, operation: AclOperation, resource_type: ResourceType
    ) -> bool:
        """Kafka's ``authorizeByResourceType``: an ALLOW on some resource of the type that
        no DENY covers."""
        if not self.enabled or principal in self.super_users:
            return True
        ops = {operation, AclOperation.ALL}
        mine = [
            b
            for b in self.acls.bindings
            if b.resource_type == resource_type and b.operation in ops and _for(b, principal, host)
        ]
        denies = [b for b in mine if b.permission == Permission.DENY]
        if any(
            b.pattern_type == PatternType.LITERAL and b.resource_name == WILDCARD for b in denies
        ):
            return False
        for allow in (b for b in mine if b.permission == Permission.ALLOW):
            covered = any(
                (
                    d.pattern_type == PatternType.PREFIXED
                    and allow.resource_name.startswith(d.resource_name)
                )
                or (d.pattern_type == allow.pattern_type and d.resource_name == allow.resource_name)
                for d in denies
            )
            if not covered:
                return True
        return False

    def operations(
        self, principal: str, host: str, resource_type: ResourceType, name: str
    ) -> frozenset[AclOperation]:
        supported = SUPPORTED_OPERATIONS.get(resource_type, frozenset())
        return frozenset(
            op for op in supported if self.authorize(principal, host, op, resource_type, name)
        )


def _for(b: AclBinding, principal: str, host: str) -> bool:
    return b.principal in (principal, WILDCARD_PRINCIPAL) and b.host in (host, WILDCARD)
