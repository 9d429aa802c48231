"""``gateway replay`` and ``gateway try``: stored or given requests run again through the current plugins."""
from __future__ import annotations

import json
import os
import tempfile
from datetime import timedelta

import click

from gateway.cli.common import open_runtime_or_exit
from gateway.settings import Settings


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


@click.command()
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
    from gateway.store.db import reading

    after = _since(since)
    runtime = open_runtime_or_exit(settings)
    with reading(runtime.engine) as conn:
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


@click.command("try")
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
        runtime = open_runtime_or_exit(replace(settings, database_url=url))
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
