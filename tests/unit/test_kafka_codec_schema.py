"""Cross-check our .kschema definitions against Kafka's message JSON (when it is present).

Kafka's message definitions are reference data that the project reads but never ships: the
files ``clients/src/main/resources/common/message/*.json`` of the Apache Kafka repository
(the schemas follow its trunk of October 2024).  The cross-check looks for them in
``$BAYOU_KAFKA_MESSAGE_JSON``, else in ``../shared/reference/kafka-protocol`` beside the
checkout; without them it is skipped, once, saying so.  Everything else here runs anyway.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Any

import pytest

from bayou.protocol.kafka.schema import Field, Message, Versions, load_all

# The APIs the schemas define (a request and a response each).
DEFINED_API_KEYS = frozenset(
    {0, 1, 2, 3, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17, 18, 19, 20, 21, 22,
     23, 24, 25, 26, 27, 28, 29, 30, 31, 32, 33, 35, 36, 37, 42, 43, 44, 47, 48, 49, 50, 51, 55,
     60, 61, 65, 66, 68, 69, 75, 76, 77, 78, 79, 90, 91, 92}
)  # fmt: skip

# Share groups (KIP-932) as kafka-clients 4.3 speaks them: the reference JSON is older (Kafka
# 3.9's unstable v0, or no file at all), so these are cross-checked against the compiled
# schemas of the kafka-clients jar instead (``test_kafka_share_schemas.py``).
NEWER_THAN_REFERENCE = frozenset(
    {
        "ShareGroupHeartbeatRequest",
        "ShareGroupHeartbeatResponse",
        "ShareGroupDescribeRequest",
        "ShareGroupDescribeResponse",
        "ShareFetchRequest",
        "ShareFetchResponse",
        "ShareAcknowledgeRequest",
        "ShareAcknowledgeResponse",
        "DescribeShareGroupOffsetsRequest",
        "DescribeShareGroupOffsetsResponse",
        "AlterShareGroupOffsetsRequest",
        "AlterShareGroupOffsetsResponse",
        "DeleteShareGroupOffsetsRequest",
        "DeleteShareGroupOffsetsResponse",
    }
)

REFERENCE = Path(
    os.environ.get("BAYOU_KAFKA_MESSAGE_JSON")
    or Path(__file__).resolve().parents[2].parent / "shared" / "reference" / "kafka-protocol"
)
NO_REFERENCE = (
    f"Kafka's message JSON not found in {REFERENCE}: the cross-check needs the files "
    "clients/src/main/resources/common/message/*.json of the Apache Kafka repository "
    "(github.com/apache/kafka); set BAYOU_KAFKA_MESSAGE_JSON to that folder to run it"
)
MESSAGES = load_all()


def _load(name: str) -> dict[str, Any]:
    text = (REFERENCE / f"{name}.json").read_text(encoding="utf-8")
    # drop // comments that are not inside a string
    lines = [
        re.sub(r'^((?:[^"/]|"(?:[^"\\]|\\.)*")*?)//.*$', r"\1", ln) for ln in text.splitlines()
    ]
    result: dict[str, Any] = json.loads("\n".join(lines))
    return result


def _vers(spec: str | None) -> str:
    return str(Versions.parse(spec or "none"))


def _default(ftype: str, raw: Any) -> str | None:
    """Kafka's default, normalised the way .kschema writes it (None = the natural default)."""
    if raw is None:
        return None
    text = str(raw).strip().lower() if isinstance(raw, bool) else str(raw).strip()
    if text in ("false", "False"):
        return None
    if text in ("null", "true"):
        return text
    if ftype == "string":
        return text or None
    if ftype.startswith(("int", "uint")):
        return str(int(text, 0)) if int(text, 0) else None
    return text


def _check_fields(
    where: str, ours: list[Field], theirs: list[dict[str, Any]], common: dict[str, Any]
) -> None:
    assert [f.name for f in ours] == [f["name"] for f in theirs], where
    for f, j in zip(ours, theirs, strict=True):
        at = f"{where}.{f.name}"
        assert f.type == j["type"], at
        assert str(f.versions) == _vers(j["versions"]), at
        assert str(f.nullable) == _vers(j.get("nullableVersions")), at
        assert f.tag == j.get("tag"), at
        tagged = j.get("taggedVersions") if "tag" in j else None
        assert str(f.tagged) == _vers(tagged), at
        assert f.default == _default(j["type"], j.get("default")), at
        assert "flexibleVersions" not in j, at
        children = j.get("fields")
        if children is None and f.is_struct:
            assert not f.fields and f.element in common, at
        else:
            _check_fields(at, f.fields, children or [], common)


# One test per message when the reference is there; one skipped test saying why when not.
@pytest.mark.parametrize(
    "msg",
    MESSAGES
    if REFERENCE.is_dir()
    else [pytest.param(None, marks=pytest.mark.skip(NO_REFERENCE), id="reference-absent")],
    ids=None if not REFERENCE.is_dir() else [m.name for m in MESSAGES],
)
def test_schema_matches_reference_json(msg: Message) -> None:
    if msg.name in NEWER_THAN_REFERENCE:
        pytest.skip("newer than the reference JSON: checked against kafka-clients 4.3")
    ref = _load(msg.name)
    assert msg.api_key == ref.get("apiKey")
    assert msg.kind == ("data" if ref["type"] == "data" else ref["type"])
    assert str(msg.valid) == _vers(ref["validVersions"])
    assert str(msg.flexible) == _vers(ref.get("flexibleVersions"))
    common = {s["name"]: s for s in ref.get("commonStructs", [])}
    assert sorted(msg.common) == sorted(common)
    for name, (versions, fields) in msg.common.items():
        assert str(versions) == _vers(common[name]["versions"])
        _check_fields(f"{msg.name}/{name}", fields, common[name]["fields"], common)
    _check_fields(msg.name, msg.fields, ref["fields"], common)


def test_every_requested_api_is_defined() -> None:
    keys = {m.api_key for m in MESSAGES if m.kind == "request"}
    assert keys == DEFINED_API_KEYS
    for m in MESSAGES:
        if m.kind == "request":
            resp = next(r for r in MESSAGES if r.kind == "response" and r.api_key == m.api_key)
            assert (resp.valid, resp.flexible) == (m.valid, m.flexible), m.name
