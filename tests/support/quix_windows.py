"""A Quix Streams application with ``processing_guarantee="exactly-once"``: per key, the sum
of ``n`` over tumbling 10-second event-time windows, each closed window written once to the
output topic.  Run as its own process (in a virtual environment holding quixstreams) by
``tests/integration/test_transactions_clients.py`` so that it can be killed -9.

    python quix_windows.py BOOTSTRAP INPUT OUTPUT GROUP STATE_DIR CRASH_AFTER

CRASH_AFTER >= 0: after that many input records in this run, SIGKILL itself — mid
transaction (Quix commits, ending its transaction, every ``commit_interval``), once what it
produced was sent.
Otherwise it stops once no input came for three seconds.
"""

from __future__ import annotations

import os
import signal
import sys
import time

from quixstreams import Application
from quixstreams.dataframe.windows import Sum

WINDOW_MS = 10_000


def main() -> None:
    bootstrap, source, sink, group, state_dir = sys.argv[1:6]
    crash_after = int(sys.argv[6])
    app = Application(
        broker_address=bootstrap,
        consumer_group=group,
        processing_guarantee="exactly-once",
        auto_offset_reset="earliest",
        state_dir=state_dir,
        commit_interval=0.3,
        loglevel="WARNING",
        # one instance that restarts in place: a stable transactional id (the restarted
        # producer fences its predecessor and aborts its open transaction at once, instead of
        # leaving it to transaction.timeout.ms) and static membership (it takes its
        # predecessor's partitions without waiting for the session timeout)
        producer_extra_config={"transactional.id": "instance-0"},
        consumer_extra_config={"group.instance.id": "instance-0"},
    )
    seen = 0

    def count(value: dict[str, int]) -> None:
        nonlocal seen
        seen += 1
        if seen == crash_after:
            # the crash must leave an open transaction *with data* in the log: give the
            # client's sender thread time to send what was produced so far (the scenario,
            # not a synchronisation), then die before the commit
            time.sleep(0.5)
            os.kill(os.getpid(), signal.SIGKILL)

    sdf = app.dataframe(app.topic(source, value_deserializer="json"))
    sdf = sdf.update(count)
    sdf = sdf.tumbling_window(duration_ms=WINDOW_MS).agg(total=Sum("n")).final()
    sdf.to_topic(app.topic(sink, value_serializer="json"))
    app.run(timeout=3.0 if crash_after < 0 else 0.0)


if __name__ == "__main__":
    main()
