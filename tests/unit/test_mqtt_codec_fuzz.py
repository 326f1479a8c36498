"""Fuzz: random bytes never crash the MQTT connection; generated packets round-trip; the
subscription trie and the retained tree agree with the one-filter ``matches``."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from bayou.gateways.mqtt.mapping import (
    RESERVED_HEADERS,
    TopicMapper,
    headers_for,
    meta_from_headers,
)
from bayou.gateways.mqtt.trie import SubscriptionTrie, TopicTree
from bayou.protocol.mqtt import FrameReader, MqttError, ServerConnection, decode, encode
from bayou.protocol.mqtt.packets import (
    MQTT_5,
    MQTT_311,
    Connect,
    Properties,
    Publish,
    Subscribe,
    Subscription,
    empty_properties,
)
from bayou.protocol.mqtt.topics import matches

text = st.text(
    st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00"), max_size=20
)
props = st.builds(
    Properties,
    payload_format_indicator=st.none() | st.integers(0, 1),
    message_expiry_interval=st.none() | st.integers(0, 2**32 - 1),
    content_type=st.none() | text,
    correlation_data=st.none() | st.binary(max_size=20),
    user_properties=st.lists(st.tuples(text, text), max_size=3),
)
levels = st.sampled_from(["a", "b", "c", "", "$x"])
topics = st.lists(levels, min_size=1, max_size=4).map("/".join).filter(bool)
filter_levels = st.sampled_from(["a", "b", "c", "", "+", "$x"])
filters = st.tuples(st.lists(filter_levels, min_size=1, max_size=4), st.booleans()).map(
    lambda t: "/".join([*t[0], "#"] if t[1] else t[0])
)


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=300), st.sampled_from([MQTT_311, MQTT_5]))
def test_random_bytes_after_connect_only_raise_mqtt_errors(data: bytes, version: int) -> None:
    conn = ServerConnection(max_packet_size=256)
    conn.receive_data(encode(Connect("c", version)))
    try:
        conn.receive_data(data)
    except MqttError as exc:
        conn.goodbye(exc)


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=200))
def test_random_bytes_before_connect_only_raise_mqtt_errors(data: bytes) -> None:
    conn = ServerConnection()
    try:
        conn.receive_data(b"\x10" + data)
    except MqttError as exc:
        conn.goodbye(exc)


@settings(max_examples=200, deadline=None)
@given(topics, st.binary(max_size=100), st.integers(0, 2), st.booleans(), props)
def test_publish_round_trip(
    topic: str, payload: bytes, qos: int, retain: bool, properties: Properties
) -> None:
    packet = Publish(topic, payload, qos, retain, False, 1 if qos else None, properties)
    data = encode(packet, MQTT_5)
    reader = FrameReader()
    reader.feed(data)
    frame = reader.next_frame()
    assert frame is not None
    assert decode(*frame, MQTT_5) == packet


@settings(max_examples=100, deadline=None)
@given(st.lists(st.tuples(filters, st.integers(0, 2)), min_size=1, max_size=5))
def test_subscribe_round_trip(subs: list[tuple[str, int]]) -> None:
    packet = Subscribe(3, [Subscription(f, q) for f, q in subs])
    for version in (MQTT_311, MQTT_5):
        data = encode(packet, version)
        assert decode(data[0], FrameReaderBody(data), version) == packet


def FrameReaderBody(data: bytes) -> memoryview:
    reader = FrameReader()
    reader.feed(data)
    frame = reader.next_frame()
    assert frame is not None
    return frame[1]


@settings(max_examples=200, deadline=None)
@given(st.lists(filters, max_size=12), topics)
def test_trie_matches_like_a_scan(subscribed: list[str], topic: str) -> None:
    trie: SubscriptionTrie[int] = SubscriptionTrie()
    for i, f in enumerate(subscribed):
        trie.add(f, (f, i), i)
    expected = sorted(i for i, f in enumerate(subscribed) if matches(f, topic))
    assert sorted(v for _owner, v in trie.match(topic)) == expected
    for i, f in enumerate(subscribed):
        assert trie.remove(f, (f, i))
    assert trie.count == 0 and trie.match(topic) == []


@settings(max_examples=200, deadline=None)
@given(st.lists(topics, max_size=12, unique=True), filters)
def test_retained_tree_matches_like_a_scan(stored: list[str], topic_filter: str) -> None:
    tree: TopicTree[str] = TopicTree()
    for t in stored:
        tree.set(t, t)
    assert sorted(tree.match(topic_filter)) == sorted(t for t in stored if matches(topic_filter, t))
    for t in stored:
        tree.set(t, None)
    assert tree.count == 0 and list(tree.match("#")) == []


@settings(max_examples=100, deadline=None)
@given(props, st.integers(0, 2), st.booleans())
def test_headers_carry_mqtt_properties(properties: Properties, qos: int, retain: bool) -> None:
    meta = meta_from_headers(headers_for(properties, qos, retain, "dev"))
    assert (meta.qos, meta.retain, meta.origin) == (qos, retain, "dev")
    assert meta.expiry_s == properties.message_expiry_interval
    assert meta.props.user_properties == [  # reserved names are dropped, not misread
        (k, v) for k, v in properties.user_properties if k not in RESERVED_HEADERS
    ]
    assert meta.props.content_type == properties.content_type
    assert meta.props.correlation_data == properties.correlation_data


def test_a_user_property_named_like_reserved_metadata_is_dropped() -> None:
    props = empty_properties()
    props.user_properties = [("mqtt.retain", "1"), ("site", "a")]
    meta = meta_from_headers(headers_for(props, 1, False, "dev"))
    assert (meta.retain, meta.props.user_properties) == (False, [("site", "a")])


def test_default_mapping_and_rules() -> None:
    from bayou.gateways.mqtt.mapping import parse_rules

    mapper = TopicMapper()
    assert mapper.kafka_topic("sensors/room1/temp") == "sensors"
    assert mapper.mqtt_topic("sensors", b"sensors/room1/temp") == "sensors/room1/temp"
    assert mapper.mqtt_topic("sensors", None) == "sensors"
    assert mapper.mqtt_topic("sensors", b"dev7") == "sensors/dev7"
    assert mapper.kafka_topic("/leading/slash") == "mqtt"
    assert mapper.kafka_topic("$SYS/x") == "mqtt"
    assert mapper.kafka_topics_for_filter("sensors/+/temp", ["a", "sensors"]) == {"sensors"}
    assert mapper.kafka_topics_for_filter("+/x", ["a", "__internal"]) == {"a"}
    ruled = TopicMapper(parse_rules("factory/+/metrics/#=metrics; alerts/#=alerts"))
    assert ruled.kafka_topic("factory/f1/metrics/cpu") == "metrics"
    assert ruled.kafka_topic("factory/f1/other") == "factory"
    assert ruled.mqtt_topic("metrics", b"factory/f1/metrics/cpu") == "factory/f1/metrics/cpu"
    assert "metrics" in ruled.kafka_topics_for_filter("factory/#", [])
