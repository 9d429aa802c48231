"""The ``gateway`` command: serve, worker, db, config, routes, plugins, plugin new, purge."""
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

from gateway.config import ConfigError, load_config, summary
from gateway.contracts import InlineSinkType
from gateway.settings import Settings


def _registry(settings: Settings):
    from gateway.plugins import PluginError, build_registry

    try:
        return build_registry(disabled=settings.disabled_plugins)
    except PluginError as exc:
        raise click.ClickException(str(exc)) from None


def _load(settings: Settings, path: str | None = None, *, sinks: bool = True):
    """The validated config (``path``, else ``GATEWAY_CONFIG``), or every problem in it and exit status 1.

    ``sinks=False`` for a command that delivers nothing: a sink's secret need not be set for it."""
    path = path or settings.config_path
    try:
        return load_config(path, _registry(settings), settings.env, sinks=sinks)
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

    return make_engine(settings.database_url, sqlite_synchronous=settings.sqlite_synchronous)


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
    """Deliver outbox rows and purge old raw requests on schedule, without serving HTTP; run as many
    as you like on one PostgreSQL."""
    from gateway.logs import configure_logging
    from gateway.pipeline.outbox import Dispatcher, worker_name
    from gateway.pipeline.retention import RetentionSchedule
    from gateway.store.db import start_wal_checkpointer

    configure_logging(settings.log_format)
    runtime = _open_runtime(settings)
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
    the workers also do it on schedule (global.purge_interval)."""
    from gateway.fields import parse_duration
    from gateway.pipeline.retention import purge as purge_before
    from gateway.store.models import utcnow

    seconds = parse_duration(older_than) if older_than else _load(settings, sinks=False).retention
    cutoff = utcnow() - timedelta(seconds=seconds)
    engine = _engine(settings)
    removed = purge_before(engine, cutoff)
    engine.dispose()
    click.echo(f"purged {removed.raw} raw requests and {removed.refused} refused requests received before "
               f"{cutoff.isoformat()}")


def _since(text: str | None):
    """``--since``: a duration back from now (``2h``) or an ISO 8601 time."""
    from datetime import datetime, timezone

    from gateway.fields import parse_duration
    from gateway.store.models import utcnow

    if text is None:
        return None
    try:
        return utcnow() - timedelta(seconds=parse_duration(text))
    except ValueError:
        pass
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise click.BadParameter(f"{text!r}: give a duration (2h, 7d) or an ISO 8601 time", param_hint="--since")
    return moment if moment.tzinfo else moment.replace(tzinfo=timezone.utc)


def _open_runtime(settings: Settings):
    """Plugins, database and config for a command that runs the pipeline; every problem, and exit 1."""
    from gateway.pipeline.runtime import open_runtime
    from gateway.plugins import PluginError

    try:
        return open_runtime(settings)
    except (ConfigError, PluginError) as exc:
        raise click.ClickException(f"refusing to start: {settings.config_path}:\n{exc}") from None


def _echo_alerts(run, source, router, *, dry: bool) -> None:
    """Each alert a run stored: what the plugin made of it, its incident and its sinks."""
    from gateway.fingerprints import namespaced_fingerprint

    made = {namespaced_fingerprint(source.key, key, group): (alert, key, group) for alert, key, group in run.parsed}
    for stored in run.alerts:
        alert, key, group = made.get(stored.fingerprint, (None, None, None))
        name = "alert" if dry else f"alert {stored.id}"
        click.echo(f"  {name}: {stored.status} {stored.severity} {stored.title!r}")
        if key is not None:
            click.echo(f"    fingerprint {stored.fingerprint} from the plugin's key {key!r}"
                       + (f" in group {group!r}" if group is not None else ""))
            click.echo(f"    labels: {json.dumps(alert.labels, ensure_ascii=False, sort_keys=True)}")
        if stored.incident_id is None:
            click.echo("    incident: none")
        elif stored.opened:
            click.echo("    incident: would open a new one" if dry else f"    incident: opened {stored.incident_id}")
        else:
            click.echo(f"    incident: {'would join' if dry else 'joined'} {stored.incident_id}")
        routed = router.decide(source.key, source.type, stored.severity, stored.status).sinks
        click.echo(f"    routes: {', '.join(routed) or '(none)'}")
        click.echo(f"    outbox: {', '.join(stored.outbox_sinks) or '(none)'}")


@main.command()
@click.option("--source", "source_key", default=None, help="only this source's requests")
@click.option("--since", default=None, help="only requests received since: a duration back (2h) or an ISO time")
@click.option("--refused", is_flag=True, help="only refused requests")
@click.option("--dry-run", is_flag=True, help="show what would change; store nothing")
@click.pass_obj
def replay(settings: Settings, source_key: str | None, since: str | None, refused: bool, dry_run: bool):
    """Run stored requests again through the current plugins, oldest first, and print what changed.

    A request is stored again under the same idempotency rules as a vendor's redelivery (a
    delivery id or alert ids already accepted make it a duplicate).  A refused request that is
    accepted now is no longer listed as refused.  Verify is not run again (the credentials were
    not kept), so a request refused before it passed verify is skipped, as are handshakes.
    "changed" counts requests refused before and accepted now, or the reverse.
    """
    from gateway.pipeline import rerun

    after = _since(since)
    runtime = _open_runtime(settings)
    with runtime.engine.connect() as conn:
        requests = rerun.stored_requests(conn, source_key, after, refused)
    counts = {"changed": 0, "unchanged": 0, "skipped": 0}
    for request in requests:
        source = runtime.sources.find(request.source_key)
        head = (f"{request.outcome} #{request.id} {request.source_key} {request.received_at.isoformat()}: "
                f"{request.before}")
        reason = rerun.skip_reason(source, request)
        if reason is not None:
            counts["skipped"] += 1
            click.echo(f"{head} -> skipped: {reason}")
            continue
        run = rerun.replay(runtime, source, request, dry=dry_run)
        now = f"refused {run.status} {run.code}: {run.message}" if run.outcome == "refused" else run.outcome
        now_in = run.outcome != "refused"  # a duplicate is in: accepted before
        counts["changed" if now_in != (request.outcome == "accepted") else "unchanged"] += 1
        click.echo(f"{head} -> {now}")
        _echo_alerts(run, source, runtime.snapshot.router, dry=dry_run)
    runtime.engine.dispose()
    click.echo(f"{len(requests)} requests: " + ", ".join(f"{n} {what}" for what, n in counts.items())
               + (" (dry run: nothing was stored)" if dry_run else ""))


def _dry_run_database(settings: Settings, stack) -> tuple[str, str]:
    """(URL, what it is): the configured database when it exists at the head migration (never
    created here), else a throwaway migrated SQLite that ``stack`` removes."""
    from alembic.runtime.migration import MigrationContext
    from alembic.script import ScriptDirectory
    from sqlalchemy.exc import SQLAlchemyError

    from gateway.store.db import alembic_config, make_engine, upgrade

    url = settings.database_url
    shown = url.split("@")[-1]
    if url.startswith("sqlite") and not os.path.exists(url.removeprefix("sqlite:///")):
        reason = f"{shown} does not exist"
    else:
        engine = make_engine(url)
        try:
            with engine.connect() as conn:
                current = set(MigrationContext.configure(conn).get_current_heads())
            heads = set(ScriptDirectory.from_config(alembic_config(url)).get_heads())
            if current == heads:
                return url, f"{shown}, in a transaction rolled back at the end"
            reason = f"{shown} is not at the head migration"
        except SQLAlchemyError as exc:
            reason = f"{shown} cannot be used ({exc.__class__.__name__})"
        finally:
            engine.dispose()
    directory = stack.enter_context(tempfile.TemporaryDirectory(prefix="gateway-try-"))
    throwaway = f"sqlite:///{os.path.join(directory, 'gateway.db')}"
    upgrade(throwaway)
    return throwaway, f"a throwaway SQLite ({reason}): no incident exists to join"


@main.command("try")
@click.argument("source_type", metavar="TYPE")
@click.argument("file", type=click.File("rb"))
@click.option("--header", "headers", multiple=True, metavar="K:V", help="a request header (repeat)")
@click.option("--source", "source_key", default=None, help="a configured source of TYPE: its options and routes")
@click.pass_obj
def try_(settings: Settings, source_type: str, file, headers: tuple[str, ...], source_key: str | None):
    """Show what the gateway would do with a webhook of TYPE whose body is FILE; nothing is stored.

    Runs ingest for real in a transaction that is rolled back: verify's verdict, each alert with
    its fingerprint and the plugin's key it came from, the incident it would open or join, and
    the sinks its route sends it to.  A handshake is described, not made.
    """
    from contextlib import ExitStack
    from dataclasses import replace

    from marshmallow import ValidationError

    from gateway.pipeline import rerun
    from gateway.pipeline.sources import ActiveSource

    given = {}
    for header in headers:
        name, sep, value = header.partition(":")
        if not sep or not name.strip():
            raise click.BadParameter(f"{header!r}: write it as Name:value", param_hint="--header")
        given[name.strip()] = value.strip()
    body = file.read()
    with ExitStack() as stack:
        url, where = _dry_run_database(settings, stack)
        runtime = _open_runtime(replace(settings, database_url=url))
        stack.callback(runtime.engine.dispose)
        cls = runtime.registry.source_types.get(source_type)
        if cls is None:
            raise click.BadParameter(f"no source type {source_type!r} (installed: "
                                     f"{', '.join(sorted(runtime.registry.source_types))})", param_hint="TYPE")
        if source_key is not None:
            source = runtime.sources.find(source_key)
            if source is None or source.type != source_type:
                raise click.BadParameter(f"no {source_type} source with key {source_key!r}", param_hint="--source")
        else:
            try:
                options = cls.options_schema().load({})
            except ValidationError as exc:
                raise click.ClickException(f"a {source_type} source needs options ({json.dumps(exc.messages)}): "
                                           "name a configured one with --source") from None
            source = ActiveSource("try", source_type, "try", True, "file", cls("try", options),
                                  options.get("reopen_window"))
        click.echo(f"source: {source.key} ({source_type})")
        click.echo(f"database: {where}")
        run = rerun.run(runtime, source, "POST", f"/hooks/{source_type}/{source.key}/", given, body, "127.0.0.1",
                        dry=True, verify=True)
        if not run.verified:
            click.echo(f"not verified: refused {run.status} {run.code}: {run.message}")
            return
        click.echo("verify: passed")
        if run.note:
            click.echo(f"handshake: {run.note}")
        if run.code == "handshake":
            click.echo(f"handshake: {run.message} (not made in a dry run)")
            return
        if run.outcome == "refused":
            click.echo(f"refused: {run.status} {run.code}: {run.message}")
        elif run.outcome == "duplicate":
            click.echo("duplicate: a request with its delivery id or alert ids was accepted before; nothing changes")
        else:
            click.echo(f"accepted: {len(run.alerts)} alert{'s' * (len(run.alerts) != 1)} (rolled back: nothing stored)")
            _echo_alerts(run, source, runtime.snapshot.router, dry=True)


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
