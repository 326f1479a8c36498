"""The console: a web UI inside the broker, at ``/console`` on the HTTP port (see
``docs/design/console.md``).

Theory of operation
-------------------
Server-rendered HTML: every page is a real URL (``/console/topics/{name}``) answered by a
handler that reads the core and renders a Jinja2 template, so a page can be linked, reloaded
and used without JavaScript; forms post and redirect (or re-render with the error beside the
field).  JavaScript does only what HTML cannot: the live charts (uPlot) and the message
tail, each fed by a Server-Sent Events stream the handler computes from the core.  Styles
are Pico CSS.  Both are vendored under ``static/vendor`` (``scripts/vendor-console-assets.sh``)
and served from the package: nothing loads from elsewhere.

The console runs inside the HTTP door (``HttpGateway.add_routes``), so the door's login
applies to it (Basic or Bearer, the browser asking for the password) and every page asks the
broker's authorizer what the user may see and do, as the Kafka door would for the same
operation.  It reads the core only — topics, partitions, cursors, the group coordinator and
the metrics the doors count — and holds no state between requests but what a live stream
keeps for its own connection.
"""

from bayou.console.app import Console

__all__ = ["Console"]
