"""Cross-check the share-group schemas against the Java client that speaks them.

The reference JSON beside the checkout predates Kafka 4.1 (share APIs at their unstable v0,
or absent), so the schemas of the share APIs are checked against what kafka-clients 4.3
compiled from Kafka's own JSON: for every version, every field's name, wire type and
nullability, in order (``ShareClients.java schemas`` prints them).  Skipped, saying why,
without a JRE or the jar (``tests/support/kafka_java.py``).
"""

from __future__ import annotations

import re
import subprocess

import pytest

from bayou.protocol.kafka.schema import Field, Message, load_all
from tests.support.kafka_java import SOURCE, classpath, why_not

pytestmark = pytest.mark.skipif(why_not() is not None, reason=str(why_not()))

APIS = {
    "SHARE_GROUP_HEARTBEAT": 76,
    "SHARE_GROUP_DESCRIBE": 77,
    "SHARE_FETCH": 78,
    "SHARE_ACKNOWLEDGE": 79,
    "DESCRIBE_SHARE_GROUP_OFFSETS": 90,
    "ALTER_SHARE_GROUP_OFFSETS": 91,
    "DELETE_SHARE_GROUP_OFFSETS": 92,
}
SCALARS = {
    "bool": "BOOLEAN",
    "int8": "INT8",
    "int16": "INT16",
    "int32": "INT32",
    "int64": "INT64",
    "uuid": "UUID",
    "float64": "FLOAT64",
}


def snake(name: str) -> str:
    return re.sub(r"(?<!^)(?=[A-Z])", "_", name).lower()


def wire_type(f: Field, nullable: bool) -> str:
    """The name Kafka's compiled schema gives the field's type (flexible versions)."""
    if f.type.startswith("[]"):
        return "COMPACT_NULLABLE_ARRAY" if nullable else "COMPACT_ARRAY"
    if f.type == "string":
        return "COMPACT_NULLABLE_STRING" if nullable else "COMPACT_STRING"
    if f.type == "bytes":
        return "COMPACT_NULLABLE_BYTES" if nullable else "COMPACT_BYTES"
    if f.type == "records":
        return "COMPACT_RECORDS"
    return SCALARS.get(f.type, "STRUCT")


def ours(msg: Message, version: int) -> list[tuple[str, str, bool]]:
    out: list[tuple[str, str, bool]] = []

    def walk(fields: list[Field], path: str) -> None:
        for f in fields:
            if version not in f.versions or f.tag is not None:
                continue
            nullable = version in f.nullable
            name = path + snake(f.name)
            out.append((name, wire_type(f, nullable), nullable))
            children = f.fields or (msg.common[f.element][1] if f.element in msg.common else [])
            if children:
                walk(children, name + ".")

    walk(msg.fields, "")
    return out


@pytest.fixture(scope="module")
def theirs() -> dict[tuple[int, int, str], list[tuple[str, str, bool]]]:
    commands = "1\tschemas\t" + "\t".join(APIS) + "\n2\tquit\n"
    done = subprocess.run(
        ["java", "-cp", classpath(), str(SOURCE)],
        input=commands,
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    out: dict[tuple[int, int, str], list[tuple[str, str, bool]]] = {}
    ranges: dict[int, tuple[int, int]] = {}
    for line in done.stdout.splitlines():
        f = line.split("\t")
        if f[1] == "api":
            ranges[int(f[2])] = (int(f[3]), int(f[4]))
        elif f[1] == "field":
            key = (int(f[2]), int(f[3]), f[4])
            out.setdefault(key, []).append((f[5], f[6], f[7] == "true"))
    out[(-1, -1, "ranges")] = [(str(k), str(v), False) for k, v in sorted(ranges.items())]
    return out


@pytest.mark.parametrize("api", sorted(APIS.values()))
def test_share_schema_matches_kafka_clients(
    api: int, theirs: dict[tuple[int, int, str], list[tuple[str, str, bool]]]
) -> None:
    ranges = {int(k): v for k, v, _ in theirs[(-1, -1, "ranges")]}
    lo, hi = (int(x) for x in ranges[api].strip("()").split(","))
    for msg in load_all():
        if msg.api_key != api or msg.kind not in ("request", "response"):
            continue
        assert (msg.valid.lo, msg.valid.hi) == (lo, hi), msg.name
        for version in range(lo, hi + 1):
            assert ours(msg, version) == theirs[(api, version, msg.kind)], (msg.name, version)
