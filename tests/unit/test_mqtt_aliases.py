"""OutboundAliases: which topic alias the server puts in the PUBLISHes it sends."""

from __future__ import annotations

from bayou.protocol.mqtt import decode
from bayou.protocol.mqtt.aliases import MAX_ALIASES, OutboundAliases
from bayou.protocol.mqtt.codec import add_topic_alias, encode_properties, encode_publish
from bayou.protocol.mqtt.packets import MQTT_5, Properties, Publish


def send(aliases: OutboundAliases, topic: bytes) -> tuple[int, bool] | None:
    plan = aliases.plan(topic)
    aliases.commit(topic, plan)
    return plan


def test_binds_on_first_send_while_numbers_are_free() -> None:
    aliases = OutboundAliases(2)
    assert send(aliases, b"a") == (1, False)  # name and alias: binds
    assert send(aliases, b"a") == (1, True)  # alias alone
    assert send(aliases, b"b") == (2, False)
    assert send(aliases, b"a") == (1, True)


def test_when_full_only_a_topic_sent_again_takes_the_least_recently_used_number() -> None:
    aliases = OutboundAliases(2)
    send(aliases, b"a")
    send(aliases, b"b")
    send(aliases, b"a")  # b is now the least recently used
    assert send(aliases, b"once") is None  # a one-off topic evicts nothing
    assert send(aliases, b"c") is None
    assert send(aliases, b"c") == (2, False)  # sent again: rebinds b's number
    assert send(aliases, b"c") == (2, True)
    assert send(aliases, b"a") == (1, True)
    assert aliases.plan(b"b") is None  # b lost its number; seen once since: not yet


def test_a_plan_not_committed_changes_nothing() -> None:
    aliases = OutboundAliases(1)
    assert aliases.plan(b"big") == (1, False)  # e.g. the PUBLISH was over the client's size
    assert aliases.plan(b"small") == (1, False)
    assert send(aliases, b"small") == (1, False)


def test_no_aliases_without_a_client_maximum_and_a_cap_on_large_ones() -> None:
    assert OutboundAliases(0).plan(b"a") is None
    assert OutboundAliases(65535).maximum == MAX_ALIASES


def test_add_topic_alias_to_encoded_properties() -> None:
    props = encode_properties(Properties(content_type="text/plain", user_properties=[("k", "v")]))
    data = encode_publish(b"", b"x", 1, False, False, 9, add_topic_alias(props, 7))
    packet = decode(data[0], data[2:], MQTT_5)
    assert isinstance(packet, Publish)
    assert packet.properties.topic_alias == 7
    assert packet.properties.content_type == "text/plain"
    assert packet.properties.user_properties == [("k", "v")]
    assert add_topic_alias(b"\x00", 1) == b"\x03\x23\x00\x01"
