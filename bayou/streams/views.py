"""SQL views: the catalog, the statements' execution, and the supervisor that runs the views.

Theory of operation
-------------------
The catalog is the compacted topic ``_bayou_views`` (one partition): key = view name, value =
``{"sql", "id", "created"}`` JSON, a tombstone for a dropped view.  It is written and read over
the Kafka protocol, so ``bayou sql`` (any machine), the HTTP API and the broker itself see the
same views, and the broker's log keeps them durably.

``SqlSession.execute`` runs one statement against a broker: ``CREATE VIEW`` compiles the query
(an error points at the token before anything is stored), checks the source topic, creates
the view's topic and its dead-letter topic ``<view>-dlq`` (as many partitions as the source)
and stores the view; ``DROP VIEW`` stores a tombstone (the topics stay, as in ksqlDB without
``DELETE TOPIC``; a view created again under that name starts a new ``<view>-repartition``);
``SHOW VIEWS``; ``DESCRIBE VIEW``; pull queries on an aggregating view are answered from its
state (``pull.py``: the runner's tasks when the view runs in this process, else its
changelog), those on other views from the view's topic read to its end (the latest result
per key and window); then filtered and projected.

``ViewSupervisor`` runs every stored view: it follows the catalog topic and keeps one
``ExternalRunner`` per view (the same runtime as ``bayou streams run``: exactly-once, state in
a changelog topic plus snapshots) in a thread of its own, restarted after a failure.  A view's
runner id is ``_bayou-view-<name>-<id>``: its consumer group, the prefix of its changelog topic
and its transactional id (stable, ``instance_id`` = the supervisor's, so a restarted broker
fences its predecessor's open transaction at once and continues from the committed state).
The id changes when a view is dropped and created again, so a new view never inherits an old
one's offsets or state.  Inside ``bayou serve`` the supervisor reaches the broker over its
own Kafka listener on the loopback address (``--views serve``, the default); ``bayou streams
views`` runs the same supervisor as separate worker processes sharing each view's consumer
group (``--views workers`` on the broker).
"""

from __future__ import annotations

import json
import logging
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from confluent_kafka import (
    OFFSET_BEGINNING,
    Consumer,
    KafkaError,
    KafkaException,
    Producer,
    TopicPartition,
)
from confluent_kafka.admin import AdminClient, NewTopic  # type: ignore[attr-defined]
from sqlglot import exp

from bayou.streams.external import ExternalRunner
from bayou.streams.pipeline import Pipeline, Processor
from bayou.streams.pull import (
    AGGREGATING_SHAPES,
    Lookup,
    PulledRow,
    ScratchTask,
    lookup_of,
    ordered,
    task_rows,
)
from bayou.streams.rows import Row, dumps
from bayou.streams.sql.errors import SqlError, at
from bayou.streams.sql.expressions import RowScope, compile_expr, truthy
from bayou.streams.sql.planner import ViewPlan, output_name
from bayou.streams.sql.statements import (
    CreateView,
    DescribeView,
    DropView,
    PullQuery,
    ShowViews,
    parse_statement,
)

log = logging.getLogger(__name__)

CATALOG_TOPIC = "_bayou_views"
PULL_MAX_RECORDS = 1_000_000
SUPERVISOR_INSTANCE = "serve"


@dataclass(frozen=True)
class ViewRecord:
    name: str
    sql: str
    id: str
    created: int
    repartition: bool = False  # decided at CREATE: the plan's pipelines(repartition)

    @property
    def app_id(self) -> str:
        return f"_bayou-view-{self.name}-{self.id}"

    def encode(self) -> bytes:
        data: dict[str, Any] = {"sql": self.sql, "id": self.id, "created": self.created}
        if self.repartition:
            data["repartition"] = True
        return dumps(data)

    @staticmethod
    def decode(name: str, raw: bytes) -> ViewRecord:
        data = json.loads(raw)
        return ViewRecord(
            name,
            str(data["sql"]),
            str(data["id"]),
            int(data["created"]),
            bool(data.get("repartition", False)),
        )


@dataclass
class Outcome:
    """What a statement did: ``text`` for people, ``data`` for the HTTP API."""

    kind: str
    text: str
    data: Any
    # a pull query: where its rows came from ("state": the view's tasks in this process,
    # "changelog", "state+changelog", or "topic" for a view without state)
    source: str | None = None


def _read_to_end(
    config: dict[str, Any], topic: str, partitions: list[int], timeout_s: float
) -> list[Any]:
    """Every record of ``topic``'s ``partitions``, from the start to the end as of now (at
    most ``PULL_MAX_RECORDS``)."""
    out: list[Any] = []
    for msg in _records(config, topic, partitions, timeout_s):
        out.append(msg)
        if len(out) >= PULL_MAX_RECORDS:
            break
    return out


def _records(
    config: dict[str, Any], topic: str, partitions: list[int], timeout_s: float
) -> Iterator[Any]:
    """The records of ``topic``'s ``partitions``, from the start to the end as of now."""
    consumer = Consumer(
        {
            **config,
            "group.id": f"_bayou-sql-{uuid.uuid4().hex[:8]}",
            "enable.auto.commit": False,
            "enable.partition.eof": True,
            "isolation.level": "read_committed",
            "auto.offset.reset": "earliest",
        }
    )
    try:
        ends: dict[int, int] = {}
        for p in partitions:
            low, high = consumer.get_watermark_offsets(TopicPartition(topic, p), timeout_s)
            if high > low:
                ends[p] = high
        if not ends:
            return
        consumer.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in ends])
        deadline = time.monotonic() + timeout_s
        done: set[int] = set()
        while len(done) < len(ends):
            if time.monotonic() > deadline:
                raise SqlError(f"Reading {topic} took longer than {timeout_s:g} s")
            for msg in consumer.consume(1000, 0.2):
                err = msg.error()
                p = msg.partition() or 0
                if err is not None:
                    if err.code() == KafkaError._PARTITION_EOF:
                        done.add(p)
                    continue
                if (msg.offset() or 0) >= ends[p] - 1:
                    done.add(p)
                yield msg
    finally:
        consumer.close()


class Catalog:
    """The views stored in ``_bayou_views`` (see the module docstring)."""

    def __init__(self, client_config: dict[str, Any], timeout_s: float = 10.0) -> None:
        self.config = client_config
        self.timeout_s = timeout_s

    def ensure_topic(self) -> None:
        admin = AdminClient(self.config)
        meta = admin.list_topics(timeout=self.timeout_s)
        if CATALOG_TOPIC in meta.topics and not meta.topics[CATALOG_TOPIC].error:
            return
        new = NewTopic(CATALOG_TOPIC, 1, config={"cleanup.policy": "compact"})
        for future in admin.create_topics([new]).values():
            try:
                future.result(self.timeout_s)
            except KafkaException as exc:
                if exc.args[0].code() != KafkaError.TOPIC_ALREADY_EXISTS:
                    raise

    def load(self) -> dict[str, ViewRecord]:
        self.ensure_topic()
        views: dict[str, ViewRecord] = {}
        for msg in _read_to_end(self.config, CATALOG_TOPIC, [0], self.timeout_s):
            apply_catalog_record(views, msg.key(), msg.value())
        return views

    def _write(self, name: str, value: bytes | None) -> None:
        producer = Producer({**self.config, "enable.idempotence": True})
        errors: list[KafkaError] = []
        producer.produce(
            CATALOG_TOPIC,
            value,
            name.encode(),
            on_delivery=lambda err, _msg: errors.append(err) if err is not None else None,
        )
        left = producer.flush(self.timeout_s)
        if left or errors:
            raise SqlError(f"Cannot store the view {name!r}: {errors[0] if errors else 'timeout'}")

    def put(self, view: ViewRecord) -> None:
        self._write(view.name, view.encode())

    def delete(self, name: str) -> None:
        self._write(name, None)


def apply_catalog_record(
    views: dict[str, ViewRecord], key: bytes | None, value: bytes | None
) -> None:
    if key is None:
        return
    name = key.decode("utf-8", "replace")
    if value is None:
        views.pop(name, None)
        return
    try:
        views[name] = ViewRecord.decode(name, value)
    except (ValueError, KeyError, TypeError) as exc:
        log.warning("views catalog: the record of %r is unreadable: %s", name, exc)


class SqlSession:
    """Runs statements against one broker (see the module docstring)."""

    def __init__(
        self,
        client_config: dict[str, Any],
        timeout_s: float = 10.0,
        views: ViewSupervisor | None = None,
    ) -> None:
        """``views``: the views running in this process (inside ``bayou serve``), whose
        state answers pull queries directly."""
        self.config = client_config
        self.timeout_s = timeout_s
        self.catalog = Catalog(client_config, timeout_s)
        self.views = views

    def execute(self, sql: str) -> Outcome:
        views = self.catalog.load()
        statement = parse_statement(sql, set(views))
        if isinstance(statement, ShowViews):
            names = sorted(views)
            return Outcome("views", "\n".join(names), names)
        if isinstance(statement, DescribeView):
            view = views.get(statement.name)
            if view is None:
                raise SqlError(f"No view named {statement.name!r}")
            created = parse_statement(view.sql)
            assert isinstance(created, CreateView)
            info = {**created.plan.describe(), "repartition": view.repartition}
            text = "\n".join(
                f"{k:18} {', '.join(v) if isinstance(v, list) else v}" for k, v in info.items()
            )
            return Outcome("view", text, info)
        if isinstance(statement, DropView):
            if statement.name not in views:
                if statement.if_exists:
                    return Outcome("dropped", f"No view {statement.name}.", None)
                raise SqlError(f"No view named {statement.name!r}")
            self.catalog.delete(statement.name)
            return Outcome("dropped", f"View {statement.name} dropped.", {"name": statement.name})
        if isinstance(statement, CreateView):
            return self._create(statement, views)
        assert isinstance(statement, PullQuery)
        rows, source = self._pull(statement, views)
        return Outcome("rows", "\n".join(dumps(r).decode() for r in rows), rows, source)

    def _create(self, statement: CreateView, views: dict[str, ViewRecord]) -> Outcome:
        plan = statement.plan
        if plan.name in views and not statement.replace:
            raise SqlError(f"A view named {plan.name!r} exists (DROP VIEW it first)")
        admin = AdminClient(self.config)
        meta = admin.list_topics(timeout=self.timeout_s)
        partitions = 0
        for name in [*plan.sources, *plan.tables]:
            source = meta.topics.get(name)
            if source is None or source.error is not None:
                raise SqlError(f"No topic named {name!r} to read")
            if name in plan.sources:
                partitions = max(partitions, len(source.partitions))
        wanted = [
            NewTopic(topic, partitions)
            for topic in (plan.name, plan.dead_letter_topic)
            if topic not in meta.topics
        ]
        for topic, future in admin.create_topics(wanted).items() if wanted else []:
            try:
                future.result(self.timeout_s)
            except KafkaException as exc:
                if exc.args[0].code() != KafkaError.TOPIC_ALREADY_EXISTS:
                    raise SqlError(f"Cannot create the topic {topic!r}: {exc}") from None
        repartition = plan.join is not None or plan.wants_repartition(partitions)
        if plan.repartition_topic in meta.topics:
            # left by a dropped (or replaced) view of this name: its rows and watermark
            # markers are not the new view's, which reads the topic from its start
            for topic, future in admin.delete_topics([plan.repartition_topic]).items():
                try:
                    future.result(self.timeout_s)
                except KafkaException as exc:
                    raise SqlError(f"Cannot delete the old topic {topic!r}: {exc}") from None
        record = ViewRecord(
            plan.name,
            plan.sql,
            uuid.uuid4().hex[:8],
            int(time.time() * 1000),
            repartition,
        )
        self.catalog.put(record)
        text = f"View {plan.name} created."
        if repartition and plan.join is None:
            keys = ", ".join(plan.group_by) or "nothing"
            text += (
                f"\n{plan.source} has {partitions} partitions: its records are repartitioned"
                f" by {keys} through {plan.repartition_topic}."
            )
        return Outcome("created", text, {**plan.describe(), "repartition": repartition})

    def _pull(
        self, statement: PullQuery, views: dict[str, ViewRecord]
    ) -> tuple[list[dict[str, Any]], str]:
        select = statement.select
        for unsupported in ("group", "having", "joins", "order", "windows"):
            node = select.args.get(unsupported)
            if node:
                first = node[0] if isinstance(node, list) else node
                raise at(first, f"A pull query filters and projects: no {unsupported.upper()}")
        scope = RowScope({statement.view})
        where = select.args.get("where")
        cond = truthy(compile_expr(where.this, scope)) if where is not None else None
        items = list(select.expressions)
        star = len(items) == 1 and isinstance(items[0], exp.Star)
        project = [] if star else [(output_name(i), compile_expr(i, scope)) for i in items]
        limit_node = select.args.get("limit")
        limit = int(limit_node.expression.this) if limit_node is not None else None
        view = views[statement.view]
        created = parse_statement(view.sql)
        assert isinstance(created, CreateView)
        plan = created.plan
        if plan.shape in AGGREGATING_SHAPES:
            rows, source = self._pull_state(view, plan, lookup_of(where, plan))
        else:
            rows, source = self._pull_topic(statement.view), "topic"
        out: list[dict[str, Any]] = []
        for row in rows:
            if cond is not None and not cond(row):
                continue
            out.append(row.value if star else {n: f(row) for n, f in project})
            if limit is not None and len(out) >= limit:
                break
        return out, source

    def _pull_state(
        self, view: ViewRecord, plan: ViewPlan, lookup: Lookup
    ) -> tuple[list[Row], str]:
        """An aggregating view's current rows (``pull.py``): from the state of the tasks
        running here, and from the changelog for the partitions running elsewhere."""
        pipeline = plan.pipelines(view.repartition)[-1]
        changelog = f"{view.app_id}-{pipeline.name}-changelog"
        runner = self.views.runner_of(view) if self.views is not None else None
        pulled: list[PulledRow] = []
        partitions: list[int] | None = None
        sources: list[str] = []
        if runner is not None:
            try:
                partitions, pulled = runner.ask(
                    lambda processor: self._local_rows(processor, pipeline, view, lookup),
                    self.timeout_s / 2,
                )
                sources.append("state")
            except TimeoutError:
                partitions = None
        if partitions is None:
            meta = AdminClient(self.config).list_topics(changelog, timeout=self.timeout_s)
            topic = meta.topics.get(changelog)
            count = len(topic.partitions) if topic is not None and not topic.error else 0
            partitions = lookup.partitions(count, bool(pipeline.upstreams))
        if partitions:
            sources.append("changelog")
        scratches = {p: ScratchTask(pipeline, p, lookup) for p in partitions}
        for msg in _records(self.config, changelog, partitions, self.timeout_s):
            key = msg.key()
            if key is not None:
                scratches[msg.partition() or 0].restore(key, msg.value())
        for scratch in scratches.values():
            pulled.extend(task_rows(scratch.task, lookup, view.name))
        return ordered(pulled), "+".join(sources) or "state"

    @staticmethod
    def _local_rows(
        processor: Processor, pipeline: Pipeline, view: ViewRecord, lookup: Lookup
    ) -> tuple[list[int], list[PulledRow]]:
        """In the runner's thread: the rows of the tasks here; the partitions to read from
        the changelog (those of the lookup's that run elsewhere)."""
        count = processor.partitions.get(pipeline.source, 0)
        elsewhere: list[int] = []
        pulled: list[PulledRow] = []
        for partition in lookup.partitions(count, bool(pipeline.upstreams)):
            tasks = processor.tasks.get((pipeline.source, partition))
            task = next((t for t in tasks or [] if t.pipeline.name == pipeline.name), None)
            if task is None:
                elsewhere.append(partition)
            else:
                pulled.extend(task_rows(task, lookup, view.name))
        return elsewhere, pulled

    def _pull_topic(self, name: str) -> list[Row]:
        """A view without state to ask (a projection, OVER, a join): the latest record per
        key (and window) of its topic, read to its end."""
        admin = AdminClient(self.config)
        meta = admin.list_topics(name, timeout=self.timeout_s)
        topic = meta.topics.get(name)
        partitions = sorted(topic.partitions) if topic is not None and not topic.error else []
        latest: dict[tuple[Any, ...], Row] = {}
        for msg in _read_to_end(self.config, name, partitions, self.timeout_s):
            raw = msg.value()
            if raw is None:
                continue
            try:
                value = json.loads(raw)
            except ValueError:
                continue
            key = msg.key().decode("utf-8", "replace") if msg.key() is not None else None
            window = (
                (value.get("window_start"), value.get("window_end"))
                if isinstance(value, dict)
                else (None, None)
            )
            row = Row(key, value, msg.timestamp()[1], name, msg.partition() or 0)
            row.offset = msg.offset() or 0
            latest.pop((key, *window), None)  # the latest result last
            latest[(key, *window)] = row
        return list(latest.values())


# ------------------------------------------------------------------ running the views


class _RunningView:
    def __init__(self, view: ViewRecord, runner: ExternalRunner) -> None:
        self.view = view
        self.runner = runner
        self.thread = threading.Thread(
            target=self._supervise, name=f"view-{view.name}", daemon=True
        )
        self.stopping = threading.Event()

    def _supervise(self) -> None:
        while not self.stopping.is_set():
            try:
                self.runner.run()
            except Exception:
                log.exception(
                    "view %s failed; restarting it from its committed state", self.view.name
                )
                self.runner._close(commit=False)
                self.runner.processor = Processor(self.runner.app_id, self.runner.pipelines)
            self.stopping.wait(1.0)

    def stop(self) -> None:
        self.stopping.set()
        self.runner.stop()


def view_stats(pipelines: list[Pipeline]) -> dict[str, int]:
    """A view's counters over its pipelines: records read from its sources, written to its
    topic, dead letters and late records of every stage."""
    total = {"records_in": 0, "records_out": 0, "dead_letters": 0, "late_dropped": 0}
    for p in pipelines:
        stats = p.stats
        if not p.upstreams:
            total["records_in"] += stats.records_in
        if p.repartition is None:
            total["records_out"] += stats.records_out
        total["dead_letters"] += stats.dead_letters
        total["late_dropped"] += stats.late_dropped
    return total


class ViewSupervisor:
    """Runs every view of the catalog (see the module docstring)."""

    def __init__(
        self,
        client_config: dict[str, Any],
        state_dir: Path,
        *,
        instance_id: str = SUPERVISOR_INSTANCE,
        commit_interval_s: float = 0.2,
        catalog_exists: Callable[[], bool] | None = None,
    ) -> None:
        """``catalog_exists``: how to tell, without a client, that ``_bayou_views`` exists
        (inside the broker: its own metadata); until it does, nothing connects."""
        self.config = client_config
        self.state_dir = state_dir
        self.instance_id = instance_id
        self.commit_interval_s = commit_interval_s
        self.running: dict[str, _RunningView] = {}
        self.stop_event = threading.Event()
        self.thread = threading.Thread(target=self._follow, name="views", daemon=True)
        self.catalog_exists = catalog_exists

    def start(self) -> None:
        self.thread.start()

    def stop(self, timeout_s: float = 15.0) -> None:
        self.stop_event.set()
        self.thread.join(timeout_s)
        for running in list(self.running.values()):
            running.stop()
        deadline = time.monotonic() + timeout_s
        for running in list(self.running.values()):
            running.thread.join(max(0.1, deadline - time.monotonic()))
        self.running.clear()

    def runner_of(self, view: ViewRecord) -> ExternalRunner | None:
        """The runner of ``view`` in this process (this very view: same id), if any."""
        running = self.running.get(view.name)
        if running is None or running.view.id != view.id:
            return None
        return running.runner

    def stats(self) -> dict[str, dict[str, int]]:
        out: dict[str, dict[str, int]] = {}
        for name, running in list(self.running.items()):
            out[name] = view_stats(running.runner.pipelines)
        return out

    def _follow(self) -> None:
        while not self.stop_event.is_set():
            try:
                self._follow_once()
            except Exception as exc:
                log.warning("views: following the catalog failed, again in 2 s: %s", exc)
                self.stop_event.wait(2.0)

    def _catalog_ready(self) -> bool:
        if self.catalog_exists is not None:
            return self.catalog_exists()
        meta = AdminClient(self.config).list_topics(timeout=10)
        return CATALOG_TOPIC in meta.topics

    def _follow_once(self) -> None:
        while not self._catalog_ready():  # no view was ever created
            if self.stop_event.wait(1.0):
                return
        consumer = Consumer(
            {
                **self.config,
                "group.id": "_bayou-views-catalog",
                "enable.auto.commit": False,
                "isolation.level": "read_committed",
            }
        )
        views: dict[str, ViewRecord] = {}
        try:
            consumer.assign([TopicPartition(CATALOG_TOPIC, 0, 0)])
            while not self.stop_event.is_set():
                changed = False
                for msg in consumer.consume(100, 0.5):
                    if msg.error() is not None:
                        continue
                    apply_catalog_record(views, msg.key(), msg.value())
                    changed = True
                if changed:
                    self._reconcile(views)
        finally:
            consumer.close()

    def _reconcile(self, views: dict[str, ViewRecord]) -> None:
        for name, running in list(self.running.items()):
            wanted = views.get(name)
            if wanted is None or wanted.id != running.view.id:
                log.info("view %s: stopping", name)
                running.stop()
                running.thread.join(15)
                del self.running[name]
        for name, view in views.items():
            if name in self.running:
                continue
            try:
                statement = parse_statement(view.sql)
            except SqlError as exc:
                log.warning("view %s: its SQL no longer compiles: %s", name, exc.message)
                continue
            assert isinstance(statement, CreateView)
            plan = statement.plan
            runner = ExternalRunner(
                view.app_id,
                plan.pipelines(view.repartition),
                self.config["bootstrap.servers"],
                guarantee="exactly-once",
                auto_offset_reset=plan.startup,
                state_dir=self.state_dir / view.app_id,
                commit_interval_s=self.commit_interval_s,
                instance_id=self.instance_id,
                client_config={k: v for k, v in self.config.items() if k != "bootstrap.servers"},
            )
            running = _RunningView(view, runner)
            self.running[name] = running
            log.info("view %s: running (%s)", name, view.app_id)
            running.thread.start()
