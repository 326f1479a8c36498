"""``bayou streams run APP.py``: run a stream-processing app (``bayou.streams.App``) against
the broker at ``--bootstrap``; ``bayou streams views``: be a worker of the SQL views
(``docs/design/streams.md``).  Several processes of one app (or of the views) share the work
through their consumer group."""

from __future__ import annotations

import logging
import runpy
from pathlib import Path

import click

from bayou.cli._common import CliError, UsageProblem, connection_options, get_connection


@click.group()
def streams() -> None:
    """Run stream-processing apps and SQL view workers."""


def _setup_logging(verbose: bool) -> None:
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )


@streams.command()
@click.argument("app_file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option(
    "--guarantee",
    type=click.Choice(["exactly-once", "at-least-once"]),
    default=None,
    help="Processing guarantee (default: the app's, exactly-once unless it says otherwise).",
)
@click.option(
    "--instance-id",
    metavar="ID",
    help="A stable id for this instance (its "
    "transactional id): a restarted instance fences its predecessor at once.",
)
@click.option(
    "--state-dir",
    type=click.Path(file_okay=False, path_type=Path),
    help="Where state snapshots are kept (default ./.bayou-state/<app>).",
)
@click.option(
    "--exit-when-idle",
    type=click.FloatRange(min=0.1),
    metavar="SECONDS",
    help="Stop after this long without a record (batch runs, tests).",
)
@connection_options()
def run(
    app_file: Path,
    guarantee: str | None,
    instance_id: str | None,
    state_dir: Path | None,
    exit_when_idle: float | None,
) -> None:
    """Run the bayou.streams.App defined in APP_FILE until interrupted."""
    from bayou.streams import App
    from bayou.streams.external import ExternalRunner

    conn = get_connection()
    try:
        namespace = runpy.run_path(str(app_file), run_name="__bayou_streams__")
    except Exception as exc:
        raise UsageProblem(f"{app_file} failed to load: {type(exc).__name__}: {exc}") from None
    apps = [v for v in namespace.values() if isinstance(v, App)]
    if len(apps) != 1:
        raise UsageProblem(
            f"{app_file} must define exactly one bayou.streams.App (found {len(apps)})"
        )
    app = apps[0]
    if not app.pipelines():
        raise UsageProblem(f"the app {app.name!r} has no stream ending in .to(topic)")
    _setup_logging(conn.verbose)
    conn.probe()
    runner = ExternalRunner(
        app.name,
        app.pipelines(),
        conn.bootstrap,
        guarantee=guarantee or app.guarantee,
        auto_offset_reset=app.auto_offset_reset,
        state_dir=state_dir or app.state_dir,
        commit_interval_s=app.commit_interval_s,
        instance_id=instance_id,
        client_config=conn.security_config(),
    )
    try:
        runner.run(idle_exit_s=exit_when_idle, handle_signals=True)
    except Exception as exc:
        raise CliError(f"the app {app.name!r} stopped: {exc}") from None


@streams.command()
@click.option(
    "--state-dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=Path(".bayou-state/views"),
    show_default=True,
    help="Where the views' state snapshots are kept.",
)
@connection_options()
def views(state_dir: Path) -> None:
    """Be a worker of the SQL views stored in the broker (for `bayou serve --views workers`);
    workers share each view's partitions through its consumer group."""
    import signal
    import threading
    import uuid

    from bayou.streams.views import ViewSupervisor

    conn = get_connection()
    _setup_logging(conn.verbose)
    conn.probe()
    supervisor = ViewSupervisor(
        conn.client_config(), state_dir, instance_id=f"worker-{uuid.uuid4().hex[:8]}"
    )
    done = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_a: done.set())
    supervisor.start()
    done.wait()
    supervisor.stop()
