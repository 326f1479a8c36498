"""Topic aliases in the PUBLISHes the server sends (MQTT 5.0, 3.3.2.3.4), sans-I/O.

Theory of operation
-------------------
A client that announces a Topic Alias Maximum above 0 in its CONNECT lets the server name a
topic by a number in the PUBLISHes it sends.  The first PUBLISH that uses a number carries
the topic name too, which binds the two for the rest of the network connection; later ones
carry the number and an empty topic name.  ``OutboundAliases`` decides per PUBLISH:

* a topic that has a number: the number alone;
* a topic without one while numbers are free: the next number, bound now — so a client
  allowing one alias that gets one topic sees alias-only PUBLISHes from the second on;
* every number in use: the topic is bound only if it is sent *again* — it is among the
  recently sent topics that had no number (``seen``) — and it takes the number of the least
  recently used alias.  A stream of one-off topics thus never evicts the busy ones, and a
  topic sent once costs no extra bytes.

``plan(topic)`` says what to send without changing anything; ``commit(topic, plan)`` records
it once the PUBLISH is certain to be sent (one dropped for being over the client's Maximum
Packet Size must not bind a number the client never heard of).  At most ``maximum`` aliases
(the client's maximum, capped at ``MAX_ALIASES``) and as many seen topics are remembered.
"""

from __future__ import annotations

from collections import OrderedDict

MAX_ALIASES = 256  # per connection, whatever larger maximum a client allows

# (alias, bound): bound means the client already knows it, so the topic name is left empty
Plan = tuple[int, bool] | None


class OutboundAliases:
    def __init__(self, client_maximum: int) -> None:
        self.maximum = max(0, min(client_maximum, MAX_ALIASES))
        self._aliases: OrderedDict[bytes, int] = OrderedDict()  # least recently used first
        self._seen: OrderedDict[bytes, None] = OrderedDict()  # sent without a number

    def plan(self, topic: bytes) -> Plan:
        """What to send for ``topic``: ``(alias, bound)``, or None for the name alone."""
        alias = self._aliases.get(topic)
        if alias is not None:
            return alias, True
        if len(self._aliases) < self.maximum:
            return len(self._aliases) + 1, False
        if self.maximum and topic in self._seen:
            return next(iter(self._aliases.values())), False  # the least recently used one
        return None

    def commit(self, topic: bytes, plan: Plan) -> None:
        """Record that a PUBLISH of ``topic`` was sent as ``plan`` said."""
        if plan is None:
            if self.maximum:
                self._seen[topic] = None
                self._seen.move_to_end(topic)
                if len(self._seen) > self.maximum:
                    self._seen.popitem(last=False)
            return
        alias, bound = plan
        if bound:
            self._aliases.move_to_end(topic)
            return
        if len(self._aliases) >= self.maximum:
            _old, freed = self._aliases.popitem(last=False)
            assert freed == alias
        self._aliases[topic] = alias
        self._seen.pop(topic, None)
