"""AMQP names onto Kafka topic names: legal, reversible, collision-free."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from bayou.gateways.amqp.names import PREFIX, amqp_name, is_plain, topic_for
from bayou.storage.metadata import collision_key, validate_topic_name

# AMQP names: shortstr, at most 255 bytes of UTF-8
names = st.text(min_size=1, max_size=255).filter(lambda n: len(n.encode()) <= 255)
legalish = st.text(alphabet="ab._-@:", min_size=1, max_size=12)


def test_examples_from_celery_and_kombu() -> None:
    assert topic_for("celery") == "celery"
    assert topic_for("celery.pidbox") == "celery.pidbox"
    assert topic_for("celery@web-1.celery.pidbox") == "amqp--celery-40web-2d1.celery.pidbox"
    assert topic_for("reply:abc_1") == "amqp--reply-3aabc-5f1"
    assert topic_for("café") == "amqp--caf-c3-a9"
    assert topic_for("amqp--x") == "amqp--amqp-2d-2dx"  # the prefix itself is escaped
    assert topic_for(".") == "amqp--." and topic_for("..") == "amqp--.."
    assert amqp_name("amqp--celery-40web-2d1.celery.pidbox") == "celery@web-1.celery.pidbox"
    assert amqp_name("orders") == "orders"
    assert amqp_name("amqp--x") is None  # plain "x" is its own topic, not this one
    assert amqp_name("amqp--A-3A") is None  # upper-case hex is not how names are written


def test_long_names_take_the_digest_form() -> None:
    legal_but_long = "q" * 252
    escaped_too_long = "@" * 100
    for name in (legal_but_long, escaped_too_long):
        topic = topic_for(name)
        validate_topic_name(topic)
        assert len(topic) <= 249 and topic.startswith(PREFIX) and "-z" in topic
        assert amqp_name(topic) is None
    assert topic_for("@" * 100) != topic_for("@" * 99 + "#")


@given(names)
def test_every_name_maps_to_a_legal_topic_that_reads_back(name: str) -> None:
    topic = topic_for(name)
    validate_topic_name(topic)
    assert topic_for(name) == topic  # deterministic
    back = amqp_name(topic)
    assert back == name or (back is None and "-z" in topic[len(PREFIX) :])
    if is_plain(name):
        assert topic == name


def _distinct(a: str, b: str) -> None:
    if a == b:
        return
    ta, tb = topic_for(a), topic_for(b)
    assert ta != tb
    if not (is_plain(a) and is_plain(b)):  # plain names collide as Kafka says they do
        assert collision_key(ta) != collision_key(tb)


@given(names, names)
def test_distinct_names_never_share_or_collide_on_a_topic(a: str, b: str) -> None:
    _distinct(a, b)


@given(legalish, legalish)
def test_short_names_with_dots_underscores_and_escapes(a: str, b: str) -> None:
    _distinct(a, b)
    assert amqp_name(topic_for(a)) == a
