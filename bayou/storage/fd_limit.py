"""The open-files limit: raised at start, watched as partitions are added.

A partition holds one descriptor per segment file (``.log``) and, while its active segment
is being written, two more for its index files (``bayou/storage/segment.py``); every client
connection takes one.  Linux starts processes with a soft ``RLIMIT_NOFILE`` of 1024 while
the hard limit is usually far higher, so ``bayou serve`` raises the soft limit to the hard
one, as Kafka's packaging asks operators to.  Should the partitions still come near the
limit (three descriptors each at worst, as the busiest partitions need), one warning says so
and how to raise it; the check runs at start and with the periodic checkpoint.
"""

from __future__ import annotations

import logging
import resource

log = logging.getLogger(__name__)

DESCRIPTORS_PER_PARTITION = 3
NEAR = 0.8  # warn when the partitions' worst case passes this share of the limit


def raise_open_files_limit() -> int:
    """Raise the soft RLIMIT_NOFILE to the hard limit; return the soft limit in force."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY or soft == hard:
        return soft
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    except (ValueError, OSError) as exc:
        log.warning("cannot raise the open-files limit from %d to %d: %s", soft, hard, exc)
        return soft
    return hard


class OpenFilesWatch:
    """Warns once when ``partitions * 3`` nears the open-files limit."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.warned = False

    def check(self, partitions: int) -> bool:
        """Log the warning (once per process) if needed; True when it was logged now."""
        worst = partitions * DESCRIPTORS_PER_PARTITION
        if self.warned or self.limit == resource.RLIM_INFINITY or worst < NEAR * self.limit:
            return False
        self.warned = True
        log.warning(
            "%d partitions may need up to %d open files, near this process's limit of %d "
            "(ulimit -n); raise the hard limit (e.g. LimitNOFILE= in a systemd unit, "
            "--ulimit nofile= in Docker) before adding more",
            partitions,
            worst,
            self.limit,
        )
        return True
