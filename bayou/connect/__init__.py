"""Connect: pipelines from topics into lakes, warehouses and databases, and change data back in.

``api`` is the plugin interface every connector implements (``SinkTask``, ``SourceTask``,
the records they see and their configuration); ``registry`` maps the connector class names
users write (``parquet-sink``, ``postgres-cdc-source`` …) onto the modules implementing them.
See ``docs/design/connect.md``.
"""
