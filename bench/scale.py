#!/usr/bin/env python3
"""``make bench BENCH_SCALE=1``: a year-like database, then the incident list and pages read from it.

For each database in BENCH_DBS a fresh database at head is bulk-loaded by a generator (COPY on
PostgreSQL, executemany on SQLite; no webhooks): BENCH_SCALE_INCIDENTS incidents (full size
1,000,000), BENCH_SCALE_ALERTS alerts and as many raw requests (full size 10,000,000), across
BENCH_SCALE_SOURCES sources (50), every incident with its "created" entry, every tenth with a
comment, and one incident with BENCH_SCALE_TIMELINE (1,000) timeline entries.  Then
BENCH_CONSOLE_REQUESTS GETs of each API call and console page of issue 16, timed in the app
(``bench/console.py``'s ``measure``), and one table: median, p95, the 50 ms target, whether p95
meets it, with the machine and the load it ran under.
"""
from __future__ import annotations

import json
import os
import statistics
import sys
import tempfile
import time
from datetime import datetime, timedelta
from pathlib import Path
from typing import Iterator

from sqlalchemy import create_engine, insert, select, text

sys.path.insert(0, str(Path(__file__).resolve().parent))

from console import CONFIG, fresh_database, measure  # noqa: E402

from gateway.incidents.api import keyset_cursor  # noqa: E402
from gateway.store import partitions  # noqa: E402
from gateway.store.models import AlertRow, Incident, RawRequest, TimelineEntry, utcnow  # noqa: E402

INCIDENTS = int(os.environ.get("BENCH_SCALE_INCIDENTS") or 100_000)
ALERTS = int(os.environ.get("BENCH_SCALE_ALERTS") or 5 * INCIDENTS)
SOURCE_COUNT = int(os.environ.get("BENCH_SCALE_SOURCES") or 50)
TIMELINE = int(os.environ.get("BENCH_SCALE_TIMELINE") or 1_000)
DBS = [d.strip() for d in (os.environ.get("BENCH_DBS") or "sqlite,postgresql").split(",") if d.strip()]
TARGET_MS = 50
SOURCES = [f"src-{n:02d}" for n in range(SOURCE_COUNT)]
STATUSES = ("triggered", "acknowledged", "resolved", "closed")
SEVERITIES = ("critical", "error", "warning", "info")
BATCH = 20_000
YEAR = timedelta(days=365)
LONG_TIMELINE = INCIDENTS // 2
"""The incident with ``TIMELINE`` entries."""


def raw_rows(count: int, start: datetime, span: timedelta) -> Iterator[tuple]:
    """``count`` raw requests (ids 1..count, columns as ``COLUMNS``), evenly over ``span`` from ``start``."""
    for i in range(1, count + 1):
        yield (i, SOURCES[i % SOURCE_COUNT], "whatap", "POST", "/hooks/whatap/x/", "{}",
               b'{"title": "cpu high"}', "application/json", "127.0.0.1", start + span * i / count, f"e{i}", 1)


def rows(table: str, start: datetime) -> Iterator[tuple]:
    """``table``'s generated rows in column order (``COLUMNS``), spread over the year from ``start``."""
    if table == "raw_requests":
        yield from raw_rows(ALERTS, start, YEAR)
    elif table == "incidents":
        for i in range(1, INCIDENTS + 1):
            at = start + YEAR * i / INCIDENTS
            status = STATUSES[i % 4]
            yield (i, f"fp-{i}", SOURCES[i % SOURCE_COUNT], "whatap", f"CPU high on host-{i}", "",
                   SEVERITIES[(i // 4) % 4], status, f"host-{i}", f"host-{i}", "server", ALERTS // INCIDENTS or 1,
                   at, at, at, at, at if status in ("resolved", "closed") else None)
    elif table == "alerts":
        for i in range(1, ALERTS + 1):
            incident = i % INCIDENTS + 1
            yield (i, i, SOURCES[incident % SOURCE_COUNT], "whatap", f"fp-{incident}", f"e{i}", "firing",
                   SEVERITIES[(incident // 4) % 4], f"CPU high on host-{incident}", "", f"host-{incident}",
                   f"host-{incident}", "server", start + YEAR * i / ALERTS,
                   '{"pcode": "1"}', "webhook", incident, start + YEAR * i / ALERTS)
    else:
        for i in range(1, INCIDENTS + 1):
            at = start + YEAR * i / INCIDENTS
            yield (i, "created", f"source:{SOURCES[i % SOURCE_COUNT]}", at, None)
            if i % 10 == 0:
                yield (i, "commented", "kim", at, f"looked at host-{i}")
        at = start + YEAR / 2
        for n in range(TIMELINE - 1):
            yield (LONG_TIMELINE, "commented", "kim", at + timedelta(seconds=n + 1), f"note {n}")


COLUMNS = {
    "raw_requests": ("id", "source_key", "source_type", "method", "path", "headers", "body", "content_type",
                     "remote_addr", "received_at", "external_id", "alert_count"),
    "incidents": ("id", "fingerprint", "source_key", "source_type", "title", "description", "severity", "status",
                  "resource_id", "resource_name", "resource_type", "event_count", "first_seen_at", "last_seen_at",
                  "created_at", "last_event_at", "resolved_at"),
    "alerts": ("id", "raw_request_id", "source_key", "source_type", "fingerprint", "external_id", "status",
               "severity", "title", "description", "resource_id", "resource_name", "resource_type", "occurred_at", "labels", "origin", "incident_id", "received_at"),
    "timeline_entries": ("incident_id", "kind", "actor", "at", "note"),
}
MODELS = {"raw_requests": RawRequest, "incidents": Incident, "alerts": AlertRow, "timeline_entries": TimelineEntry}


def fill(url: str) -> None:
    """Bulk-load the dataset (``load``), on PostgreSQL into the raw journal's day partitions of the year."""
    start = utcnow() - YEAR
    if url.startswith("postgresql"):
        engine = create_engine(url)
        partitions.ensure(engine, start.date(), utcnow().date())
        engine.dispose()
    for table in COLUMNS:
        load(url, table, rows(table, start))
    engine = create_engine(url)
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        conn.execute(text("ANALYZE"))
    engine.dispose()


def load(url: str, table: str, generated: Iterator[tuple]) -> None:
    """Bulk-load ``table`` with ``generated`` rows (in ``COLUMNS[table]`` order): COPY and the id
    sequence moved past them on PostgreSQL, batched executemany through the models' types on SQLite."""
    columns = COLUMNS[table]
    engine = create_engine(url)
    if url.startswith("postgresql"):
        raw = engine.raw_connection()
        with raw.driver_connection.cursor() as cursor:
            with cursor.copy(f"COPY {table} ({', '.join(columns)}) FROM STDIN") as copy:
                for row in generated:
                    copy.write_row(row)
            cursor.execute(f"SELECT setval(pg_get_serial_sequence('{table}', 'id'), (SELECT max(id) FROM {table}))")
        raw.driver_connection.commit()
        raw.close()
    else:
        with engine.begin() as conn:
            statement = insert(MODELS[table].__table__)
            batch = []
            for row in generated:
                values = dict(zip(columns, row))
                for name in ("headers", "labels"):
                    if name in values:
                        values[name] = json.loads(values[name])
                batch.append(values)
                if len(batch) == BATCH:
                    conn.execute(statement, batch)
                    batch = []
            if batch:
                conn.execute(statement, batch)
    engine.dispose()


def pages(cursor: str) -> dict[str, str]:
    """Issue 16's reads, by name: the API's list (default sort, each filter, a search, page 1,000
    by offset and by ``cursor``, the next_cursor of page 999),
    the incident with the long timeline, and the console's list and incident pages."""
    return {
        "API list, default sort": "/api/incidents",
        "API list, status=resolved": "/api/incidents?status=resolved",
        "API list, severity=critical": "/api/incidents?severity=critical",
        "API list, source filter": f"/api/incidents?source={SOURCES[7]}",
        "API list, text search": "/api/incidents?q=host-4242",
        "API list, page 1,000": "/api/incidents?page=1000",
        "API list, page 1,000 by cursor": f"/api/incidents?cursor={cursor}",
        f"API incident, {TIMELINE:,} entries": f"/api/incidents/{LONG_TIMELINE}",
        "console list": "/incidents",
        "console list, status tab": "/incidents?status=resolved",
        "console list, search": "/incidents?q=host-4242",
        f"console incident, {TIMELINE:,} entries": f"/incidents/{LONG_TIMELINE}",
    }


def deep_cursor(url: str) -> str:
    """The ``next_cursor`` of page 999 of the default list (50 a page)."""
    engine = create_engine(url)
    with engine.connect() as conn:
        row = conn.execute(select(Incident.id, Incident.last_event_at)
                           .order_by(Incident.last_event_at.desc(), Incident.id.desc()).offset(999 * 50 - 1).limit(1)).one()
    engine.dispose()
    return keyset_cursor(row.last_event_at.isoformat(), row.id)


def machine() -> str:
    cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")), "unknown CPU")
    return f"nproc {os.cpu_count()}, {cpu}"


def main() -> None:
    requests = int(os.environ.get("BENCH_CONSOLE_REQUESTS") or 20)
    print(f"at scale: {INCIDENTS:,} incidents, {ALERTS:,} alerts and {ALERTS:,} raw requests, {SOURCE_COUNT} sources,"
          f" one timeline of {TIMELINE:,} entries (full size: 1,000,000 / 10,000,000)")
    print(f"machine: {machine()}; {requests} requests each, server time in ms")
    workdir = Path(tempfile.mkdtemp(prefix="bench-scale-"))
    config_path = workdir / "gateway.yaml"
    config_path.write_text(CONFIG % "\n".join(f"  - {{key: {k}, type: whatap}}" for k in SOURCES))
    try:
        for db in DBS:
            with fresh_database(db, workdir) as url:
                started = time.perf_counter()
                fill(url)
                loaded = time.perf_counter() - started
                load = " ".join(Path("/proc/loadavg").read_text().split()[:3])
                print(f"\n{db}: loaded in {loaded:.0f} s; load average {load}")
                print(f"  {'read':36} {'median':>8} {'p95':>8} {'target':>7}  meets")
                for name, samples in measure(url, str(config_path), pages(deep_cursor(url)), requests).items():
                    p95 = statistics.quantiles(samples, n=20, method="inclusive")[-1]
                    print(f"  {name:36} {statistics.median(samples):8.1f} {p95:8.1f} {TARGET_MS:7}  "
                          f"{'yes' if p95 <= TARGET_MS else 'NO'}")
    finally:
        for path in workdir.iterdir():
            path.unlink()
        workdir.rmdir()


if __name__ == "__main__":
    main()
