"""The ``gateway`` command: serve, worker, db, config, routes, plugins, purge."""
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
from sqlalchemy import delete

from gateway.config import ConfigError, load_config, summary
from gateway.contracts import InlineSinkType
from gateway.settings import Settings


def _registry(settings: Settings):
    from gateway.plugins import PluginError, build_registry

    try:
        return build_registry(disabled=settings.disabled_plugins)
    except PluginError as exc:
        raise click.ClickException(str(exc)) from None


def _load(settings: Settings, path: str | None = None):
    """The validated config (``path``, else ``GATEWAY_CONFIG``), or every problem in it and exit status 1."""
    path = path or settings.config_path
    try:
        return load_config(path, _registry(settings), settings.env)
    except ConfigError as exc:
        click.echo(f"{path}: FAILED", err=True)
        click.echo(str(exc), err=True)
        sys.exit(1)


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
        config = load_config(settings.config_path, _registry(settings), settings.env)
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


def _engine(settings: Settings):
    from gateway.store.db import make_engine

    return make_engine(settings.database_url)


def _first_admin(settings: Settings) -> str | None:
    """On a database without users, create ``admin`` and return its generated password."""
    from gateway import users

    engine = _engine(settings)
    try:
        return users.create_first_admin(engine)
    finally:
        engine.dispose()


@main.command()
@click.option("--threads", default=1, show_default=True, type=int, help="dispatchers in this process")
@click.option("--poll", default=1.0, show_default=True, type=float,
              help="seconds between looks for due rows; on PostgreSQL new rows wake the worker at once")
@click.pass_obj
def worker(settings: Settings, threads: int, poll: float):
    """Deliver outbox rows without serving HTTP; run as many as you like on one PostgreSQL."""
    from gateway.pipeline.outbox import Dispatcher
    from gateway.pipeline.runtime import open_runtime
    from gateway.plugins import PluginError
    from gateway.store.db import start_wal_checkpointer

    try:
        runtime = open_runtime(settings)
    except (ConfigError, PluginError) as exc:
        raise click.ClickException(f"refusing to start:\n{exc}") from None
    start_wal_checkpointer(runtime.engine)
    runtime.wakeups.start(announce=False, listen=True)  # it queues nothing itself
    dispatchers = [Dispatcher(runtime, poll=poll) for _ in range(threads)]
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    signal.signal(signal.SIGHUP, lambda *_: runtime.reload())
    for dispatcher in dispatchers:
        dispatcher.start()
    outbox_sinks = [name for name, sink in runtime.snapshot.sinks.items() if not isinstance(sink, InlineSinkType)]
    click.echo(f"worker delivering for sinks: {', '.join(outbox_sinks) or '(none)'}")
    while not stop.wait(1):
        pass
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
    click.echo(f"{file or settings.config_path}: {summary(_load(settings, file))}")


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

    loaded = _load(settings, file)
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
    click.echo(json.dumps([p.as_dict() for p in _registry(settings).plugins], indent=2))


@main.command()
@click.option("--older-than", default=None, help="override global.retention, e.g. 7d")
@click.pass_obj
def purge(settings: Settings, older_than: str | None):
    """Delete raw and refused requests older than the retention period (alerts and incidents stay)."""
    from gateway.fields import parse_duration
    from gateway.store.db import make_engine, run_in_transaction
    from gateway.store.models import RawRequest, RefusedRequest, utcnow

    seconds = parse_duration(older_than) if older_than else _load(settings).retention
    cutoff = utcnow() - timedelta(seconds=seconds)
    engine = make_engine(settings.database_url)

    def work(conn) -> int:
        conn.execute(delete(RefusedRequest.__table__).where(RefusedRequest.received_at < cutoff))
        return conn.execute(delete(RawRequest.__table__).where(RawRequest.received_at < cutoff)).rowcount

    removed = run_in_transaction(engine, work)
    engine.dispose()
    click.echo(f"purged {removed} raw requests received before {cutoff.isoformat()}")


@main.group("users")
def users_group():
    """Console users, their roles and personal API tokens."""


def _users_call(action, *args):
    from gateway import users

    engine = _engine(click.get_current_context().obj)
    try:
        return action(engine, *args)
    except users.UserError as exc:
        raise click.ClickException(str(exc)) from None
    finally:
        engine.dispose()


ROLE_CHOICE = click.Choice(["viewer", "operator", "admin"])


@users_group.command("create")
@click.argument("name")
@click.option("--role", required=True, type=ROLE_CHOICE)
@click.option("--password-stdin", is_flag=True, required=True, help="read the password from standard input")
def users_create(name: str, role: str, password_stdin: bool):
    """Create a user; the password comes from standard input, never from the command line."""
    from gateway import users

    password = sys.stdin.readline().rstrip("\r\n")
    _users_call(users.create_user, name, role, password)
    click.echo(f"created {name} ({role})")


@users_group.command("list")
def users_list():
    """Every user: name, role, and whether it may sign in."""
    from gateway import users

    for row in _users_call(users.list_users):
        click.echo(f"{row.name}\t{row.role}\t{'enabled' if row.enabled else 'disabled'}")


@users_group.command("set-role")
@click.argument("name")
@click.argument("role", type=ROLE_CHOICE)
def users_set_role(name: str, role: str):
    from gateway import users

    _users_call(users.set_role, name, role)
    click.echo(f"{name} is now {role}")


@users_group.command("disable")
@click.argument("name")
def users_disable(name: str):
    """Stop a user signing in and its tokens working (its history stays)."""
    from gateway import users

    _users_call(users.set_enabled, name, False)
    click.echo(f"{name} is disabled")


@users_group.command("token")
@click.argument("name")
@click.option("--name", "token_name", default="cli", show_default=True, help="a label for the token")
def users_token(name: str, token_name: str):
    """Create a personal API token for NAME; it is the last line printed, and shown only now."""
    from gateway import users

    token = _users_call(users.create_token, name, token_name)
    click.echo(f"personal API token for {name} (acts with {name}'s role; store it now):")
    click.echo(token)
