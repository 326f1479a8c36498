"""Tiered storage for the local engine (KIP-405's shape): closed segments copied to an object
store, local copies trimmed by ``local.retention.*``, old offsets read back from the store.
See ``docs/design/tiered-storage.md``.  Modules: ``remote_segments`` (the durable record in
each partition's directory), ``retention`` (the rules), ``cache`` (chunks on local disk),
``reader`` (reads from the store), ``storage`` (``TieredStorage``: uploads and deletions in
the background, the engine's entry point)."""
