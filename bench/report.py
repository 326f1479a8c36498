"""The Kafka benchmark's results: rows, console tables, ratios, and the Markdown in the docs.

Theory of operation
-------------------
Every measured phase is a ``Row``.  Throughput rows carry the CPU the broker and the load
generator spent, turned into **CPU-seconds per GB** of message values (10^9 bytes) — the
figure that matters on a machine where the broker and the load share two cores, and the one
least moved by other work on a shared machine — beside MB/s.  Each row also says what
limited it (``limit``):

- ``client``: some load-generator process used ≥ 0.9 of a core on average (a Python loop
  plus librdkafka: that process, not the broker, set the pace);
- ``broker``: the broker used ≥ 0.9 of a core (a Python broker is one event loop);
- ``cpus``: broker, load and other work together kept ≥ 90 % of the machine's CPUs busy —
  nobody had room to go faster;
- ``other``: work outside this benchmark took ≥ 0.5 of a core during the phase (a shared
  machine: the figure is noisy).

``ratios`` pairs every row with the baseline target's row of the same shape (partitions,
size, codec, phase).  ``markdown`` renders one run for ``docs/benchmarks.md``, where it
replaces the text between the ``<!-- bench:begin -->`` and ``<!-- bench:end -->`` markers.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

MB = 1_000_000
GB = 1_000_000_000
BEGIN = "<!-- bench:begin -->"
END = "<!-- bench:end -->"
THROUGHPUT = ("produce", "consume")


@dataclass
class Row:
    target: str
    partitions: int
    phase: str
    size: int = 0
    compression: str = "none"
    processes: int = 1
    mb_s: float | None = None
    msgs_s: float | None = None
    bytes: int = 0  # message-value bytes the phase moved
    p50_ms: float | None = None
    p99_ms: float | None = None
    p999_ms: float | None = None
    ack_p50_ms: float | None = None  # latency phase: produce leg only (ack - scheduled send)
    ack_p99_ms: float | None = None
    ack_p999_ms: float | None = None
    elapsed_s: float | None = None
    broker_cpu_s: float | None = None  # CPU seconds of the broker process during the phase
    broker_wait_s: float | None = None  # seconds the broker's threads waited for a CPU
    client_cpu_s: float | None = None  # of all load-generator processes together
    client_max_cores: float | None = None  # the busiest load-generator process, in cores
    other_cores: float | None = None  # cores busy with work outside broker and load
    engine_cpu_s: float | None = None  # of the storage services (PostgreSQL, S3), when known
    pinned: bool = False
    error: str | None = None
    detail: dict[str, Any] = field(default_factory=dict)

    @property
    def broker_cores(self) -> float | None:
        return _per(self.broker_cpu_s, self.elapsed_s)

    @property
    def client_cores(self) -> float | None:
        return _per(self.client_cpu_s, self.elapsed_s)

    @property
    def broker_s_per_gb(self) -> float | None:
        return _per(self.broker_cpu_s, self.bytes / GB) if self.bytes else None

    @property
    def engine_s_per_gb(self) -> float | None:
        return _per(self.engine_cpu_s, self.bytes / GB) if self.bytes else None

    @property
    def client_s_per_gb(self) -> float | None:
        return _per(self.client_cpu_s, self.bytes / GB) if self.bytes else None

    def limit(self, cpus: int) -> str:
        marks = []
        if self.client_max_cores is not None and self.client_max_cores >= 0.9:
            marks.append("client")
        if (self.broker_cores or 0) >= 0.9:
            marks.append("broker")
        busy = (self.broker_cores or 0) + (self.client_cores or 0) + (self.other_cores or 0)
        if busy >= 0.9 * cpus:
            marks.append("cpus")
        if (self.other_cores or 0) >= 0.5:
            marks.append("other")
        return ",".join(marks) or "-"

    @property
    def shape(self) -> tuple[int, int, str, str]:
        return (self.partitions, self.size, self.compression, self.phase)


def _per(value: float | None, over: float | None) -> float | None:
    return value / over if value is not None and over else None


def fmt(value: float | None, spec: str) -> str:
    return "-" if value is None else format(value, spec)


def _size(n: int) -> str:
    return f"{n // 1024} KiB" if n >= 1024 and n % 1024 == 0 else f"{n} B"


# ----------------------------------------------------------------------------- console


def _table(head: Sequence[str], body: list[list[str]], left: set[int]) -> list[str]:
    widths = [
        max(len(h), *(len(b[i]) for b in body)) if body else len(h) for i, h in enumerate(head)
    ]

    def line(cells: Sequence[str]) -> str:
        return "  ".join(
            c.ljust(w) if i in left else c.rjust(w)
            for i, (c, w) in enumerate(zip(cells, widths, strict=True))
        ).rstrip()

    return [line(head), "  ".join("-" * w for w in widths), *(line(b) for b in body)]


@dataclass(frozen=True)
class Column:
    """One column of a table: its heading and how a row's cell reads (given the CPUs)."""

    head: str
    cell: Callable[[Row, int], str]
    left: bool = False  # aligned left in the console (text), else right (numbers)


def _number(head: str, value: Callable[[Row], float | None], spec: str) -> Column:
    return Column(head, lambda r, _cpus: fmt(value(r), spec))


def _limit_and_error(r: Row, cpus: int) -> str:
    return r.limit(cpus) + (f"  ERROR: {r.error}" if r.error else "")


def _phase(r: Row, _cpus: int) -> str:
    return r.phase + (" (pinned)" if r.pinned else "")


def _waited_ms_s(r: Row) -> float | None:
    return _per(r.broker_wait_s, r.elapsed_s / 1000 if r.elapsed_s else None)


TARGET = Column("target", lambda r, _cpus: r.target, left=True)
PARTS = Column("parts", lambda r, _cpus: str(r.partitions))
BROKER_CORES = _number("broker cores", lambda r: r.broker_cores, ".2f")
CLIENT_CORES = _number("client cores", lambda r: r.client_cores, ".2f")
OTHER_CORES = _number("other cores", lambda r: r.other_cores, ".2f")
WAITED = _number("broker waited ms/s", _waited_ms_s, ".1f")
P50 = _number("p50 ms", lambda r: r.p50_ms, ".2f")
P99 = _number("p99 ms", lambda r: r.p99_ms, ".2f")
P999 = _number("p99.9 ms", lambda r: r.p999_ms, ".2f")

THROUGHPUT_COLUMNS = (
    TARGET,
    PARTS,
    Column("size", lambda r, _cpus: _size(r.size)),
    Column("codec", lambda r, _cpus: r.compression, left=True),
    Column("phase", lambda r, _cpus: r.phase, left=True),
    Column("procs", lambda r, _cpus: str(r.processes)),
    _number("MB/s", lambda r: r.mb_s, ".1f"),
    _number("msgs/s", lambda r: r.msgs_s, ",.0f"),
    _number("secs", lambda r: r.elapsed_s, ".1f"),
    BROKER_CORES,
    _number("broker s/GB", lambda r: r.broker_s_per_gb, ".2f"),
    CLIENT_CORES,
    _number("client s/GB", lambda r: r.client_s_per_gb, ".2f"),
    _number("busiest client", lambda r: r.client_max_cores, ".2f"),
    OTHER_CORES,
    Column("limit", _limit_and_error, left=True),
)
LATENCY_COLUMNS = (
    TARGET,
    PARTS,
    Column("phase", _phase, left=True),
    _number("msgs/s", lambda r: r.msgs_s, ",.0f"),
    P50,
    P99,
    P999,
    _number("ack p50", lambda r: r.ack_p50_ms, ".2f"),
    _number("ack p99", lambda r: r.ack_p99_ms, ".2f"),
    _number("ack p99.9", lambda r: r.ack_p999_ms, ".2f"),
    BROKER_CORES,
    WAITED,
    CLIENT_CORES,
    OTHER_CORES,
    Column("limit", _limit_and_error, left=True),
)


def _lines(columns: Sequence[Column], rows: list[Row], cpus: int) -> list[str]:
    """The console table of ``rows`` (nothing when there is no row)."""
    if not rows:
        return []
    body = [[c.cell(r, cpus) for c in columns] for r in rows]
    left = {i for i, c in enumerate(columns) if c.left}
    return _table([c.head for c in columns], body, left)


def throughput_lines(rows: list[Row], cpus: int) -> list[str]:
    tput = [r for r in rows if r.phase in THROUGHPUT or r.phase == "start"]
    return _lines(THROUGHPUT_COLUMNS, tput, cpus)


def latency_lines(rows: list[Row], cpus: int) -> list[str]:
    other = [r for r in rows if r.phase not in THROUGHPUT and r.phase != "start"]
    return _lines(LATENCY_COLUMNS, other, cpus)


@dataclass
class Ratio:
    row: Row
    base: Row

    @property
    def throughput(self) -> float | None:
        if self.row.phase == "commit":
            return _per(self.row.msgs_s, self.base.msgs_s)
        return _per(self.row.mb_s, self.base.mb_s)

    @property
    def cpu_per_gb(self) -> float | None:
        return _per(self.row.broker_s_per_gb, self.base.broker_s_per_gb)

    @property
    def p99(self) -> float | None:
        return _per(self.row.p99_ms, self.base.p99_ms)


def ratios(rows: list[Row], baseline: str) -> list[Ratio]:
    base = {(r.shape, r.pinned): r for r in rows if r.target == baseline and not r.error}
    return [
        Ratio(r, base[(r.shape, r.pinned)])
        for r in rows
        if r.target != baseline and not r.error and (r.shape, r.pinned) in base
    ]


def ratio_lines(rows: list[Row], baseline: str) -> list[str]:
    found = ratios(rows, baseline)
    if not found:
        return []
    head = ("target", "parts", "size", "codec", "phase", "MB/s x", "broker s/GB x", "p99 x")
    body = [
        [
            q.row.target,
            str(q.row.partitions),
            _size(q.row.size) if q.row.size else "-",
            q.row.compression,
            q.row.phase + (" (pinned)" if q.row.pinned else ""),
            fmt(q.throughput, ".2f"),
            fmt(q.cpu_per_gb, ".2f"),
            fmt(q.p99, ".3g"),
        ]
        for q in found
    ]
    return [
        f"Against {baseline} (MB/s or commits/s: higher is better; broker CPU-s per GB and "
        "p99: lower is better)",
        *_table(head, body, {0, 3, 4}),
    ]


# ----------------------------------------------------------------------------- Markdown


def _md_table(head: Sequence[str], body: list[list[str]]) -> list[str]:
    return [
        "| " + " | ".join(head) + " |",
        "|" + "|".join("---" for _ in head) + "|",
        *("| " + " | ".join(b) + " |" for b in body),
    ]


def _side_by_side(rows: list[Row], targets: list[str], baseline: str, cpus: int) -> list[list[str]]:
    """One line per shape: each target's MB/s and broker s/GB, and the ratio of the first
    non-baseline target against the baseline."""
    by = {(r.target, r.shape): r for r in rows if r.phase in THROUGHPUT}
    shapes = sorted({r.shape for r in rows if r.phase in THROUGHPUT}, key=_shape_order)
    main = next((t for t in targets if t != baseline), None)
    body = []
    for shape in shapes:
        parts, size, codec, phase = shape
        line = [str(parts), _size(size), codec, phase]
        limits = []
        for t in targets:
            r = by.get((t, shape))
            if r is None or r.error:
                line += ["-", "-"]
                continue
            line += [fmt(r.mb_s, ".0f"), fmt(r.broker_s_per_gb, ".2f")]
            mark = r.limit(cpus)
            if mark != "-":
                limits.append(f"{t}: {mark}")
        r, b = by.get((main or "", shape)), by.get((baseline, shape))
        ok = r is not None and b is not None and not r.error and not b.error
        line += [
            fmt(_per(r.mb_s, b.mb_s), ".2f") if ok and r and b else "-",
            fmt(_per(r.broker_s_per_gb, b.broker_s_per_gb), ".2f") if ok and r and b else "-",
            "; ".join(limits) or "-",
        ]
        body.append(line)
    return body


def _shape_order(shape: tuple[int, int, str, str]) -> tuple[int, int, int, int]:
    parts, size, codec, phase = shape
    return (
        parts,
        size,
        ["none", "lz4", "zstd", "snappy", "gzip"].index(codec)
        if codec in ("none", "lz4", "zstd", "snappy", "gzip")
        else 9,
        THROUGHPUT.index(phase),
    )


def markdown(
    rows: list[Row],
    *,
    targets: list[str],
    baseline: str,
    env: dict[str, Any],
    limits: dict[str, Any],
    command: str,
    describe: Callable[[str], str] = str,
) -> str:
    cpus = int(env.get("cpus") or 1)
    out = [
        BEGIN,
        "",
        f"Generated by `{command}` on {env.get('date', '?')} (commit {env.get('git_commit', '?')}; "
        f"{cpus} CPUs; load average {env.get('loadavg_at_start', ['?'])[0]:.2f} at the start, "
        f"{env.get('loadavg_at_end', ['?'])[0]:.2f} at the end; librdkafka "
        f"{env.get('librdkafka', '?')}).",
        "",
    ]
    lb, dk = limits.get("loopback", {}), limits.get("disk", {})
    out += [
        "**The machine's limits, same run:** "
        + (
            f"loopback TCP {lb['mb_s']:,.0f} MB/s ({lb['cpu_s_per_gb']:.2f} CPU-s per GB for "
            "both ends of the copy)"
            if "mb_s" in lb
            else f"loopback: {lb.get('error', 'not measured')}"
        )
        + "; "
        + (
            f"disk sequential write + fsync {dk['mb_s']:,.0f} MB/s (page cache "
            f"{dk['write_mb_s']:,.0f} MB/s), 4 KiB write + fsync {dk['fsync_4k_ms']:.2f} ms"
            if "mb_s" in dk
            else f"disk: {dk.get('error', 'not measured')}"
        )
        + ".",
        "",
    ]
    tput = [r for r in rows if r.phase in THROUGHPUT]
    if tput:
        head = ["parts", "size", "codec", "phase"]
        for t in targets:
            head += [f"{describe(t)} MB/s", f"{describe(t)} broker s/GB"]
        main = next((t for t in targets if t != baseline), "?")
        head += [f"{main}/{baseline} MB/s", f"{main}/{baseline} s/GB", "limited by"]
        out += [
            "Throughput (MB = 10^6 bytes of message values; broker s/GB = CPU-seconds the "
            "broker process spent per 10^9 bytes):",
            "",
            *_md_table(head, _side_by_side(tput, targets, baseline, cpus)),
            "",
        ]
        procs = sorted({(r.phase, r.processes) for r in tput if not r.error}, reverse=True)
        out += [
            "Load: "
            + ", ".join(f"{n} {phase} process{'es' if n > 1 else ''}" for phase, n in procs)
            + "; client CPU-s per GB and the busiest client process are in the JSON and the "
            "console table.",
            "",
        ]
    other = [r for r in rows if r.phase not in THROUGHPUT and r.phase != "start"]
    if other:
        columns = (
            Column("target", lambda r, _cpus: describe(r.target)),
            PARTS,
            Column("phase", _phase),
            _number("rate /s", lambda r: r.msgs_s, ",.0f"),
            P50,
            P99,
            P999,
            _number("ack p99 ms", lambda r: r.ack_p99_ms, ".2f"),
            BROKER_CORES,
            WAITED,
            Column("limited by", lambda r, cpus: r.error or r.limit(cpus)),
        )
        head = [c.head for c in columns]
        body = [[c.cell(r, cpus) for c in columns] for r in other]
        out += ["Latency, commits, consume-transform-produce:", "", *_md_table(head, body), ""]
    errors = [r for r in rows if r.error and r.phase in (*THROUGHPUT, "start")]
    if errors:
        out += ["Errors:", ""]
        out += [f"- {r.target} {r.partitions}p {r.phase}: {r.error}" for r in errors]
        out.append("")
    out.append(END)
    return "\n".join(out)


def replace_section(text: str, section: str) -> str:
    """``text`` with the part between the markers replaced (appended when absent)."""
    start, end = text.find(BEGIN), text.find(END)
    if start < 0 or end < start:
        return text.rstrip("\n") + "\n\n" + section + "\n"
    return text[:start] + section + text[end + len(END) :]
