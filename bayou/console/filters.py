"""The message browser's filter: one condition over a record, evaluated in the broker.

Grammar (one condition; a user types it, so every refusal says what was expected):

    key ~ TEXT              the key contains TEXT          (also ``==``, ``!=``)
    value ~ TEXT            the value contains TEXT
    header.NAME ~ TEXT      header NAME contains TEXT      (``header.NAME`` alone: present)
    $.a.b OP LITERAL        a JSON value's field, OP one of == != > >= < <= ~

LITERAL is JSON (``42``, ``"x"``, ``true``, ``null``) or a bare word taken as text.  A record
whose value is not JSON, or lacks the field, does not match a ``$`` condition.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from typing import Any

from bayou.protocol.kafka.records import DecodedRecord

Predicate = Callable[[DecodedRecord], bool]

_CONDITION = re.compile(
    r"^\s*(?P<subject>key|value|header\.[^\s=!<>~]+|\$(?:\.[A-Za-z0-9_\-]+)+)"
    r"\s*(?:(?P<op>==|!=|>=|<=|>|<|~)\s*(?P<literal>.+?))?\s*$"
)
_ORDERED = {">", ">=", "<", "<="}


class FilterError(ValueError):
    """The filter does not parse; the message says what was expected."""


def _literal(text: str) -> Any:
    try:
        return json.loads(text)
    except ValueError:
        return text


def _compare(op: str, have: Any, want: Any) -> bool:
    if op == "~":
        return (want if isinstance(want, str) else json.dumps(want)) in (
            have if isinstance(have, str) else json.dumps(have)
        )
    if op == "==":
        return bool(have == want)
    if op == "!=":
        return bool(have != want)
    numbers = (int, float)
    if isinstance(have, bool) or isinstance(want, bool):
        return False
    if isinstance(have, numbers) and isinstance(want, numbers):
        pass
    elif not (isinstance(have, str) and isinstance(want, str)):
        return False
    if op == ">":
        return bool(have > want)
    if op == ">=":
        return bool(have >= want)
    if op == "<":
        return bool(have < want)
    return bool(have <= want)


def _text(data: bytes | None) -> str | None:
    return None if data is None else data.decode("utf-8", "replace")


def _field(value: bytes | None, path: list[str]) -> tuple[bool, Any]:
    if value is None:
        return False, None
    try:
        node: Any = json.loads(value)
    except ValueError:
        return False, None
    for part in path:
        if isinstance(node, dict) and part in node:
            node = node[part]
        elif isinstance(node, list) and part.isdigit() and int(part) < len(node):
            node = node[int(part)]
        else:
            return False, None
    return True, node


def parse_filter(text: str) -> Predicate | None:
    """The predicate ``text`` names (None for an empty filter); FilterError explains."""
    if not text.strip():
        return None
    match = _CONDITION.match(text)
    if match is None:
        raise FilterError(
            "Expected one condition: key ~ TEXT, value ~ TEXT, header.NAME ~ TEXT or "
            "$.field OP VALUE (OP: == != > >= < <= ~)."
        )
    subject, op, raw = match["subject"], match["op"], match["literal"]
    if op is None and not subject.startswith("header."):
        raise FilterError(f"{subject} needs an operator and a value, e.g. {subject} ~ abc")
    want = _literal(raw) if raw is not None else None
    if subject in ("key", "value") or subject.startswith("header."):
        if op in _ORDERED:
            raise FilterError(f"{subject} compares as text: use ==, != or ~")
        wanted = want if isinstance(want, str) else json.dumps(want)

        def bytes_of(record: DecodedRecord) -> tuple[bool, str | None]:
            if subject == "key":
                return True, _text(record.key)
            if subject == "value":
                return True, _text(record.value)
            name = subject[len("header.") :]
            for header, data in record.headers:
                if header == name:
                    return True, _text(data)
            return False, None

        def text_match(record: DecodedRecord) -> bool:
            present, have = bytes_of(record)
            if op is None:
                return present
            if have is None:
                return op == "!="
            return _compare(op, have, wanted)

        return text_match
    path = subject.split(".")[1:]
    assert op is not None

    def json_match(record: DecodedRecord) -> bool:
        found, have = _field(record.value, path)
        return found and _compare(op, have, want)

    return json_match
