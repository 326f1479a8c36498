"""The object-storage engine (``s3://bucket/prefix?metadata=postgres://…``): record batches in
objects, one per flush per broker; their order, offsets and everything else in PostgreSQL
(the PostgreSQL engine's, reused; see ``docs/design/object-storage.md``).

| module | job |
|---|---|
| ``engine.py`` | ``ObjectEngine`` and the PostgreSQL engine's parts that touch batch bytes |
| ``flusher.py`` | the produce path: the open object, flushes, offsets in the commit queue |
| ``cache.py`` | object byte ranges through a bounded cache on local disk |
| ``gc.py`` | deleting objects nothing refers to |
| ``settings.py`` | the engine's URL |
"""

from bayou.storage.s3.engine import ObjectEngine
from bayou.storage.s3.settings import ObjectEngineSettings

__all__ = ["ObjectEngine", "ObjectEngineSettings"]
