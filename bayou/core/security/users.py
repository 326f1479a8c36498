"""The user store: SCRAM credentials per user and mechanism, in the state log ``__bayou_users``.

Theory of operation
-------------------
One entry per user: the key is the user name, the value a JSON object of mechanism name →
credential (salt, iterations, stored and server keys — never the password); a user without
credentials is a tombstone.  ``open`` replays the log; every change is written (fsynced)
before it is applied in memory and answered, so a user that was acknowledged survives a
crash.  On a shared engine the changes other brokers write are applied as they land
(``apply``, the replay's own path; ``bayou/core/state_follow.py``).  The same store serves
every door: SCRAM exchanges look credentials up, plain passwords (SASL PLAIN, HTTP Basic,
MQTT, AMQP) are checked against the strongest one.

Checking a plain password costs one PBKDF2 (a few milliseconds at 4096 iterations); a
client that connects often with the same password pays it once: successful checks are
remembered, keyed by an HMAC of the password under a key made at start (never the password
itself), for as long as the user's credential is unchanged.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
from collections import OrderedDict

from bayou.core.security.scram import MECHANISMS, SHA_512, Credential, Mechanism
from bayou.core.state_follow import follow
from bayou.storage.engine import StateEntry, StateLog, StateStore, latest

USERS_LOG = "__bayou_users"
INTERNAL_USER = "__bayou_internal"  # the broker's own clients (``Security``); never stored
VERIFIED_CACHE = 4096


class UserStore:
    """Users and their SCRAM credentials (see the module docstring)."""

    def __init__(self) -> None:
        self._users: dict[str, dict[str, Credential]] = {}
        self._log: StateLog | None = None
        self._cache_key = os.urandom(32)
        self._verified: OrderedDict[tuple[str, bytes], Credential] = OrderedDict()

    async def open(self, state: StateStore) -> None:
        self._log = await state.open_log(USERS_LOG)
        self.apply(list((await latest(self._log)).values()))
        follow(self._log, self.apply)

    def apply(self, entries: list[StateEntry]) -> None:
        """Entries of the log, in order: the replay at start, and what other brokers of a
        shared engine write later (``state_follow.py``).  A changed or deleted credential
        stops matching at once: logins look the user up each time (connections already
        logged in keep their session until they log in again, as on Kafka)."""
        for entry in entries:
            user = entry.key.decode("utf-8", "replace")
            creds = _decode(entry.value) if entry.value is not None else {}
            if creds:
                self._users[user] = creds
            else:
                self._users.pop(user, None)

    def names(self) -> list[str]:
        return sorted(self._users)

    def credentials(self, user: str) -> dict[str, Credential]:
        return dict(self._users.get(user, {}))

    def credential(self, user: str, mechanism: Mechanism) -> Credential | None:
        if user == INTERNAL_USER:  # a stored user of that name never logs in
            return None
        return self._users.get(user, {}).get(mechanism.name)

    def check_password(self, user: str, password: bytes) -> bool:
        """Does ``password`` match the user's credential (the strongest one it has)?"""
        creds = self._users.get(user) if user != INTERNAL_USER else None
        if not creds:
            return False
        cred = creds.get(SHA_512.name) or next(iter(creds.values()))
        key = (user, hmac.new(self._cache_key, password, hashlib.sha256).digest())
        if self._verified.get(key) is cred:
            self._verified.move_to_end(key)
            return True
        if not cred.check_password(password):
            return False
        self._verified[key] = cred
        if len(self._verified) > VERIFIED_CACHE:
            self._verified.popitem(last=False)
        return True

    async def upsert(self, user: str, credential: Credential) -> None:
        creds = {**self._users.get(user, {}), credential.mechanism.name: credential}
        await self._write(user, creds)

    async def delete(self, user: str, mechanism: Mechanism | None = None) -> bool:
        """Remove one mechanism's credential (all of them when None); False if none was."""
        creds = dict(self._users.get(user, {}))
        if mechanism is None:
            found = bool(creds)
            creds = {}
        else:
            found = creds.pop(mechanism.name, None) is not None
        if found:
            await self._write(user, creds)
        return found

    async def _write(self, user: str, creds: dict[str, Credential]) -> None:
        if self._log is None:
            raise RuntimeError("the user store is not open")
        value = json.dumps({n: c.to_json() for n, c in creds.items()}).encode() if creds else None
        await self._log.put([StateEntry(user.encode(), value)], durable=True)
        if creds:
            self._users[user] = creds
        else:
            self._users.pop(user, None)


def _decode(value: bytes) -> dict[str, Credential]:
    doc = json.loads(value)
    return {
        name: Credential.from_json(MECHANISMS[name], cred)
        for name, cred in doc.items()
        if name in MECHANISMS
    }
