"""The ``s3://`` engine's URL: where the objects go, where the metadata is, how it flushes.

``s3://BUCKET[/PREFIX]?metadata=postgres://…[&name=value…]``:

- the object store's parameters (``endpoint``, ``region``, ``timeout_ms``, ``retries`` …:
  ``storage/objects.py``);
- ``metadata``: the PostgreSQL URL (required; a query of its own is percent-encoded:
  ``%3Fsslmode%3Drequire``);
- ``flush_ms`` (100) and ``flush_bytes`` (4 MiB): an object is written when the broker's
  buffer has been open that long or holds that much;
- ``flush_concurrency`` (4): objects being written at once (more buffered produce waits);
- ``cache_bytes`` (1 GiB) and ``chunk_bytes`` (1 MiB): the read cache under the data
  directory, in chunks of that size (one ranged GET each);
- ``orphan_grace_ms`` (1 h): an object that no committed transaction recorded is deleted
  once it is that old (a flush that crashed between its PUT and its COMMIT).
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from bayou.errors import InvalidConfig
from bayou.storage.objects import ObjectStoreConfig, parse_url

_MIB = 1024 * 1024


@dataclass(frozen=True)
class ObjectEngineSettings:
    store: ObjectStoreConfig
    metadata: str
    flush_ms: int = 100
    flush_bytes: int = 4 * _MIB
    flush_concurrency: int = 4
    cache_bytes: int = 1024 * _MIB
    chunk_bytes: int = 1 * _MIB
    orphan_grace_ms: int = 3_600_000

    @classmethod
    def from_url(cls, url: str) -> ObjectEngineSettings:
        store = parse_url(url)
        extra = dict(store.extra)
        metadata = extra.pop("metadata", "")
        if not metadata.startswith(("postgres://", "postgresql://")):
            raise InvalidConfig(
                f"{store.url}: the s3:// engine needs metadata=postgres://… (its PostgreSQL)"
            )
        values: dict[str, int] = {}
        for name in (
            "flush_ms",
            "flush_bytes",
            "flush_concurrency",
            "cache_bytes",
            "chunk_bytes",
            "orphan_grace_ms",
        ):
            if name in extra:
                raw = extra.pop(name)
                try:
                    values[name] = int(raw)
                except ValueError:
                    raise InvalidConfig(f"Invalid {name}={raw!r}: expected an integer") from None
                if values[name] < 0:
                    raise InvalidConfig(f"Invalid {name}={raw!r}: must not be negative")
        if extra:
            raise InvalidConfig(f"Unknown parameter(s) {', '.join(sorted(extra))} in {store.url}")
        settings = cls(replace(store, extra={}), metadata, **values)
        if settings.flush_bytes < 1 or settings.chunk_bytes < 1 or settings.flush_concurrency < 1:
            raise InvalidConfig(f"{store.url}: flush_bytes, chunk_bytes and flush_concurrency ≥ 1")
        return settings
