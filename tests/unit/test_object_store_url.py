"""``s3://`` URLs for the object-store client: what they configure and what they refuse."""

from __future__ import annotations

import pytest

from bayou.errors import InvalidConfig
from bayou.storage.objects import ObjectStore, parse_url


def test_bucket_prefix_and_options() -> None:
    config = parse_url(
        "s3://tier/bayou/prod?endpoint=http://127.0.0.1:8333&region=eu-west-1"
        "&timeout_ms=2000&retries=7&part_bytes=16777216&cache_bytes=1000"
    )
    assert (config.bucket, config.prefix) == ("tier", "bayou/prod")
    assert config.endpoint == "http://127.0.0.1:8333"
    assert config.region == "eu-west-1"
    assert (config.timeout_ms, config.retries, config.part_bytes) == (2000, 7, 16 * 1024 * 1024)
    assert config.extra == {"cache_bytes": "1000"}  # someone else's parameter
    assert config.url == "s3://tier/bayou/prod"


def test_bucket_alone() -> None:
    config = parse_url("s3://tier")
    assert (config.bucket, config.prefix, config.endpoint) == ("tier", "", None)


@pytest.mark.parametrize(
    ("url", "words"),
    [
        ("http://tier/x", "s3://BUCKET"),
        ("s3:///x", "s3://BUCKET"),
        ("s3://tier?retries=many", "retries"),
        ("s3://tier?timeout_ms=-1", "timeout_ms"),
        ("s3://tier?part_bytes=1024", "5 MiB"),
    ],
)
def test_bad_urls_are_refused(url: str, words: str) -> None:
    with pytest.raises(InvalidConfig, match=words):
        parse_url(url)


def test_unknown_parameters_are_refused_by_the_client() -> None:
    with pytest.raises(InvalidConfig, match="cache_bytes"):
        ObjectStore.from_url("s3://tier?cache_bytes=1", environ={})
