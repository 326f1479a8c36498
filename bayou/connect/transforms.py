"""Single message transforms: Kafka Connect's SMTs that people use, with their class names
and keys, applied to every record between the converters and the task (sinks) or between the
task and the converters (sources).

Configuration, as in Kafka Connect::

    transforms = "rename,route"
    transforms.rename.type = "org.apache.kafka.connect.transforms.ReplaceField$Value"
    transforms.rename.renames = "id:order_id"
    transforms.route.type = "RegexRouter"             # the simple name works too
    transforms.route.regex = "orders-(.*)"
    transforms.route.replacement = "lake-$1"
    transforms.route.predicate = "isOrders"            # apply only when the predicate holds
    transforms.route.negate = "false"
    predicates = "isOrders"
    predicates.isOrders.type = "org.apache.kafka.connect.transforms.predicates.TopicNameMatches"
    predicates.isOrders.pattern = "orders-.*"

Transforms: ``ReplaceField$Key|$Value`` (``renames``, ``include``, ``exclude``; the old
``whitelist``/``blacklist`` too), ``ExtractField$Key|$Value`` (``field``), ``ValueToKey``
(``fields``), ``Filter`` (drops the records its predicate selects), ``RegexRouter``
(``regex``, ``replacement`` with ``$1`` groups), ``ExtractTopic$Key|$Value`` (Confluent's
route-by-field: ``field``, ``skip.missing.or.null``), ``TimestampConverter$Key|$Value``
(``field``, ``target.type`` string|unix|Timestamp|Date|Time, ``format`` in Java's
SimpleDateFormat letters, ``unix.precision``) and ``TimestampRouter`` (``topic.format``,
``timestamp.format``).  Predicates: ``TopicNameMatches`` (``pattern``), ``HasHeaderKey``
(``name``), ``RecordIsTombstone`` and Bayou's ``FieldValueMatches`` (``field`` of the value,
``value`` to equal or ``pattern`` to match).  Without schemas, Connect's ``Timestamp``,
``Date`` and ``Time`` are JSON numbers: epoch milliseconds (Date: at midnight UTC; Time:
milliseconds since midnight).  A transform returns ``None`` to drop the record.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any, Protocol, TypeVar

from bayou.connect.api import ConfigError, ConnectorConfig, SinkRecord, SourceRecord

R = TypeVar("R", SinkRecord, SourceRecord)
Params = Mapping[str, str]


class TransformError(ValueError):
    """A transform cannot handle this record."""


class Predicate(Protocol):
    def test(self, record: SinkRecord | SourceRecord) -> bool: ...


class Transform(Protocol):
    def apply(self, record: R) -> R | None: ...


def _part(record: SinkRecord | SourceRecord, which: str) -> Any:
    return record.key if which == "key" else record.value


def _replace(record: R, **changes: Any) -> R:
    """``dataclasses.replace`` without its introspection (this runs per record)."""
    if isinstance(record, SinkRecord):
        return SinkRecord(
            changes.get("topic", record.topic),
            record.partition,
            record.offset,
            record.timestamp_ms,
            changes.get("key", record.key),
            changes.get("value", record.value),
            record.headers,
        )
    return dataclasses.replace(record, **changes)


def _with(record: R, which: str, new: Any) -> R:
    return _replace(record, **{which: new})


def _object(data: Any, which: str, what: str) -> dict[str, Any]:
    if not isinstance(data, dict):
        raise TransformError(
            f"{what} needs a JSON object as the {which}, not {type(data).__name__}"
        )
    return data


def _fields(raw: str | None) -> list[str]:
    return [f.strip() for f in (raw or "").split(",") if f.strip()]


# ------------------------------------------------------------------ transforms


class ReplaceField:
    def __init__(self, params: Params, which: str) -> None:
        self.which = which
        self.include = set(_fields(params.get("include") or params.get("whitelist")))
        self.exclude = set(_fields(params.get("exclude") or params.get("blacklist")))
        self.renames: dict[str, str] = {}
        for pair in _fields(params.get("renames")):
            old, sep, new = pair.partition(":")
            if not sep or not old or not new:
                raise ConfigError(f"ReplaceField renames: {pair!r} is not old:new")
            self.renames[old] = new

    def apply(self, record: R) -> R | None:
        data = _part(record, self.which)
        if data is None:
            return record
        obj = _object(data, self.which, "ReplaceField")
        out: dict[str, Any] = {}
        for name, value in obj.items():
            if name in self.exclude or (self.include and name not in self.include):
                continue
            out[self.renames.get(name, name)] = value
        return _with(record, self.which, out)


class ExtractField:
    def __init__(self, params: Params, which: str) -> None:
        self.which = which
        field = params.get("field")
        if not field:
            raise ConfigError("ExtractField needs field")
        nested = (params.get("field.syntax.version") or "V1").upper() == "V2"
        self.path = field.split(".") if nested else [field]

    def apply(self, record: R) -> R | None:
        data = _part(record, self.which)
        if data is None:
            return record
        for name in self.path:
            data = _object(data, self.which, "ExtractField").get(name)
            if data is None:
                break
        return _with(record, self.which, data)


class ValueToKey:
    def __init__(self, params: Params, which: str) -> None:
        self.fields = _fields(params.get("fields"))
        if not self.fields:
            raise ConfigError("ValueToKey needs fields")

    def apply(self, record: R) -> R | None:
        obj = _object(record.value, "value", "ValueToKey")
        try:
            key = {name: obj[name] for name in self.fields}
        except KeyError as exc:
            raise TransformError(f"ValueToKey: the value has no field {exc}") from None
        return _with(record, "key", key)


class Filter:
    """Drops every record it is applied to: give it a predicate."""

    def __init__(self, params: Params, which: str) -> None:
        pass

    def apply(self, record: R) -> R | None:
        return None


def java_replacement(replacement: str) -> str:
    """Java's ``$1`` / ``${name}`` group references → Python's ``\\g<1>``."""
    text = replacement.replace("\\", "\\\\")
    text = re.sub(r"\$\{(\w+)\}", r"\\g<\1>", text)
    return re.sub(r"\$(\d+)", r"\\g<\1>", text)


class RegexRouter:
    def __init__(self, params: Params, which: str) -> None:
        regex = params.get("regex")
        if not regex or params.get("replacement") is None:
            raise ConfigError("RegexRouter needs regex and replacement")
        try:
            self.regex = re.compile(regex)
        except re.error as exc:
            raise ConfigError(f"RegexRouter regex: {exc}") from None
        self.replacement = java_replacement(params.get("replacement") or "")

    def apply(self, record: R) -> R | None:
        match = self.regex.fullmatch(record.topic)
        if match is None:
            return record
        return _replace(record, topic=match.expand(self.replacement))


class ExtractTopic:
    """Confluent's ``io.confluent.connect.transforms.ExtractTopic``: the topic from a field."""

    def __init__(self, params: Params, which: str) -> None:
        self.which = which
        self.field = params.get("field") or ""
        self.skip = (params.get("skip.missing.or.null") or "false").lower() == "true"

    def apply(self, record: R) -> R | None:
        data = _part(record, self.which)
        if self.field:
            data = data.get(self.field) if isinstance(data, dict) else None
        if data is None or data == "":
            if self.skip:
                return record
            raise TransformError(f"ExtractTopic: the {self.which} has no {self.field or 'value'}")
        if isinstance(data, dict | list):
            raise TransformError(f"ExtractTopic: {self.field} is not a topic name")
        return _replace(record, topic=str(data))


# ------------------------------------------------------------------ timestamps

_MS = "\ue000"  # placeholders (private-use characters) for what strftime has no code for
_ZONE = "\ue001"
_JAVA_LETTERS = {
    "yyyy": "%Y",
    "yy": "%y",
    "MMMM": "%B",
    "MMM": "%b",
    "MM": "%m",
    "dd": "%d",
    "d": "%-d",
    "HH": "%H",
    "hh": "%I",
    "mm": "%M",
    "ss": "%S",
    "SSS": _MS,
    "SSSSSS": "%f",
    "EEEE": "%A",
    "EEE": "%a",
    "a": "%p",
    "Z": "%z",
    "XXX": _ZONE,
    "XX": _ZONE,
    "X": _ZONE,
    "D": "%j",
}


class JavaDateFormat:
    """Java's SimpleDateFormat patterns (the letters people use), in UTC as Connect's."""

    def __init__(self, pattern: str) -> None:
        out: list[str] = []
        i = 0
        while i < len(pattern):
            ch = pattern[i]
            if ch == "'":
                end = pattern.find("'", i + 1)
                if end < 0:
                    raise ConfigError(f"date format {pattern!r}: an unclosed quote")
                literal = pattern[i + 1 : end] or "'"
                out.append(literal.replace("%", "%%"))
                i = end + 1
                continue
            if ch.isalpha():
                j = i
                while j < len(pattern) and pattern[j] == ch:
                    j += 1
                run = pattern[i:j]
                code = _JAVA_LETTERS.get(run)
                if code is None:
                    raise ConfigError(f"date format {pattern!r}: {run!r} is not supported")
                out.append(code)
                i = j
                continue
            out.append("%%" if ch == "%" else ch)
            i += 1
        self.strftime = "".join(out)
        self.strptime = self.strftime.replace(_MS, "%f").replace(_ZONE, "%z")
        self.strptime = self.strptime.replace("%-d", "%d")

    def format(self, when: datetime) -> str:
        text = when.strftime(self.strftime.replace(_ZONE, "Z"))
        return text.replace(_MS, f"{when.microsecond // 1000:03d}")

    def parse(self, text: str) -> datetime:
        try:
            when = datetime.strptime(text, self.strptime)
        except ValueError as exc:
            raise TransformError(f"TimestampConverter: {exc}") from None
        return when.replace(tzinfo=UTC) if when.tzinfo is None else when.astimezone(UTC)


_PRECISION = {"seconds": 1, "milliseconds": 1000, "microseconds": 10**6, "nanoseconds": 10**9}
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


class TimestampConverter:
    def __init__(self, params: Params, which: str) -> None:
        self.which = which
        self.field = params.get("field") or ""
        target = (params.get("target.type") or "").strip()
        targets = {"string": "string", "unix": "unix", "timestamp": "Timestamp"}
        targets |= {"date": "Date", "time": "Time"}
        if target.lower() not in targets:
            raise ConfigError(
                "TimestampConverter target.type: string, unix, Timestamp, Date or Time"
            )
        self.target = targets[target.lower()]
        pattern = params.get("format") or ""
        self.format = JavaDateFormat(pattern) if pattern else None
        if self.target == "string" and self.format is None:
            raise ConfigError("TimestampConverter target.type=string needs format")
        precision = (params.get("unix.precision") or "milliseconds").lower()
        if precision not in _PRECISION:
            raise ConfigError(f"TimestampConverter unix.precision: one of {', '.join(_PRECISION)}")
        self.per_second = _PRECISION[precision]

    def _read(self, value: Any) -> datetime:
        if isinstance(value, bool):
            raise TransformError("TimestampConverter: a boolean is not a time")
        if isinstance(value, int | float):
            return _EPOCH + timedelta(microseconds=value * 10**6 / self.per_second)
        if isinstance(value, str):
            if self.format is not None:
                return self.format.parse(value)
            try:
                when = datetime.fromisoformat(value)
            except ValueError as exc:
                raise TransformError(f"TimestampConverter: {exc}") from None
            return when.replace(tzinfo=UTC) if when.tzinfo is None else when.astimezone(UTC)
        raise TransformError(f"TimestampConverter: a {type(value).__name__} is not a time")

    def _write(self, when: datetime) -> Any:
        ms = int((when - _EPOCH) / timedelta(milliseconds=1))
        if self.target == "string":
            assert self.format is not None
            return self.format.format(when)
        if self.target == "unix":
            return int((when - _EPOCH) / timedelta(microseconds=1)) * self.per_second // 10**6
        if self.target == "Date":
            midnight = datetime.combine(when.date(), datetime.min.time(), UTC)
            return int((midnight - _EPOCH) / timedelta(milliseconds=1))
        if self.target == "Time":
            return ms - int(
                (datetime.combine(when.date(), datetime.min.time(), UTC) - _EPOCH)
                / timedelta(milliseconds=1)
            )
        return ms

    def apply(self, record: R) -> R | None:
        data = _part(record, self.which)
        if data is None:
            return record
        if not self.field:
            return _with(record, self.which, self._write(self._read(data)))
        obj = dict(_object(data, self.which, "TimestampConverter"))
        if obj.get(self.field) is None:
            return record
        obj[self.field] = self._write(self._read(obj[self.field]))
        return _with(record, self.which, obj)


class TimestampRouter:
    def __init__(self, params: Params, which: str) -> None:
        self.topic_format = params.get("topic.format") or "${topic}-${timestamp}"
        self.timestamp_format = JavaDateFormat(params.get("timestamp.format") or "yyyyMMdd")

    def apply(self, record: R) -> R | None:
        ms = record.timestamp_ms
        if ms is None:
            raise TransformError("TimestampRouter: the record has no timestamp")
        when = _EPOCH + timedelta(milliseconds=ms)
        topic = self.topic_format.replace("${topic}", record.topic).replace(
            "${timestamp}", self.timestamp_format.format(when)
        )
        return _replace(record, topic=topic)


# ------------------------------------------------------------------ predicates


class TopicNameMatches:
    def __init__(self, params: Params) -> None:
        try:
            self.pattern = re.compile(params.get("pattern") or "")
        except re.error as exc:
            raise ConfigError(f"TopicNameMatches pattern: {exc}") from None
        if not params.get("pattern"):
            raise ConfigError("TopicNameMatches needs pattern")

    def test(self, record: SinkRecord | SourceRecord) -> bool:
        return self.pattern.fullmatch(record.topic) is not None


class HasHeaderKey:
    def __init__(self, params: Params) -> None:
        self.name = params.get("name") or ""
        if not self.name:
            raise ConfigError("HasHeaderKey needs name")

    def test(self, record: SinkRecord | SourceRecord) -> bool:
        return any(name == self.name for name, _ in record.headers)


class RecordIsTombstone:
    def __init__(self, params: Params) -> None:
        pass

    def test(self, record: SinkRecord | SourceRecord) -> bool:
        return record.value is None


class FieldValueMatches:
    """Bayou's: the value's ``field`` equals ``value`` (compared as text) or matches
    ``pattern``; a missing field never matches."""

    def __init__(self, params: Params) -> None:
        self.path = (params.get("field") or "").split(".")
        if not params.get("field"):
            raise ConfigError("FieldValueMatches needs field")
        self.value = params.get("value")
        raw = params.get("pattern")
        if (self.value is None) == (raw is None):
            raise ConfigError("FieldValueMatches needs value or pattern (one of them)")
        self.pattern = re.compile(raw) if raw is not None else None

    def test(self, record: SinkRecord | SourceRecord) -> bool:
        data: Any = record.value
        for name in self.path:
            if not isinstance(data, dict) or name not in data:
                return False
            data = data[name]
        text = data if isinstance(data, str) else _text(data)
        if self.pattern is not None:
            return self.pattern.fullmatch(text) is not None
        return text == self.value


def _text(value: Any) -> str:
    if value is True:
        return "true"
    if value is False:
        return "false"
    if value is None:
        return "null"
    return str(value)


# ------------------------------------------------------------------ configuration

TransformFactory = Callable[[Params, str], Any]
TRANSFORMS: dict[str, tuple[TransformFactory, str]] = {
    "ReplaceField$Key": (ReplaceField, "key"),
    "ReplaceField$Value": (ReplaceField, "value"),
    "ExtractField$Key": (ExtractField, "key"),
    "ExtractField$Value": (ExtractField, "value"),
    "ValueToKey": (ValueToKey, "value"),
    "Filter": (Filter, "value"),
    "RegexRouter": (RegexRouter, "value"),
    "ExtractTopic$Key": (ExtractTopic, "key"),
    "ExtractTopic$Value": (ExtractTopic, "value"),
    "TimestampConverter$Key": (TimestampConverter, "key"),
    "TimestampConverter$Value": (TimestampConverter, "value"),
    "TimestampRouter": (TimestampRouter, "value"),
}
PREDICATES: dict[str, Callable[[Params], Predicate]] = {
    "TopicNameMatches": TopicNameMatches,
    "HasHeaderKey": HasHeaderKey,
    "RecordIsTombstone": RecordIsTombstone,
    "FieldValueMatches": FieldValueMatches,
}


def _simple_name(class_name: str) -> str:
    return class_name.strip().rsplit(".", 1)[-1]


def _params(values: Mapping[str, str], prefix: str) -> dict[str, str]:
    return {k[len(prefix) :]: v for k, v in values.items() if k.startswith(prefix)}


class Step:
    """One configured transform: applied when its predicate (if any) says so."""

    def __init__(
        self, alias: str, class_name: str, transform: Any, predicate: Predicate | None, negate: bool
    ) -> None:
        self.alias = alias
        self.class_name = class_name
        self.transform = transform
        self.predicate = predicate
        self.negate = negate

    def apply(self, record: R) -> R | None:
        if self.predicate is not None and self.predicate.test(record) == self.negate:
            return record
        result: R | None = self.transform.apply(record)
        return result


class Chain:
    """The configured transforms, in order."""

    def __init__(self, steps: Sequence[Step]) -> None:
        self.steps = list(steps)

    def __bool__(self) -> bool:
        return bool(self.steps)


class StepError(TransformError):
    def __init__(self, step: Step, cause: Exception) -> None:
        super().__init__(f"transform {step.alias} ({step.class_name}): {cause}")
        self.step = step


def run_chain(chain: Chain, record: R) -> R | None:
    """Apply ``chain``; a failure is a ``StepError`` naming the transform."""
    for step in chain.steps:
        try:
            result = step.apply(record)
        except (TransformError, ValueError, TypeError, KeyError) as exc:
            raise StepError(step, exc) from exc
        if result is None:
            return None
        record = result
    return record


def build_chain(config: ConnectorConfig) -> Chain:
    """The ``transforms`` of a connector configuration; ``ConfigError`` names a bad key."""
    values = config.values
    predicates: dict[str, Predicate] = {}
    for alias in config.get_list("predicates"):
        class_name = values.get(f"predicates.{alias}.type") or ""
        factory = PREDICATES.get(_simple_name(class_name))
        if factory is None:
            raise ConfigError(
                f"connector {config.name!r}: predicates.{alias}.type={class_name!r} is not a "
                f"predicate ({', '.join(PREDICATES)})"
            )
        try:
            predicates[alias] = factory(_params(values, f"predicates.{alias}."))
        except ConfigError as exc:
            raise ConfigError(f"connector {config.name!r}: predicates.{alias}: {exc}") from None
    steps: list[Step] = []
    for alias in config.get_list("transforms"):
        class_name = values.get(f"transforms.{alias}.type") or ""
        entry = TRANSFORMS.get(_simple_name(class_name))
        if entry is None:
            raise ConfigError(
                f"connector {config.name!r}: transforms.{alias}.type={class_name!r} is not a "
                f"transform ({', '.join(TRANSFORMS)})"
            )
        params = _params(values, f"transforms.{alias}.")
        try:
            transform = entry[0](params, entry[1])
        except ConfigError as exc:
            raise ConfigError(f"connector {config.name!r}: transforms.{alias}: {exc}") from None
        predicate = None
        if params.get("predicate"):
            predicate = predicates.get(params["predicate"])
            if predicate is None:
                raise ConfigError(
                    f"connector {config.name!r}: transforms.{alias}.predicate="
                    f"{params['predicate']!r} is not listed in predicates"
                )
        negate = (params.get("negate") or "false").strip().lower() == "true"
        steps.append(Step(alias, class_name, transform, predicate, negate))
    return Chain(steps)
