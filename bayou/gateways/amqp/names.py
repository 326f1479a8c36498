"""AMQP queue and exchange names ↔ Kafka topic names.

Theory of operation
-------------------
AMQP names are any UTF-8 string of up to 255 bytes (Celery's worker declares
``celery@HOST.celery.pidbox``; reply queues may hold ``:``); Kafka topic names are 1 to 249
characters of ``[A-Za-z0-9._-]``, not ``.`` or ``..``, and two topics whose names differ only
by ``.`` versus ``_`` collide.  ``topic_for`` maps every AMQP name onto a topic name, the
same way every time, and never two names onto one topic (nor onto two colliding ones):

* A **plain** name — already a legal topic name, and not starting with ``amqp--`` — is its
  own topic.  Every name that was usable before this mapping keeps its topic.
* Any other name becomes ``amqp--`` + its **escaped** form: ASCII letters, digits and ``.``
  stay; every other character is written as ``-xx`` per UTF-8 byte (two lower-case hex
  digits; ``-`` itself is ``-2d``, ``_`` is ``-5f``, ``@`` is ``-40``, ``:`` is ``-3a``).  So
  ``celery@web-1.celery.pidbox`` is the topic ``amqp--celery-40web-2d1.celery.pidbox``.
  Escaped names hold no ``_``, so no two of them collide on ``.`` versus ``_``; and they all
  start with the prefix no plain name has.
* When that is longer than 249 characters (names of more than 81 bytes full of escapes, or
  legal names of 250 to 255 characters), the topic is ``amqp--`` + as much of the escaped form
  as fits + ``-z`` + 32 hex digits of the name's SHA-256.  ``-z`` cannot occur in an escaped
  form, so these never meet the others.  This form is the one that cannot be read back from
  the topic name alone; the AMQP registry records the queue's name beside its topic.

``amqp_name`` reads a topic name back: itself for a plain name, the unescaped name for an
escaped one, and None for a digest form or for a topic that no AMQP name maps to (say one
a Kafka client created as ``amqp--x``, which is not how ``x`` is spelled).
"""

from __future__ import annotations

import hashlib
import re

PREFIX = "amqp--"
MAX_TOPIC = 249
DIGEST_MARK = "-z"
DIGEST_HEX = 32

_LEGAL = re.compile(r"[A-Za-z0-9._-]+")
_KEPT = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789.")
_HEX = frozenset("0123456789abcdef")


def is_plain(name: str) -> bool:
    """A name that is its own topic name."""
    return (
        len(name) <= MAX_TOPIC
        and name not in (".", "..")
        and not name.startswith(PREFIX)
        and _LEGAL.fullmatch(name) is not None
    )


def _escape(name: str) -> str:
    out: list[str] = []
    for char in name:
        if char in _KEPT:
            out.append(char)
        else:
            out.extend(f"-{byte:02x}" for byte in char.encode())
    return "".join(out)


def topic_for(name: str) -> str:
    """The Kafka topic holding AMQP queue (or exchange) ``name``."""
    if is_plain(name):
        return name
    escaped = _escape(name)
    if len(PREFIX) + len(escaped) <= MAX_TOPIC:
        return PREFIX + escaped
    keep = MAX_TOPIC - len(PREFIX) - len(DIGEST_MARK) - DIGEST_HEX
    cut = escaped[:keep]
    dash = cut.rfind("-", len(cut) - 2)
    if dash >= 0:  # do not end inside an escape
        cut = cut[:dash]
    digest = hashlib.sha256(name.encode()).hexdigest()[:DIGEST_HEX]
    return PREFIX + cut + DIGEST_MARK + digest


def amqp_name(topic: str) -> str | None:
    """The AMQP name whose topic is ``topic``, or None (digest form, or no such name)."""
    if not topic.startswith(PREFIX):
        return topic if is_plain(topic) else None
    raw = bytearray()
    text = topic[len(PREFIX) :]
    i = 0
    while i < len(text):
        char = text[i]
        if char != "-":
            if char not in _KEPT:
                return None
            raw += char.encode()
            i += 1
            continue
        pair = text[i + 1 : i + 3]
        if len(pair) != 2 or not set(pair) <= _HEX:
            return None  # the digest form (``-z``) or not an escape at all
        raw.append(int(pair, 16))
        i += 3
    try:
        name = raw.decode()
    except UnicodeDecodeError:
        return None
    return name if topic_for(name) == topic else None
