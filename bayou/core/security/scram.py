"""SCRAM (RFC 5802 / 7677): stored credentials and the server side of an exchange.

Theory of operation
-------------------
A credential is what Kafka stores: the salt, the iteration count, ``StoredKey =
H(HMAC(SaltedPassword, "Client Key"))`` and ``ServerKey = HMAC(SaltedPassword, "Server
Key")``, where ``SaltedPassword = PBKDF2(password, salt, iterations)``.  The password is never
kept.  Those keys serve both kinds of login: a SCRAM exchange (the client proves it knows the
salted password; the broker proves it knows ``ServerKey``) and a plain password (PLAIN on
Kafka, HTTP Basic, MQTT and AMQP) by recomputing ``StoredKey`` from the password.

``ScramServer`` is one exchange, sans-I/O: ``first(client_first) -> server_first`` and
``final(client_final) -> server_final``, raising ``ScramError`` on anything malformed or
wrong.  An unknown user gets a made-up salt and fails only at the proof, so the exchange
says nothing about which users exist.  ``ScramClient`` is the other side, for the CLI's own
requests over one socket (``bayou/cli/raw.py``).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
from collections.abc import Callable
from dataclasses import dataclass

MIN_ITERATIONS = 4096  # Kafka's ScramMechanism.minIterations
MAX_ITERATIONS = 16384  # Kafka's maxIterations
MAX_MESSAGE = 4096  # a SCRAM message longer than this is refused
_UNKNOWN_SALT_KEY = os.urandom(16)  # unknown users get a stable made-up salt per process


@dataclass(frozen=True)
class Mechanism:
    name: str
    code: int  # Kafka's ScramMechanism wire value
    hash_name: str

    @property
    def digest_size(self) -> int:
        return hashlib.new(self.hash_name).digest_size


SHA_256 = Mechanism("SCRAM-SHA-256", 1, "sha256")
SHA_512 = Mechanism("SCRAM-SHA-512", 2, "sha512")
MECHANISMS = {m.name: m for m in (SHA_256, SHA_512)}
BY_CODE = {m.code: m for m in (SHA_256, SHA_512)}


class ScramError(Exception):
    """The exchange failed (malformed message or wrong proof)."""


@dataclass(frozen=True)
class Credential:
    mechanism: Mechanism
    salt: bytes
    iterations: int
    stored_key: bytes
    server_key: bytes

    def to_json(self) -> dict[str, object]:
        b64 = base64.b64encode
        return {
            "salt": b64(self.salt).decode(),
            "iterations": self.iterations,
            "stored_key": b64(self.stored_key).decode(),
            "server_key": b64(self.server_key).decode(),
        }

    @classmethod
    def from_json(cls, mechanism: Mechanism, doc: dict[str, object]) -> Credential:
        d = base64.b64decode
        return cls(
            mechanism,
            d(str(doc["salt"])),
            int(str(doc["iterations"])),
            d(str(doc["stored_key"])),
            d(str(doc["server_key"])),
        )

    def check_password(self, password: bytes) -> bool:
        salted = salted_password(self.mechanism, password, self.salt, self.iterations)
        stored = _h(self.mechanism, _hmac(self.mechanism, salted, b"Client Key"))
        return hmac.compare_digest(stored, self.stored_key)


def _hmac(m: Mechanism, key: bytes, data: bytes) -> bytes:
    return hmac.new(key, data, m.hash_name).digest()


def _h(m: Mechanism, data: bytes) -> bytes:
    return hashlib.new(m.hash_name, data).digest()


def salted_password(m: Mechanism, password: bytes, salt: bytes, iterations: int) -> bytes:
    return hashlib.pbkdf2_hmac(m.hash_name, password, salt, iterations)


def credential_from_salted(m: Mechanism, salt: bytes, salted: bytes, iterations: int) -> Credential:
    """A credential from a salted password (what AlterUserScramCredentials carries)."""
    client_key = _hmac(m, salted, b"Client Key")
    return Credential(m, salt, iterations, _h(m, client_key), _hmac(m, salted, b"Server Key"))


def make_credential(m: Mechanism, password: bytes, iterations: int = MIN_ITERATIONS) -> Credential:
    salt = os.urandom(32)
    return credential_from_salted(
        m, salt, salted_password(m, password, salt, iterations), iterations
    )


def _attributes(message: str) -> dict[str, str]:
    out: dict[str, str] = {}
    for part in message.split(","):
        if len(part) < 2 or part[1] != "=":
            raise ScramError("malformed SCRAM attribute")
        out.setdefault(part[0], part[2:])
    return out


def _unescape(name: str) -> str:
    if "=" in name.replace("=2C", "").replace("=3D", ""):
        raise ScramError("malformed user name")
    return name.replace("=2C", ",").replace("=3D", "=")


class ScramServer:
    """One server-side SCRAM exchange (see the module docstring)."""

    def __init__(self, mechanism: Mechanism) -> None:
        self.mechanism = mechanism
        self.user = ""
        self.extensions: dict[str, str] = {}
        self._credential: Credential | None = None
        self._nonce = ""
        self._client_first_bare = ""
        self._server_first = ""

    def first(self, message: bytes, lookup: Callable[[str], Credential | None]) -> bytes:
        """``lookup(user) -> Credential | None``; returns the server-first message."""
        text = _text(message)
        parts = text.split(",", 2)
        if (
            len(parts) != 3
            or parts[0] not in ("n", "y")
            or not (parts[1] == "" or parts[1].startswith("a="))
        ):
            raise ScramError("malformed client-first message")
        bare = parts[2]
        attrs = _attributes(bare)
        if "n" not in attrs or "r" not in attrs or not attrs["r"]:
            raise ScramError("malformed client-first message")
        self.user = _unescape(attrs["n"])
        self.extensions = {k: v for k, v in attrs.items() if k not in ("n", "r", "m")}
        found = lookup(self.user)
        m = self.mechanism
        if found is not None and found.mechanism == m:
            self._credential = found
            salt, iterations = found.salt, found.iterations
        else:  # an unknown user: answer as for a known one, fail at the proof
            self._credential = None
            salt = hashlib.sha256(_UNKNOWN_SALT_KEY + self.user.encode()).digest()
            iterations = MIN_ITERATIONS
        self._nonce = attrs["r"] + os.urandom(18).hex()
        self._client_first_bare = bare
        self._server_first = f"r={self._nonce},s={base64.b64encode(salt).decode()},i={iterations}"
        return self._server_first.encode()

    def final(self, message: bytes) -> bytes:
        """Check the client's proof; the server-final message (``v=…``)."""
        text = _text(message)
        without_proof, sep, proof_part = text.rpartition(",p=")
        if not sep:
            raise ScramError("malformed client-final message")
        attrs = _attributes(without_proof)
        # Kafka's check is endsWith: librdkafka (2.x) sends its nonce before the server's
        # whole nonce (which already starts with it); the proof covers what it sent.
        if not attrs.get("r", "").endswith(self._nonce) or "c" not in attrs:
            raise ScramError("nonce mismatch")
        try:
            proof = base64.b64decode(proof_part, validate=True)
        except ValueError:
            raise ScramError("malformed proof") from None
        cred = self._credential
        m = self.mechanism
        if cred is None or len(proof) != m.digest_size:
            raise ScramError("invalid credentials")
        auth_message = f"{self._client_first_bare},{self._server_first},{without_proof}".encode()
        signature = _hmac(m, cred.stored_key, auth_message)
        client_key = bytes(a ^ b for a, b in zip(proof, signature, strict=True))
        if not hmac.compare_digest(_h(m, client_key), cred.stored_key):
            raise ScramError("invalid credentials")
        server_signature = _hmac(m, cred.server_key, auth_message)
        return b"v=" + base64.b64encode(server_signature)


class ScramClient:
    """One client-side SCRAM exchange: ``first()``, ``final(server_first)``, then
    ``verify(server_final)`` (the broker proves it knows the credential)."""

    def __init__(self, mechanism: Mechanism, user: str, password: bytes) -> None:
        self.mechanism = mechanism
        self._password = password
        name = user.replace("=", "=3D").replace(",", "=2C")
        self._nonce = base64.b64encode(os.urandom(18)).decode()
        self._first_bare = f"n={name},r={self._nonce}"
        self._server_signature = b""

    def first(self) -> bytes:
        return f"n,,{self._first_bare}".encode()

    def final(self, server_first: bytes) -> bytes:
        text = _text(server_first)
        attrs = _attributes(text)
        nonce, salt, iterations = attrs.get("r", ""), attrs.get("s"), attrs.get("i", "")
        if not nonce.startswith(self._nonce) or salt is None or not iterations.isdigit():
            raise ScramError("malformed server-first message")
        m = self.mechanism
        salted = salted_password(m, self._password, base64.b64decode(salt), int(iterations))
        client_key = _hmac(m, salted, b"Client Key")
        without_proof = f"c=biws,r={nonce}"
        auth_message = f"{self._first_bare},{text},{without_proof}".encode()
        signature = _hmac(m, _h(m, client_key), auth_message)
        proof = bytes(a ^ b for a, b in zip(client_key, signature, strict=True))
        self._server_signature = _hmac(m, _hmac(m, salted, b"Server Key"), auth_message)
        return f"{without_proof},p={base64.b64encode(proof).decode()}".encode()

    def verify(self, server_final: bytes) -> None:
        expected = b"v=" + base64.b64encode(self._server_signature)
        if not self._server_signature or not hmac.compare_digest(server_final, expected):
            raise ScramError("the broker's SCRAM signature does not match")


def _text(message: bytes) -> str:
    if len(message) > MAX_MESSAGE:
        raise ScramError("SCRAM message too long")
    try:
        return message.decode("utf-8")
    except UnicodeDecodeError:
        raise ScramError("SCRAM message is not UTF-8") from None
