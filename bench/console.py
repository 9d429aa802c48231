#!/usr/bin/env python3
"""``make bench`` (second part): the console's pages with BENCH_CONSOLE_INCIDENTS (100,000) incidents stored.

For each database in BENCH_DBS: a fresh database at head, that many incidents (a quarter in each
status, four sources, every tenth with a comment, each with its alert and raw request), then
BENCH_CONSOLE_REQUESTS (20) requests of each page through the app, signed in as an admin.  The time
is server time: from the request entering the Flask app to its response, no network.  Prints
median, p95 and max per page against the issue's target of 100 ms.  Temporary databases are
removed at the end.
"""
from __future__ import annotations

import logging
import os
import secrets
import statistics
import sys
import tempfile
import time
import uuid
from contextlib import contextmanager
from datetime import timedelta
from pathlib import Path
from typing import Iterator, Optional

from sqlalchemy import create_engine, insert, text

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from gateway import users  # noqa: E402
from gateway.app import create_app, settle_heap  # noqa: E402
from gateway.store.db import upgrade  # noqa: E402
from gateway.store.models import AlertRow, Incident, RawRequest, TimelineEntry, utcnow  # noqa: E402

INCIDENTS = int(os.environ.get("BENCH_CONSOLE_INCIDENTS") or 100_000)
REQUESTS = int(os.environ.get("BENCH_CONSOLE_REQUESTS") or 20)
DBS = [d.strip() for d in (os.environ.get("BENCH_DBS") or "sqlite,postgresql").split(",") if d.strip()]
PG_ADMIN_URL = os.environ.get("BENCH_PG_URL") or "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
TARGET_MS = 100
CONFIG = """
sources:
%s
sinks:
  - {name: itms, type: itms}
route: {sinks: [itms]}
"""
SOURCES = [f"bench-{n}" for n in range(4)]
STATUSES = ("triggered", "acknowledged", "resolved", "closed")
SEVERITIES = ("critical", "error", "warning", "info")
BATCH = 5_000


def fill(url: str) -> None:
    engine = create_engine(url)
    now = utcnow()
    with engine.begin() as conn:
        for start in range(0, INCIDENTS, BATCH):
            ids = range(start + 1, min(start + BATCH, INCIDENTS) + 1)
            at = [now - timedelta(seconds=INCIDENTS - i) for i in ids]
            conn.execute(insert(RawRequest.__table__), [dict(
                id=i, source_key=SOURCES[i % 4], source_type="whatap", method="POST", path="/hooks/whatap/x/",
                headers={}, body=b'{"title": "cpu high"}', content_type="application/json",
                remote_addr="127.0.0.1", received_at=t, external_id=f"e{i}", alert_count=1)
                for i, t in zip(ids, at)])
            conn.execute(insert(Incident.__table__), [dict(
                id=i, fingerprint=f"fp-{i}", source_key=SOURCES[i % 4], source_type="whatap",
                title=f"CPU high on host-{i}", description="", severity=SEVERITIES[i % 4], status=STATUSES[i % 4],
                resource_id=f"host-{i}", resource_name=f"host-{i}", resource_type="server", event_count=1,
                first_seen_at=t, last_seen_at=t, created_at=t, last_event_at=t,
                resolved_at=t if STATUSES[i % 4] in ("resolved", "closed") else None)
                for i, t in zip(ids, at)])
            conn.execute(insert(AlertRow.__table__), [dict(
                id=i, raw_request_id=i, source_key=SOURCES[i % 4], source_type="whatap", fingerprint=f"fp-{i}",
                external_id=f"e{i}", status="firing", severity=SEVERITIES[i % 4], title=f"CPU high on host-{i}",
                occurred_at=t, labels={"pcode": "1"}, origin="webhook", incident_id=i, received_at=t)
                for i, t in zip(ids, at)])
            conn.execute(insert(TimelineEntry.__table__), [dict(
                incident_id=i, kind="created", actor=f"source:{SOURCES[i % 4]}", at=t) for i, t in zip(ids, at)]
                + [dict(incident_id=i, kind="commented", actor="kim", at=t, note=f"looked at host-{i}")
                   for i, t in zip(ids, at) if i % 10 == 0])
        if url.startswith("postgresql"):
            for table in ("raw_requests", "incidents", "alerts", "timeline_entries"):
                conn.execute(text(f"SELECT setval(pg_get_serial_sequence('{table}', 'id'), "
                                  f"(SELECT max(id) FROM {table}))"))
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        # What autovacuum keeps on a live database: statistics, and on PostgreSQL the visibility map,
        # without which each status tab's count (an index-only scan) visits the table for every entry.
        conn.execute(text("VACUUM ANALYZE" if url.startswith("postgresql") else "ANALYZE"))
    engine.dispose()


def console_pages(incidents: int, sources: list[str]) -> dict[str, str]:
    """The console's pages worth timing, by name, for a database of ``incidents`` across ``sources``."""
    middle = incidents // 2
    return {
        "incident list": "/incidents",
        "list, resolved tab, page 20": "/incidents?status=resolved&page=20",
        "list, severity+source filter": f"/incidents?severity=critical&source={sources[0]}",
        "list, search (title/comments)": "/incidents?q=host-4242",
        "list, sort by severity": "/incidents?sort=severity",
        "list, sort by events": "/incidents?sort=-event_count",
        "list refresh (partial)": "/incidents?partial=1",
        "incident page": f"/incidents/{middle}",
        "raw payload": f"/events/{middle}",
        "webhook sources": "/sources",
        "source page": f"/sources/{sources[1]}",
        "deliveries": "/deliveries",
    }


def measure(url: str, config_path: str, pages: dict[str, str], requests: int = REQUESTS,
            cpu: Optional[dict[str, list[float]]] = None) -> dict[str, list[float]]:
    """Server time in ms of ``requests`` GETs of each of ``pages`` (name -> path), signed in as an
    admin (API paths with the service token).  ``cpu`` gets each request's CPU time in ms too (this
    process's, the app's only thread): what the code costs, where the wall time also holds the
    waits for a CPU that other processes on a loaded machine add."""
    token = secrets.token_hex(16)
    app = create_app({"DATABASE_URL": url, "CONFIG": config_path, "SECRET_KEY": secrets.token_hex(16),
                      "ADMIN_TOKEN": token})
    settle_heap()  # as a gunicorn worker does once it has loaded the app
    engine = app.extensions["gateway"].engine
    users.create_user(engine, "bench", "admin", "bench-password")
    client = app.test_client()
    page = client.get("/login").text
    csrf = page.split('name="csrf_token" value="', 1)[1].split('"', 1)[0]
    client.post("/login", data={"username": "bench", "password": "bench-password", "csrf_token": csrf})
    times: dict[str, list[float]] = {}
    for name, path in pages.items():
        headers = {"Authorization": f"Bearer {token}"} if path.startswith("/api/") else {}
        warm = client.get(path, headers=headers)
        assert warm.status_code == 200, (path, warm.status_code, warm.text[:300])
        samples, cpu_samples = [], []
        for _ in range(requests):
            started, cpu_started = time.perf_counter(), time.process_time()
            response = client.get(path, headers=headers)
            samples.append((time.perf_counter() - started) * 1000)
            cpu_samples.append((time.process_time() - cpu_started) * 1000)
            assert response.status_code == 200, (path, response.status_code)
        times[name] = samples
        if cpu is not None:
            cpu[name] = cpu_samples
    engine.dispose()
    return times


@contextmanager
def fresh_database(db: str, workdir: Path) -> Iterator[str]:
    """The URL of a new database at head ("sqlite" in ``workdir``, or "postgresql" on BENCH_PG_URL's
    server), dropped afterwards."""
    if db == "sqlite":
        url = f"sqlite:///{workdir / 'bench.db'}"
        upgrade(url)
        yield url
        return
    name = f"{os.environ.get('BENCH_DB_PREFIX') or 'bench'}_{uuid.uuid4().hex[:8]}"
    admin = create_engine(PG_ADMIN_URL, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    try:
        url = PG_ADMIN_URL.rsplit("/", 1)[0] + f"/{name}"
        upgrade(url)
        yield url
    finally:
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


def main() -> None:
    print(f"console pages, {INCIDENTS:,} incidents, {REQUESTS} requests each (server time, ms; target {TARGET_MS})")
    print(f"load average at start: {' '.join(Path('/proc/loadavg').read_text().split()[:3])} on {os.cpu_count()} CPUs"
          " (other processes' load inflates every number)")
    # The app logs a line per request and one per migration step: thousands of lines among the figures.
    logging.disable(logging.INFO)
    workdir = Path(tempfile.mkdtemp(prefix="bench-console-"))
    config_path = workdir / "gateway.yaml"
    config_path.write_text(CONFIG % "\n".join(f"  - {{key: {k}, type: whatap}}" for k in SOURCES))
    for db in DBS:
        with fresh_database(db, workdir) as url:
            started = time.perf_counter()
            fill(url)
            print(f"\n{db}: filled in {time.perf_counter() - started:.0f} s")
            print(f"  {'page':32} {'median':>8} {'p95':>8} {'max':>8}")
            for name, samples in measure(url, str(config_path), console_pages(INCIDENTS, SOURCES)).items():
                p95 = statistics.quantiles(samples, n=20, method="inclusive")[-1]
                flag = "" if p95 < TARGET_MS else "  OVER TARGET"
                print(f"  {name:32} {statistics.median(samples):8.1f} {p95:8.1f} {max(samples):8.1f}{flag}")
    for path in workdir.iterdir():
        path.unlink()
    workdir.rmdir()


if __name__ == "__main__":
    main()
