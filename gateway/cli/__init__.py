"""The ``gateway`` command: serve, worker, db, config, routes, plugins, plugin new, purge; replay and try
(``rerun``) and users (``users``) live beside what only they need."""
from __future__ import annotations

import importlib.metadata
import json
import os
import secrets
import signal
import sys
import tempfile
import threading
from datetime import timedelta

import click

from gateway.cli.rerun import replay, try_
from gateway.cli.users import users_group
from gateway.cli.common import load_or_exit, open_engine, open_runtime_or_exit, plugin_registry
from gateway.config import ConfigError, load_config, summary
from gateway.contracts import InlineSinkType
from gateway.settings import Settings


def _print_versions(ctx: click.Context, _param, value: bool) -> None:
    """--version: the core's and every plugin's distribution version, read from the installed metadata
    (each distribution takes its version from the repository's VERSION file when it is built)."""
    if not value or ctx.resilient_parsing:
        return
    from gateway.hookspecs import NAME

    click.echo(f"alert-gateway {importlib.metadata.version('alert-gateway')}")
    for ep in sorted(importlib.metadata.entry_points(group=NAME), key=lambda ep: ep.name):
        click.echo(f"  plugin {ep.name}: {ep.dist.name} {ep.dist.version}")
    ctx.exit()


@click.group()
@click.option("--version", is_flag=True, expose_value=False, is_eager=True, callback=_print_versions,
              help="Show the gateway's and its plugins' versions and exit.")
@click.pass_context
def main(ctx: click.Context):
    """Alert integration gateway: vendor webhooks in, incidents and forwarded events out."""
    ctx.obj = Settings.from_environ()  # read once; every command gets them with @click.pass_obj


@main.command()
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", default=8080, show_default=True, type=int)
@click.option("--workers", default=2, show_default=True, type=int, help="gunicorn worker processes")
@click.option("--no-dispatcher", is_flag=True, help="deliver nothing here; run `gateway worker` instead")
@click.option("--read-timeout", default=30.0, show_default=True, type=click.FloatRange(min=0, min_open=True),
              envvar="GATEWAY_READ_TIMEOUT", help="seconds a request may take to arrive whole; 408 past it")
@click.pass_obj
def serve(settings: Settings, host: str, port: int, workers: int, no_dispatcher: bool, read_timeout: float):
    """Serve webhooks, the API, /health and /metrics through gunicorn and the buffering front."""
    try:
        config = load_config(settings.config_path, plugin_registry(settings), settings.env)
    except ConfigError as exc:
        raise click.ClickException(f"refusing to start: {settings.config_path} is invalid\n{exc}") from None
    env = dict(settings.env)  # the environment gunicorn and its workers start with
    if settings.admin_token:  # the operator's secret: never printed, the curl names the variable instead
        token_shown = "$GATEWAY_ADMIN_TOKEN"
    else:
        env["GATEWAY_ADMIN_TOKEN"] = token_shown = secrets.token_urlsafe(24)
        click.echo("GATEWAY_ADMIN_TOKEN was not set; generated one for this run (set it to keep it stable).")
    first_password = _first_admin(settings)
    env["PROMETHEUS_MULTIPROC_DIR"] = tempfile.mkdtemp(prefix="gateway-metrics-")
    # Workers keep the last valid config here, so one started while the file is broken still boots.
    env["GATEWAY_LAST_GOOD_CONFIG"] = os.path.join(tempfile.mkdtemp(prefix="gateway-config-"), "gateway.yaml")
    env["GATEWAY_SERVED_BY_GUNICORN"] = "1"
    env["GATEWAY_DISPATCHER"] = "0" if no_dispatcher else "1"
    env["GATEWAY_READ_TIMEOUT"] = str(read_timeout)
    base = f"http://{host}:{port}"
    click.echo(f"Gateway on {base}  ({summary(config)})")
    for source in config.sources.values():
        state = "" if source.enabled else "  (disabled)"
        click.echo(f"  webhook {source.key}: POST {base}/hooks/{source.type}/{source.key}/{state}")
    click.echo(f"  console: {base}/")
    if first_password:
        click.echo(f"  first run: created user 'admin' with password {first_password}  (shown only now)")
    click.echo(f"  API: curl -H \"Authorization: Bearer {token_shown}\" {base}/api/incidents")
    click.echo(f"  health: {base}/health   metrics: {base}/metrics")
    sys.stdout.flush()
    argv = [sys.executable, "-m", "gunicorn", "--config", "python:gateway.web.gunicorn_conf",
            "--bind", f"{host}:{port}", "--workers", str(workers), "gateway.app:create_app()"]
    os.execvpe(sys.executable, argv, env)


def _first_admin(settings: Settings) -> str | None:
    """On a database without users, create ``admin`` and return its generated password."""
    from gateway import users

    engine = open_engine(settings)
    try:
        return users.create_first_admin(engine)
    finally:
        engine.dispose()


@main.command()
@click.option("--threads", default=1, show_default=True, type=int, help="dispatchers in this process")
@click.option("--poll", default=1.0, show_default=True, type=float,
              help="seconds between looks for due rows; new rows wake the worker sooner "
                   "(PostgreSQL: at once, by NOTIFY; SQLite: within 50 ms)")
@click.pass_obj
def worker(settings: Settings, threads: int, poll: float):
    """Deliver outbox rows and purge old raw requests on schedule, without serving HTTP; run as many
    as you like on one PostgreSQL."""
    from gateway.logs import configure_logging
    from gateway.pipeline.outbox import Dispatcher, worker_name
    from gateway.pipeline.retention import RetentionSchedule
    from gateway.store.db import start_wal_checkpointer

    configure_logging(settings.log_format)
    runtime = open_runtime_or_exit(settings)
    start_wal_checkpointer(runtime.engine)
    retention = RetentionSchedule(runtime, worker_name())
    runtime.wakeups.start(announce=False, listen=True)  # it queues nothing itself
    dispatchers = [Dispatcher(runtime, poll=poll) for _ in range(threads)]
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    signal.signal(signal.SIGHUP, lambda *_: runtime.reload())
    for dispatcher in dispatchers:
        dispatcher.start()
    retention.start()
    outbox_sinks = [name for name, sink in runtime.snapshot.sinks.items() if not isinstance(sink, InlineSinkType)]
    click.echo(f"worker delivering for sinks: {', '.join(outbox_sinks) or '(none)'}")
    while not stop.wait(1):
        pass
    retention.stop()
    for dispatcher in dispatchers:
        dispatcher.stop()


@main.group()
def db():
    """Database schema."""


@db.command("upgrade")
@click.pass_obj
def db_upgrade(settings: Settings):
    """Apply Alembic migrations to GATEWAY_DATABASE_URL (default: SQLite in instance/)."""
    from gateway.store.db import upgrade

    url = settings.database_url
    upgrade(url)
    click.echo(f"database at head: {url.split('@')[-1]}")


@main.group()
def config():
    """The operator's gateway.yaml."""


@config.command("check")
@click.argument("file", required=False)
@click.pass_obj
def config_check(settings: Settings, file: str | None):
    """Print every problem as FILE:LINE: path: message, or a summary; exit 1 on error."""
    click.echo(f"{file or settings.config_path}: {summary(load_or_exit(settings, file))}")


@main.group()
def routes():
    """The routing tree."""


@routes.command("test")
@click.option("--source", "source_key", required=True, help="source key")
@click.option("--config", "file", default=None, help="config file (default GATEWAY_CONFIG)")
@click.argument("labels", nargs=-1)
@click.pass_obj
def routes_test(settings: Settings, source_key: str, file: str | None, labels: tuple[str, ...]):
    """Print the sinks an alert would reach: gateway routes test --source KEY severity=critical status=firing"""
    from gateway.pipeline.router import Router

    loaded = load_or_exit(settings, file)
    given = dict(label.split("=", 1) for label in labels if "=" in label)
    unknown = set(given) - {"severity", "status", "source_type"}
    if unknown:
        raise click.UsageError(f"unknown label(s): {', '.join(sorted(unknown))} (use severity=, status=, source_type=)")
    source = loaded.sources.get(source_key)
    source_type = given.get("source_type") or (source.type if source else "")
    decision = Router(loaded.route).decide(source_key, source_type, given.get("severity", "critical"),
                                           given.get("status", "firing"))
    click.echo(",".join(decision.sinks))


@main.command()
@click.pass_obj
def plugins(settings: Settings):
    """Installed plugins: distribution, version and the types each registers (JSON)."""
    click.echo(json.dumps([p.as_dict() for p in plugin_registry(settings).plugins], indent=2))


@main.group()
def plugin():
    """Writing plugins."""


@plugin.command("new")
@click.argument("name")
@click.option("--sink", is_flag=True, help="a sink type (default: a source type)")
@click.option("--dir", "directory", type=click.Path(file_okay=False), default=None,
              help="where to write it (default: ./gateway-NAME)")
def plugin_new(name: str, sink: bool, directory: str | None):
    """Write the distribution gateway-NAME: a source (or sink) type, README, samples and tests using the kit."""
    from pathlib import Path

    from gateway.scaffold import write_plugin

    target = Path(directory or f"gateway-{name}")
    try:
        written = write_plugin(name, target, sink=sink)
    except ValueError as exc:
        raise click.UsageError(str(exc)) from None
    for path in written:
        click.echo(f"  wrote {path}")
    click.echo(f"next: pip install -e {target} && pytest {target / 'tests'}")


@main.command()
@click.option("--older-than", default=None, help="override global.retention, e.g. 7d")
@click.pass_obj
def purge(settings: Settings, older_than: str | None):
    """Delete raw and refused requests older than the retention period (alerts and incidents stay);
    the workers also do it on schedule (global.purge_interval).  On PostgreSQL raw requests go a
    whole day at a time: a day straddling the cutoff stays until all of it is past."""
    from gateway.fields import parse_duration
    from gateway.pipeline.retention import purge as purge_before
    from gateway.store.models import utcnow

    seconds = parse_duration(older_than) if older_than else load_or_exit(settings, sinks=False).retention
    cutoff = utcnow() - timedelta(seconds=seconds)
    engine = open_engine(settings)
    removed = purge_before(engine, cutoff)
    engine.dispose()
    click.echo(f"purged {removed.raw} raw requests and {removed.refused} refused requests received before "
               f"{cutoff.isoformat()}, and {removed.partitions} whole days of raw requests")


for command in (replay, try_, users_group):  # defined beside what they need
    main.add_command(command)
