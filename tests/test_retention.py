"""Retention: the purge in batches, its schedule across processes, a real ``gateway worker`` running
it by itself, and ``gateway purge`` without the sinks' secrets."""
from __future__ import annotations

import subprocess
import sys
import time
from datetime import timedelta
from pathlib import Path
from types import SimpleNamespace

import testkit
from click.testing import CliRunner
from sqlalchemy import event, func, insert, select, update
from testkit.support import counting_write_commits, serve_environment, wait_until

from gateway.cli import main
from gateway.pipeline import retention
from gateway.pipeline.retention import PURGE_SCHEDULE, Purged, claim, purge
from gateway.store import partitions
from gateway.store.db import make_engine
from gateway.store.models import AlertRow, RawRequest, RefusedRequest, utcnow

GATEWAY = str(Path(sys.executable).parent / "gateway")


def raw_count(engine) -> int:
    with engine.connect() as conn:
        return conn.execute(select(func.count()).select_from(RawRequest)).scalar_one()


def post(app, count: int, prefix: str = "r") -> None:
    client = app.test_client()
    for n in range(count):
        assert client.post("/hooks/testsrc/src/", json={"id": f"{prefix}{n}", "title": "t"}).status_code == 202


def test_purge_deletes_in_batches_and_only_what_is_older_than_the_cutoff(app):
    engine = app.extensions["gateway"].engine
    post(app, 7)
    for _ in range(3):  # refused requests, kept for the console
        assert app.test_client().post("/hooks/testsrc/src/", data=b"{not json").status_code == 400
    with engine.begin() as conn:
        conn.execute(update(RawRequest).where(RawRequest.external_id != "r6")
                     .values(received_at=utcnow() - timedelta(days=40)))
        conn.execute(update(RefusedRequest).values(received_at=utcnow() - timedelta(days=40)))
    cutoff = utcnow() - timedelta(days=30)
    assert purge(engine, cutoff, until=time.monotonic()) == Purged(0, 0)  # out of time before the first batch
    assert purge(engine, cutoff, batch=2) == Purged(raw=6, refused=3)
    assert raw_count(engine) == 1
    with engine.connect() as conn:  # alerts stay
        assert conn.execute(select(func.count()).select_from(AlertRow)).scalar_one() == 7


def test_the_schedule_gives_one_purge_per_interval_across_processes(app, moved_clock):
    engine = app.extensions["gateway"].engine
    assert [claim(engine, PURGE_SCHEDULE, 60, holder) for holder in ("a", "b", "a")] == [True, False, False]
    moved_clock.advance(timedelta(seconds=61))
    assert [claim(engine, PURGE_SCHEDULE, 60, holder) for holder in ("b", "a")] == [True, False]


ONE_SOURCE = """
sources:
  - key: src
    type: testsrc
sinks:
  - name: itms
    type: itms
"""
RETAINING = "global:\n  retention: 1d\n  purge_interval: 1s\n" + ONE_SOURCE + "route:\n  sinks: [itms]\n"


def test_a_worker_purges_by_itself(make_app, database_url, tmp_path):
    """A real ``gateway worker``: raw requests past ``retention`` go without anyone running ``gateway purge``."""
    app = make_app(RETAINING)
    engine = app.extensions["gateway"].engine
    post(app, 3)
    with engine.begin() as conn:  # received two days ago (on PostgreSQL: moved out of today's partition)
        conn.execute(update(RawRequest).values(received_at=utcnow() - timedelta(days=2)))
    environment = serve_environment(tmp_path, app.config["CONFIG"], database_url)
    proc = subprocess.Popen([GATEWAY, "worker", "--poll", "0.2"], env=environment, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    try:
        wait_until(lambda: raw_count(engine) == 0, timeout=15)
    finally:
        proc.terminate()
        output = proc.communicate(timeout=30)[0]
    assert "retention: purged 3 raw and 0 refused requests" in output


WITH_A_SECRET_SINK = ONE_SOURCE + "  - name: web\n    type: testhttp\n    url: ${WEB_SINK_URL}\nroute:\n  sinks: [itms, web]\n"


def test_purge_starts_without_the_sinks_secrets(write_config, database_url, tmp_path, monkeypatch):
    monkeypatch.syspath_prepend(str(testkit.install_testkit(tmp_path / "site")))
    path = write_config(WITH_A_SECRET_SINK)
    run = lambda *args: CliRunner().invoke(main, list(args), env={"GATEWAY_CONFIG": path,  # noqa: E731
                                                                  "GATEWAY_DATABASE_URL": database_url})
    purged = run("purge")
    assert purged.exit_code == 0, purged.output
    assert purged.stdout.startswith("purged 0 raw requests")
    checked = run("config", "check")  # a command that uses the sinks still says what is missing
    assert checked.exit_code == 1 and "sinks[1].url: environment variable WEB_SINK_URL is not set" in checked.output


def test_purge_deletes_old_requests_a_batch_per_transaction(database_url):
    engine = make_engine(database_url)
    now = utcnow()
    old = now - timedelta(days=10)
    with engine.begin() as conn:
        conn.execute(insert(RawRequest), [dict(
            source_key="src", source_type="testsrc", method="POST", path="/hooks", headers={}, body=b"{}",
            received_at=now if n == 5 else old, external_id=str(n), alert_count=0) for n in range(6)])
        conn.execute(insert(RefusedRequest), [dict(
            source_key="src", source_type="testsrc", method="POST", path="/hooks", headers={}, body=b"{",
            received_at=old, verified=True, status=400, code="bad", message="bad") for _ in range(3)])
    partitions.ensure_ahead(engine)  # PostgreSQL: the coming days' partitions, so the purge has none to create
    deletes = []
    event.listen(engine, "before_cursor_execute",
                 lambda conn, cursor, statement, *rest: deletes.append(statement.split()[2])
                 if statement.startswith("DELETE") else None)
    with counting_write_commits(engine) as commits:
        assert purge(engine, now - timedelta(days=7), batch=2) == Purged(5, 3)

    # 5 old raw requests: 2 + 2 + 1 (on PostgreSQL in the default partition: no day partition holds
    # them); 3 refused: 2 + 1.  One transaction each.
    raw = partitions.DEFAULT if engine.dialect.name == "postgresql" else "raw_requests"
    assert deletes == [raw] * 3 + ["refused_requests"] * 2
    assert len(commits) == 5
    with engine.connect() as conn:
        assert conn.execute(select(RawRequest.external_id)).scalars().all() == ["5"]
        assert conn.execute(select(RefusedRequest.id)).all() == []
    engine.dispose()


def test_on_sqlite_the_purge_pauses_between_batches_for_longer_than_each_took(database_url, monkeypatch):
    """SQLite has one writer: back-to-back batches would take most of the writer lock from ingest."""
    engine = make_engine(database_url)
    old = utcnow() - timedelta(days=10)
    with engine.begin() as conn:
        conn.execute(insert(RawRequest), [dict(
            source_key="src", source_type="testsrc", method="POST", path="/hooks", headers={}, body=b"{}",
            received_at=old, external_id=str(n), alert_count=0) for n in range(5)])
    pauses, ticks = [], iter(range(100))
    # The module's clock: each batch takes 1, and its pauses are recorded, not slept.
    monkeypatch.setattr(retention, "time", SimpleNamespace(monotonic=lambda: next(ticks), sleep=pauses.append))

    assert purge(engine, utcnow() - timedelta(days=7), batch=2).raw == 5

    # 2 + 2 + 1: a pause after each full batch, none after the last; on PostgreSQL none at all.
    assert pauses == ([retention.PURGE_YIELD] * 2 if engine.dialect.name == "sqlite" else [])
    engine.dispose()
