"""Bayou streams: stream processing as a Python library and as continuous SQL views.

See ``docs/design/streams.md``.  The Python API::

    from bayou.streams import App, avg, sliding
"""

from bayou.streams.aggregates import (
    Aggregate,
    avg,
    count,
    count_distinct,
    first,
    last,
    max_,
    min_,
    percentile,
    stddev,
    sum_,
    top_k,
)
from bayou.streams.api import App, Stream
from bayou.streams.operators import KeyState, StreamStats
from bayou.streams.windows import Window, cumulate, hopping, session, sliding, tumbling

__all__ = [
    "Aggregate",
    "App",
    "KeyState",
    "Stream",
    "StreamStats",
    "Window",
    "avg",
    "count",
    "count_distinct",
    "cumulate",
    "first",
    "hopping",
    "last",
    "max_",
    "min_",
    "percentile",
    "session",
    "sliding",
    "stddev",
    "sum_",
    "top_k",
    "tumbling",
]
