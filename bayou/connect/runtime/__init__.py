"""The Connect runtime: connectors' tasks in threads, over confluent-kafka clients.

``connector.py`` validates a configuration and runs its tasks; ``sink.py`` and
``source.py`` are the two task loops (consumer group ``connect-{name}`` for sinks,
transactions with the position in ``_bayou_connect_offsets`` for sources); ``converters.py``,
``errors.py`` (retries, tolerance, dead letters) and ``offsets.py`` serve them.  The same
runtime runs ``bayou connect run FILE.toml`` and the broker's ``/connectors``
(``bayou.connect.supervisor``); ``docs/design/connect.md`` describes it.
"""
