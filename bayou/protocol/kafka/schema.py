"""The ``.kschema`` format: Bayou's compact definition of Kafka messages, and its parser.

Theory of operation
-------------------
One file per Kafka API (``schemas/00_produce.kschema`` …) holds the request and the response.
Indentation (two spaces a level) nests fields; every field is one line::

    request ProduceRequest api=0 versions=0-11 flexible=9+
      TransactionalId  string               3+  null=3+  default=null
      Acks             int16                0+
      TopicData        []TopicProduceData   0+
        Name           string               0+
        PartitionData  []PartitionProduceData  0+
          Index        int32                0+
          Records      records              0+  null=0+

A field line is ``Name type versions [null=V] [tag=N] [tagged=V] [default=X]``. Types are the
Kafka JSON types (``int8 int16 uint16 int32 uint32 int64 float64 bool string bytes uuid
records``), ``[]T`` arrays and struct names; a struct field's children are its fields. A
``struct Name versions`` line inside a message declares a common struct that fields of that
message may name without children. Version specs are ``N``, ``N+``, ``N-M`` or ``none``;
``tagged`` is written only when it differs from the field's versions. ``default`` is ``null``,
``""`` (the empty string), a bare word, ``true``/``false`` or a decimal number, and is
written only when it differs from the type's natural default (0, false, "", empty, zero
UUID, null for records).

This module only parses and models; ``codegen.py`` turns the model into ``messages.py``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

PRIMITIVES = frozenset(
    {
        "bool",
        "int8",
        "int16",
        "uint16",
        "int32",
        "uint32",
        "int64",
        "float64",
        "string",
        "bytes",
        "uuid",
        "records",
    }
)
SCHEMA_DIR = Path(__file__).with_name("schemas")


class SchemaError(ValueError):
    """A ``.kschema`` file is malformed."""


@dataclass(frozen=True)
class Versions:
    """An inclusive version range; ``hi`` is None when open-ended, ``lo`` > ``hi`` when empty."""

    lo: int
    hi: int | None

    @classmethod
    def parse(cls, spec: str) -> Versions:
        if spec == "none":
            return NONE
        m = re.fullmatch(r"(\d+)(\+|-(\d+))?", spec)
        if not m:
            raise SchemaError(f"bad version spec {spec!r}")
        lo = int(m.group(1))
        if m.group(2) == "+":
            return cls(lo, None)
        return cls(lo, int(m.group(3)) if m.group(3) else lo)

    def __contains__(self, version: object) -> bool:
        return (
            isinstance(version, int)
            and self.lo <= version
            and (self.hi is None or version <= self.hi)
        )

    @property
    def empty(self) -> bool:
        return self.hi is not None and self.hi < self.lo

    def __str__(self) -> str:
        if self.empty:
            return "none"
        if self.hi is None:
            return f"{self.lo}+"
        return str(self.lo) if self.lo == self.hi else f"{self.lo}-{self.hi}"


NONE = Versions(0, -1)


@dataclass
class Field:
    name: str
    type: str
    versions: Versions
    nullable: Versions = NONE
    tag: int | None = None
    tagged: Versions = NONE
    default: str | None = None
    fields: list[Field] = field(default_factory=list)

    @property
    def is_array(self) -> bool:
        return self.type.startswith("[]")

    @property
    def element(self) -> str:
        """The element type of an array, else the type itself."""
        return self.type[2:] if self.is_array else self.type

    @property
    def is_struct(self) -> bool:
        return self.element not in PRIMITIVES

    @property
    def attr(self) -> str:
        return snake(self.name)


@dataclass
class Message:
    kind: str  # "request", "response" or "data"
    name: str
    api_key: int | None
    valid: Versions
    flexible: Versions
    fields: list[Field]
    common: dict[str, tuple[Versions, list[Field]]] = field(default_factory=dict)


def snake(name: str) -> str:
    """``TopicData`` -> ``topic_data``, ``timeoutMs`` -> ``timeout_ms``."""
    s = re.sub(r"([A-Z]+)([A-Z][a-z])", r"\1_\2", name)
    return re.sub(r"([a-z0-9])([A-Z])", r"\1_\2", s).lower()


def _line_indent(line: str, lineno: int) -> int:
    n = len(line) - len(line.lstrip(" "))
    if n % 2:
        raise SchemaError(f"line {lineno}: indentation must be a multiple of two spaces")
    return n // 2


def _options(tokens: list[str], lineno: int) -> dict[str, str]:
    opts: dict[str, str] = {}
    for tok in tokens:
        key, sep, value = tok.partition("=")
        if not sep:
            raise SchemaError(f"line {lineno}: expected key=value, got {tok!r}")
        opts[key] = value
    return opts


def _parse_field(tokens: list[str], lineno: int) -> Field:
    if len(tokens) < 3:
        raise SchemaError(f"line {lineno}: a field needs a name, a type and versions")
    name, typ, versions = tokens[:3]
    opts = _options(tokens[3:], lineno)
    unknown = set(opts) - {"null", "tag", "tagged", "default"}
    if unknown:
        raise SchemaError(f"line {lineno}: unknown options {sorted(unknown)}")
    vers = Versions.parse(versions)
    tag = int(opts["tag"]) if "tag" in opts else None
    return Field(
        name=name,
        type=typ,
        versions=vers,
        nullable=Versions.parse(opts.get("null", "none")),
        tag=tag,
        tagged=Versions.parse(opts["tagged"])
        if "tagged" in opts
        else (vers if tag is not None else NONE),
        default=opts.get("default"),
    )


def parse(text: str) -> list[Message]:
    """Parse one ``.kschema`` file into its messages."""
    messages: list[Message] = []
    # stack[i] is the list that receives fields at indentation level i + 1
    stack: list[list[Field]] = []
    current: Message | None = None
    for lineno, raw in enumerate(text.splitlines(), 1):
        line = raw.split(" #", 1)[0].rstrip()
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        level = _line_indent(line, lineno)
        tokens = line.split()
        if level == 0:
            kind, name, *rest = tokens
            if kind not in ("request", "response", "data"):
                raise SchemaError(f"line {lineno}: unknown message kind {kind!r}")
            opts = _options(rest, lineno)
            current = Message(
                kind=kind,
                name=name,
                api_key=int(opts["api"]) if "api" in opts else None,
                valid=Versions.parse(opts["versions"]),
                flexible=Versions.parse(opts.get("flexible", "none")),
                fields=[],
            )
            messages.append(current)
            stack = [current.fields]
            continue
        if current is None or level > len(stack):
            raise SchemaError(f"line {lineno}: unexpected indentation")
        del stack[level:]
        if tokens[0] == "struct":
            if level != 1 or len(tokens) != 3:
                raise SchemaError(f"line {lineno}: `struct Name versions` belongs at level 1")
            children: list[Field] = []
            current.common[tokens[1]] = (Versions.parse(tokens[2]), children)
            stack.append(children)
            continue
        fld = _parse_field(tokens, lineno)
        stack[level - 1].append(fld)
        stack.append(fld.fields)
    return messages


def load_all(directory: Path = SCHEMA_DIR) -> list[Message]:
    """Every message of every ``.kschema`` file in ``directory``, in file order."""
    out: list[Message] = []
    for path in sorted(directory.glob("*.kschema")):
        try:
            out.extend(parse(path.read_text(encoding="utf-8")))
        except SchemaError as exc:
            raise SchemaError(f"{path.name}: {exc}") from None
    return out
