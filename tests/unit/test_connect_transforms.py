"""Connect's single message transforms and predicates, each on records as a task sees them,
configured with Kafka Connect's keys and class names (and the short names)."""

from __future__ import annotations

from typing import Any

import pytest

from bayou.connect.api import ConfigError, ConnectorConfig, SinkRecord, SourceRecord
from bayou.connect.transforms import StepError, build_chain, run_chain

KAFKA = "org.apache.kafka.connect.transforms."
T0 = 1_767_225_600_000  # 2026-01-01T00:00:00Z


def chain(**values: Any) -> Any:
    return build_chain(ConnectorConfig.from_mapping("c", values))


def record(value: Any, key: Any = None, topic: str = "orders", **kw: Any) -> SinkRecord:
    return SinkRecord(topic, 0, 7, kw.pop("timestamp_ms", T0), key, value, **kw)


def test_replace_field_rename_include_exclude() -> None:
    renamed = chain(
        transforms="r",
        **{
            "transforms.r.type": KAFKA + "ReplaceField$Value",
            "transforms.r.renames": "id:order_id,amt:amount",
        },
    )
    out = run_chain(renamed, record({"id": 1, "amt": 2.5, "x": True}))
    assert out is not None and out.value == {"order_id": 1, "amount": 2.5, "x": True}
    included = chain(
        transforms="r",
        **{"transforms.r.type": "ReplaceField$Value", "transforms.r.include": "id,amt"},
    )
    assert run_chain(included, record({"id": 1, "amt": 2, "x": 3})).value == {"id": 1, "amt": 2}  # type: ignore[union-attr]
    excluded = chain(
        transforms="r", **{"transforms.r.type": "ReplaceField$Value", "transforms.r.exclude": "x"}
    )
    assert run_chain(excluded, record({"id": 1, "x": 3})).value == {"id": 1}  # type: ignore[union-attr]
    on_key = chain(
        transforms="r",
        **{"transforms.r.type": KAFKA + "ReplaceField$Key", "transforms.r.blacklist": "b"},
    )
    out = run_chain(on_key, record({"v": 1}, key={"a": 1, "b": 2}))
    assert out is not None and out.key == {"a": 1} and out.value == {"v": 1}
    assert run_chain(renamed, record(None)).value is None  # type: ignore[union-attr]  # a tombstone passes
    with pytest.raises(StepError, match="ReplaceField"):
        run_chain(renamed, record([1, 2]))


def test_value_to_key_then_extract_field_makes_a_field_the_key() -> None:
    c = chain(
        transforms="createKey,extractId",
        **{
            "transforms.createKey.type": KAFKA + "ValueToKey",
            "transforms.createKey.fields": "id",
            "transforms.extractId.type": KAFKA + "ExtractField$Key",
            "transforms.extractId.field": "id",
        },
    )
    out = run_chain(c, record({"id": "o-1", "n": 2}, key="old"))
    assert out is not None and out.key == "o-1" and out.value == {"id": "o-1", "n": 2}
    with pytest.raises(StepError, match="createKey"):
        run_chain(c, record({"n": 2}))
    value = chain(
        transforms="x", **{"transforms.x.type": "ExtractField$Value", "transforms.x.field": "after"}
    )
    assert run_chain(value, record({"after": {"a": 1}, "op": "c"})).value == {"a": 1}  # type: ignore[union-attr]


def test_filter_with_predicates() -> None:
    base = {
        "transforms": "drop",
        "transforms.drop.type": KAFKA + "Filter",
        "transforms.drop.predicate": "p",
    }
    topic = chain(
        **base,
        predicates="p",
        **{
            "predicates.p.type": KAFKA + "predicates.TopicNameMatches",
            "predicates.p.pattern": "test-.*",
        },
    )
    assert run_chain(topic, record({}, topic="test-1")) is None
    assert run_chain(topic, record({}, topic="orders")) is not None
    header = chain(
        **base, predicates="p", **{"predicates.p.type": "HasHeaderKey", "predicates.p.name": "skip"}
    )
    assert run_chain(header, record({}, headers=(("skip", b"1"),))) is None
    assert run_chain(header, record({}, headers=(("keep", b"1"),))) is not None
    tomb = chain(**base, predicates="p", **{"predicates.p.type": "RecordIsTombstone"})
    assert run_chain(tomb, record(None)) is None
    field = chain(
        **base,
        predicates="p",
        **{
            "predicates.p.type": "FieldValueMatches",
            "predicates.p.field": "status",
            "predicates.p.value": "test",
        },
    )
    assert run_chain(field, record({"status": "test"})) is None
    assert run_chain(field, record({"status": "live"})) is not None
    assert run_chain(field, record({"other": 1})) is not None
    negated = chain(
        **{**base, "transforms.drop.negate": "true"},
        predicates="p",
        **{
            "predicates.p.type": "FieldValueMatches",
            "predicates.p.field": "n",
            "predicates.p.pattern": "[0-4]",
        },
    )
    kept = [n for n in range(10) if run_chain(negated, record({"n": n})) is not None]
    assert kept == [0, 1, 2, 3, 4]  # keep only what matches
    assert run_chain(chain(transforms="f", **{"transforms.f.type": "Filter"}), record({})) is None


def test_regex_router_and_route_by_field() -> None:
    router = chain(
        transforms="route",
        **{
            "transforms.route.type": KAFKA + "RegexRouter",
            "transforms.route.regex": "orders-(.*)-(\\d+)",
            "transforms.route.replacement": "lake_$1_$2",
        },
    )
    assert run_chain(router, record({}, topic="orders-eu-7")).topic == "lake_eu_7"  # type: ignore[union-attr]
    assert run_chain(router, record({}, topic="other")).topic == "other"  # type: ignore[union-attr]
    by_field = chain(
        transforms="t",
        **{
            "transforms.t.type": "io.confluent.connect.transforms.ExtractTopic$Value",
            "transforms.t.field": "region",
        },
    )
    source = SourceRecord("in", None, {"region": "eu", "n": 1}, position=None)
    routed = run_chain(by_field, source)
    assert routed is not None and routed.topic == "eu" and routed.value == {"region": "eu", "n": 1}
    with pytest.raises(StepError, match="region"):
        run_chain(by_field, record({"n": 1}))
    skip = chain(
        transforms="t",
        **{
            "transforms.t.type": "ExtractTopic$Value",
            "transforms.t.field": "region",
            "transforms.t.skip.missing.or.null": "true",
        },
    )
    assert run_chain(skip, record({"n": 1})).topic == "orders"  # type: ignore[union-attr]


def test_timestamp_converter() -> None:
    def convert(value: Any, **params: str) -> Any:
        c = chain(
            transforms="ts",
            **{
                "transforms.ts.type": KAFKA + "TimestampConverter$Value",
                **{f"transforms.ts.{k}": v for k, v in params.items()},
            },
        )
        out = run_chain(c, record(value))
        assert out is not None
        return out.value

    iso = {"field": "at", "target.type": "string", "format": "yyyy-MM-dd'T'HH:mm:ss.SSSXXX"}
    assert convert({"at": T0 + 1234, "n": 1}, **iso) == {"at": "2026-01-01T00:00:01.234Z", "n": 1}
    back = {"field": "at", "target.type": "unix", "format": "yyyy-MM-dd'T'HH:mm:ss.SSSXXX"}
    assert convert({"at": "2026-01-01T00:00:01.234Z"}, **back) == {"at": T0 + 1234}
    assert convert(
        {"at": "2026-01-01 00:00:05"},
        field="at",
        **{"target.type": "Timestamp", "format": "yyyy-MM-dd HH:mm:ss"},
    ) == {"at": T0 + 5000}
    assert convert(
        {"at": T0 // 1000}, field="at", **{"target.type": "Timestamp", "unix.precision": "seconds"}
    ) == {"at": T0}
    assert convert({"at": T0 + 3_600_000 + 5}, field="at", **{"target.type": "Date"}) == {"at": T0}
    assert convert({"at": T0 + 3_600_000 + 5}, field="at", **{"target.type": "Time"}) == {
        "at": 3_600_005
    }
    assert convert(
        {"at": "2026-01-01T00:00:00Z"},
        field="at",
        **{"target.type": "unix", "unix.precision": "microseconds"},
    ) == {"at": T0 * 1000}
    assert (
        convert("2026-01-01T00:00:00+00:00", **{"target.type": "Timestamp"}) == T0
    )  # the whole value
    assert convert({"at": None}, field="at", **{"target.type": "Timestamp"}) == {"at": None}
    with pytest.raises(StepError):
        convert(
            {"at": "not a time"}, field="at", **{"target.type": "Timestamp", "format": "yyyy-MM-dd"}
        )


def test_timestamp_router() -> None:
    c = chain(
        transforms="t",
        **{
            "transforms.t.type": KAFKA + "TimestampRouter",
            "transforms.t.topic.format": "${topic}_${timestamp}",
            "transforms.t.timestamp.format": "yyyy.MM.dd",
        },
    )
    assert run_chain(c, record({})).topic == "orders_2026.01.01"  # type: ignore[union-attr]


def test_predicate_applies_a_transform_only_when_it_holds() -> None:
    c = chain(
        transforms="rename",
        predicates="isOrders",
        **{
            "transforms.rename.type": "ReplaceField$Value",
            "transforms.rename.renames": "a:b",
            "transforms.rename.predicate": "isOrders",
            "predicates.isOrders.type": "TopicNameMatches",
            "predicates.isOrders.pattern": "orders",
        },
    )
    assert run_chain(c, record({"a": 1})).value == {"b": 1}  # type: ignore[union-attr]
    assert run_chain(c, record({"a": 1}, topic="other")).value == {"a": 1}  # type: ignore[union-attr]


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"transforms": "x"}, "transforms.x.type"),
        ({"transforms": "x", "transforms.x.type": "Nope"}, "not a transform"),
        (
            {"transforms": "x", "transforms.x.type": "RegexRouter", "transforms.x.regex": "("},
            "regex",
        ),
        (
            {"transforms": "x", "transforms.x.type": "Filter", "transforms.x.predicate": "p"},
            "predicates",
        ),
        (
            {
                "transforms": "x",
                "transforms.x.type": "ReplaceField$Value",
                "transforms.x.renames": "a",
            },
            "old:new",
        ),
        (
            {
                "transforms": "x",
                "transforms.x.type": "TimestampConverter$Value",
                "transforms.x.target.type": "week",
            },
            "target.type",
        ),
        ({"predicates": "p", "predicates.p.type": "TopicNameMatches"}, "pattern"),
    ],
)
def test_bad_configuration_names_the_key(values: dict[str, str], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        chain(**values)
