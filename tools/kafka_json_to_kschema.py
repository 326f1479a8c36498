"""One-off importer: Kafka's message JSON -> Bayou ``.kschema`` files.

Usage: ``python tools/kafka_json_to_kschema.py <kafka-protocol-json-dir> [Api ...]``

Writes ``bayou/protocol/kafka/schemas/NN_<api>.kschema`` for every API in ``APIS`` (request and
response in one file) and ``consumer_protocol.kschema`` for the consumer protocol structs; with
API names (``DescribeAcls`` …) only those files, so an API can be added without overwriting the
schemas edited by hand since. The
JSON itself is reference data and is never copied into the project; only the facts the codec
needs (names, types, versions, nullability, tags, defaults) are carried over.
"""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "bayou" / "protocol" / "kafka" / "schemas"

APIS = (  # noqa: SIM905
    "Produce Fetch ListOffsets Metadata OffsetCommit OffsetFetch FindCoordinator JoinGroup "
    "Heartbeat LeaveGroup SyncGroup DescribeGroups ListGroups SaslHandshake ApiVersions "
    "CreateTopics DeleteTopics DeleteRecords InitProducerId OffsetForLeaderEpoch "
    "AddPartitionsToTxn AddOffsetsToTxn EndTxn TxnOffsetCommit DescribeConfigs AlterConfigs "
    "DescribeLogDirs SaslAuthenticate CreatePartitions DeleteGroups IncrementalAlterConfigs "
    "OffsetDelete DescribeCluster DescribeProducers ConsumerGroupHeartbeat "
    "ConsumerGroupDescribe DescribeTopicPartitions DescribeAcls CreateAcls DeleteAcls "
    "ElectLeaders DescribeClientQuotas DescribeUserScramCredentials DescribeQuorum "
    "DescribeTransactions ListTransactions AlterClientQuotas AlterUserScramCredentials"
).split()

NATURAL_DEFAULT = {"bool": "false", "string": '""'}


def load_json(path: Path) -> dict[str, Any]:
    """Kafka's JSON allows // comments; strip them (outside strings) and parse."""
    out = []
    for line in path.read_text(encoding="utf-8").splitlines():
        in_str = False
        cut = len(line)
        i = 0
        while i < len(line):
            c = line[i]
            if c == "\\" and in_str:
                i += 2
                continue
            if c == '"':
                in_str = not in_str
            elif not in_str and line.startswith("//", i):
                cut = i
                break
            i += 1
        out.append(line[:cut])
    result: dict[str, Any] = json.loads("\n".join(out))
    return result


def snake(name: str) -> str:
    s = re.sub(r"([A-Z]+)([A-Z][a-z])", r"\1_\2", name)
    return re.sub(r"([a-z0-9])([A-Z])", r"\1_\2", s).lower()


def norm_default(ftype: str, raw: Any) -> str | None:
    """The default as written in .kschema, or None when it is the type's natural default."""
    if raw is None:
        return None
    text = str(raw).strip()
    if isinstance(raw, bool) or text.lower() in ("true", "false"):
        text = text.lower()
        return None if text == "false" else text
    if text == "null":
        return "null"
    if ftype == "string":
        return None if text == "" else text
    if ftype.startswith("int") or ftype.startswith("uint"):
        value = int(text, 0)
        return None if value == 0 else str(value)
    if ftype == "float64":
        value_f = float(text)
        return None if value_f == 0 else repr(value_f)
    return text


def field_lines(fields: list[dict[str, Any]], level: int) -> list[list[str]]:
    rows: list[list[str]] = []
    for f in fields:
        cols = ["  " * level + f["name"], f["type"], f["versions"]]
        opts = []
        if f.get("nullableVersions", "none") != "none":
            opts.append(f"null={f['nullableVersions']}")
        if "tag" in f:
            opts.append(f"tag={f['tag']}")
            if f.get("taggedVersions", f["versions"]) != f["versions"]:
                opts.append(f"tagged={f['taggedVersions']}")
        d = norm_default(f["type"], f.get("default"))
        if d is not None:
            opts.append(f"default={d}")
        if "flexibleVersions" in f:
            raise SystemExit(f"field-level flexibleVersions not supported: {f['name']}")
        rows.append([*cols, " ".join(opts)])
        rows.extend(field_lines(f.get("fields", []), level + 1))
    return rows


def render_message(d: dict[str, Any], kind: str) -> list[str]:
    head = f"{kind} {d['name']}"
    if "apiKey" in d:
        head += f" api={d['apiKey']}"
    head += f" versions={d['validVersions']} flexible={d.get('flexibleVersions', 'none')}"
    rows = field_lines(d["fields"], 1)
    for s in d.get("commonStructs", []):
        rows.append([f"  struct {s['name']}", "", s["versions"], ""])
        rows.extend(field_lines(s["fields"], 2))
    w0 = max(len(r[0]) for r in rows) + 2 if rows else 0
    w1 = max(len(r[1]) for r in rows) + 2 if rows else 0
    w2 = max(len(r[2]) for r in rows) + 2 if rows else 0
    lines = [head]
    for r in rows:
        if r[0].strip().startswith("struct "):
            lines.append(f"{r[0]} {r[2]}")
        else:
            lines.append(f"{r[0]:<{w0}}{r[1]:<{w1}}{r[2]:<{w2}}{r[3]}".rstrip())
    return lines


def main(src: Path, only: list[str]) -> None:
    OUT.mkdir(parents=True, exist_ok=True)
    unknown = set(only) - set(APIS)
    if unknown:
        raise SystemExit(f"not in APIS: {', '.join(sorted(unknown))}")
    for api in only or APIS:
        req = load_json(src / f"{api}Request.json")
        resp = load_json(src / f"{api}Response.json")
        key = req["apiKey"]
        lines = [
            f"# {api} (API key {key}), written from Kafka's {api}Request.json and "
            f"{api}Response.json.",
            "# Format: docs/design/kafka-codec.md. Regenerate messages.py after editing.",
            "",
            *render_message(req, "request"),
            "",
            *render_message(resp, "response"),
        ]
        (OUT / f"{key:02d}_{snake(api)}.kschema").write_text("\n".join(lines) + "\n")
    if only:
        return
    lines = [
        "# Consumer protocol (embedded in JoinGroup/SyncGroup), written from Kafka's",
        "# ConsumerProtocolSubscription.json and ConsumerProtocolAssignment.json.",
        "",
    ]
    for name in ("ConsumerProtocolSubscription", "ConsumerProtocolAssignment"):
        lines += [*render_message(load_json(src / f"{name}.json"), "data"), ""]
    (OUT / "consumer_protocol.kschema").write_text("\n".join(lines[:-1]) + "\n")


if __name__ == "__main__":
    main(Path(sys.argv[1]), sys.argv[2:])
