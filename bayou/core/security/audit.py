"""The audit log: one structured line per failed login and per denied operation, rate-limited.

Lines go to the ``bayou.audit`` logger as ``audit {json}`` — ``event`` (``auth_failed`` or
``denied``), ``door``, ``host`` and what was tried — so they can be filtered and parsed.  A
client can trigger them at will, so each (event, host, principal, resource) logs at most once
a minute; the next line says how many were suppressed (``RateLimitedLog``).  Passwords and
tokens never appear.
"""

from __future__ import annotations

import json
import logging

from bayou.log_limits import RateLimitedLog

log = logging.getLogger("bayou.audit")


class Audit:
    def __init__(self) -> None:
        self._limited = RateLimitedLog(log)

    def auth_failed(self, door: str, host: str, mechanism: str, user: str, reason: str) -> None:
        doc = {
            "event": "auth_failed",
            "door": door,
            "host": host,
            "mechanism": mechanism,
            "user": user[:256],
            "reason": reason,
        }
        self._limited.warning(("auth", host, user[:256]), "audit %s", json.dumps(doc))

    def denied(
        self, door: str, principal: str, host: str, operation: str, resource: str, name: str
    ) -> None:
        doc = {
            "event": "denied",
            "door": door,
            "principal": principal,
            "host": host,
            "operation": operation,
            "resource_type": resource,
            "resource_name": name,
        }
        self._limited.info(
            ("denied", host, principal, operation, resource, name), "audit %s", json.dumps(doc)
        )
