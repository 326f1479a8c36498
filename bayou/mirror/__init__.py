"""``bayou mirror``: copy topics, their configs and consumer groups' offsets from one Kafka
cluster to another, continuously (MirrorMaker 2's job).  See ``docs/design/mirror.md``.

``offset_syncs`` maps source offsets onto target offsets, ``state`` keeps the mirror's
progress in the target, ``topics`` selects topics and aligns their shape and configs,
``groups`` carries committed offsets over, ``runner`` is the copy loop and ``status``
reports the lag from the two clusters alone.
"""
