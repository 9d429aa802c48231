#!/usr/bin/env python3
"""``make bench BENCH_SCALE=1``: a year-like database, then the incident list and pages read from it.

For each database in BENCH_DBS a fresh database at head is filled by a generator inside the
database (INSERT ... SELECT; no webhooks, no rows through Python), secondary indexes and foreign
keys built after the load: BENCH_SCALE_INCIDENTS incidents (full size 1,000,000),
BENCH_SCALE_ALERTS alerts and as many raw requests (full size 10,000,000) across
BENCH_SCALE_SOURCES sources (50), every incident with its "created" entry, every tenth with a
comment, timelines from ~10 to BENCH_SCALE_TIMELINE (1,000) entries.  Then BENCH_CONSOLE_REQUESTS
GETs of each API call and console page of issue 16, timed in the app (``bench/console.py``'s
``measure``), and webhooks/s into the loaded database against an empty one (``bench/bench.py``'s
gateway and wrk).  Every figure is recorded with ``bench/targets.py``'s ``record`` (area "scale").
"""
from __future__ import annotations

import json
import logging
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from contextlib import nullcontext
from datetime import datetime, timezone
from pathlib import Path
from typing import Optional

from sqlalchemy import create_engine, select, text

sys.path.insert(0, str(Path(__file__).resolve().parent))

import bench as harness  # noqa: E402  (bench/bench.py: this directory comes first on the path)
from console import CONFIG, fresh_database, measure  # noqa: E402
from targets import machine, record  # noqa: E402

from gateway.incidents.api import cursor_after, sort_order  # noqa: E402
from gateway.store import partitions  # noqa: E402
from gateway.store.models import SEARCH_TABLES, Incident, utcnow  # noqa: E402

INCIDENTS = int(os.environ.get("BENCH_SCALE_INCIDENTS") or 100_000)
ALERTS = int(os.environ.get("BENCH_SCALE_ALERTS") or 5 * INCIDENTS)
SOURCE_COUNT = int(os.environ.get("BENCH_SCALE_SOURCES") or 50)
TIMELINE = int(os.environ.get("BENCH_SCALE_TIMELINE") or 1_000)
DBS = [d.strip() for d in (os.environ.get("BENCH_DBS") or "sqlite,postgresql").split(",") if d.strip()]
TARGET_MS = 50
SOURCES = [f"src-{n:02d}" for n in range(SOURCE_COUNT)]
INGEST_RUNS = int(os.environ.get("BENCH_SCALE_INGEST_RUNS", 3))
"""Alternated ingest runs (empty, loaded) per database; 0 skips the ingest comparison."""
TABLES = ("incidents", "raw_requests", "alerts", "timeline_entries")
YEAR_S = 365 * 24 * 3600
LONG_TIMELINE = (INCIDENTS // 2000) * 1000 or INCIDENTS // 2
"""The incident whose timeline has exactly ``TIMELINE`` entries (a multiple of 1,000 at full size)."""


def base_alerts(incident: int, base: int) -> int:
    """How many of the ``base`` evenly spread alerts incident ``incident`` (1-based) gets."""
    return -(-incident * base // INCIDENTS) + (incident - 1) * base // -INCIDENTS


def plan() -> tuple[int, int]:
    """(alerts spread evenly, one or more per incident; repeats that ``LONG_TIMELINE`` gets).

    Beyond the even spread, every 1,000th incident gets (i / 1,000) % 985 repeats, so timelines
    run from ~10 entries to ~1,000; ``LONG_TIMELINE`` gets what makes its timeline (its alerts,
    the first paired with its "created" entry, and a comment on every tenth incident) exactly
    ``TIMELINE`` entries.  The spread leaves room for TIMELINE repeats, so the tables hold a few
    alerts fewer than ALERTS rather than more."""
    spread = sum((i // 1000) % 985 for i in range(1000, INCIDENTS + 1, 1000) if i != LONG_TIMELINE)
    base = ALERTS - spread - TIMELINE
    if base < INCIDENTS:
        raise SystemExit(f"BENCH_SCALE_ALERTS={ALERTS:,} is too few for {INCIDENTS:,} incidents and their timelines")
    return base, TIMELINE - (LONG_TIMELINE % 10 == 0) - base_alerts(LONG_TIMELINE, base)


class Sql:
    """The few expressions that differ between PostgreSQL and SQLite in the generator's SQL."""

    def __init__(self, postgres: bool):
        self.postgres = postgres

    def series(self, name: str, n: int) -> str:
        if self.postgres:
            return f"{name}(i) AS (SELECT g::bigint FROM generate_series(1, {n}) AS g)"
        return f"{name}(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM {name} WHERE i < {n})"

    def at(self, epoch: str) -> str:
        """Whole seconds since the epoch as the column's type (SQLAlchemy's SQLite text format)."""
        if self.postgres:
            return f"to_timestamp({epoch})"
        return f"strftime('%Y-%m-%d %H:%M:%S', {epoch}, 'unixepoch') || '.000000'"

    def source(self, n: str) -> str:
        """Incident ``n``'s source: its digits above status (n % 4) and severity (n / 4 % 4), so
        every combination of the three filters has incidents (none empty by divisibility)."""
        if self.postgres:
            return f"'src-' || lpad(({n} / 16 % {SOURCE_COUNT})::text, 2, '0')"
        return f"printf('src-%02d', {n} / 16 % {SOURCE_COUNT})"

    def least(self, a: str, b: str) -> str:
        return f"LEAST({a}, {b})" if self.postgres else f"min({a}, {b})"

    def greatest(self, a: str, b: str) -> str:
        return f"GREATEST({a}, {b})" if self.postgres else f"max({a}, {b})"

    def body(self) -> str:
        hexed = b'{"title": "cpu high"}'.hex()
        return f"decode('{hexed}', 'hex')" if self.postgres else f"x'{hexed}'"


def generate(sql: Sql, start: int) -> list[str]:
    """The INSERT ... SELECTs that generate the year (``start``: its first second, epoch)."""
    base, long_extra = plan()
    repeats = f"CASE WHEN i = {LONG_TIMELINE} THEN {long_extra} WHEN i % 1000 = 0 THEN (i / 1000) % 985 ELSE 0 END"
    severity = "CASE ({n} / 4) % 4 WHEN 0 THEN 'critical' WHEN 1 THEN 'error' WHEN 2 THEN 'warning' ELSE 'info' END"
    status = "CASE i % 4 WHEN 0 THEN 'triggered' WHEN 1 THEN 'acknowledged' WHEN 2 THEN 'resolved' ELSE 'closed' END"
    # Alert ids 1..base spread evenly over the incidents in time order; the repeats of the long
    # timelines follow, a second apart from their incident's start.  LONG_TIMELINE's share of the
    # upper bound ``extra`` that is not used leaves ids unused: the table has ALERTS rows or fewer.
    alerts = (f"WITH RECURSIVE {sql.series('base', base)}, {sql.series('inc', INCIDENTS)}, {sql.series('s', 999)}, "
              f"long(i, k) AS (SELECT i, {repeats} FROM inc WHERE i % 1000 = 0 OR i = {LONG_TIMELINE}), "
              f"a(id, incident, at) AS (SELECT i, (i - 1) * {INCIDENTS} / {base} + 1, {start} + (i - 1) * {YEAR_S} / {base} FROM base"
              f" UNION ALL SELECT {base} + row_number() OVER (ORDER BY long.i, s.i), long.i,"
              f" {start} + (long.i - 1) * {YEAR_S} / {INCIDENTS} + s.i FROM long JOIN s ON s.i <= long.k) ")
    first = f"(((i - 1) * {base} + {INCIDENTS} - 1) / {INCIDENTS})"
    past = f"((i * {base} + {INCIDENTS} - 1) / {INCIDENTS})"
    own = f"{start} + (i - 1) * {YEAR_S} / {INCIDENTS}"
    spans = (f"SELECT i, {repeats} AS k, {past} - {first} AS n, {start} + {first} * {YEAR_S} / {base} AS first_at,"
             f" {start} + ({past} - 1) * {YEAR_S} / {base} AS last_at FROM inc")
    created = f"CASE WHEN k > 0 THEN {sql.least('first_at', own + ' + 1')} ELSE first_at END"
    latest = f"CASE WHEN k > 0 THEN {sql.greatest('last_at', own + ' + k')} ELSE last_at END"
    return [
        f"WITH RECURSIVE {sql.series('inc', INCIDENTS)}, x AS ({spans}) "
        "INSERT INTO incidents (id, fingerprint, source_key, source_type, title, description, severity, status,"
        " resource_id, resource_name, resource_type, event_count, first_seen_at, last_seen_at, created_at,"
        " last_event_at, resolved_at) "
        f"SELECT i, 'fp-' || i, {sql.source('i')}, 'whatap', 'CPU high on host-' || i, '', {severity.format(n='i')},"
        f" {status}, 'host-' || i, 'host-' || i, 'server', n + k, {sql.at(created)}, {sql.at(latest)},"
        f" {sql.at(created)}, {sql.at(latest)}, CASE WHEN i % 4 >= 2 THEN {sql.at(latest)} END FROM x",
        alerts + "INSERT INTO raw_requests (id, source_key, source_type, method, path, headers, body, content_type,"
        " remote_addr, received_at, external_id, alert_count) "
        f"SELECT id, {sql.source('incident')}, 'whatap', 'POST', '/hooks/whatap/' || {sql.source('incident')} || '/',"
        f" '{{}}', {sql.body()}, 'application/json', '127.0.0.1', {sql.at('at')}, 'e' || id, 1 FROM a",
        alerts + "INSERT INTO alerts (id, raw_request_id, source_key, source_type, fingerprint, external_id, status,"
        " severity, title, description, resource_id, resource_name, resource_type, occurred_at, labels, origin,"
        " incident_id, received_at) "
        f"SELECT id, id, {sql.source('incident')}, 'whatap', 'fp-' || incident, 'e' || id, 'firing',"
        f" {severity.format(n='incident')}, 'CPU high on host-' || incident, '', 'host-' || incident,"
        f" 'host-' || incident, 'server', {sql.at('at')}, '{{\"pcode\": \"1\"}}', 'webhook', incident, {sql.at('at')} FROM a",
        # The first alert shares its incident's start, so "created" tells of it (``service.timeline``).
        "INSERT INTO timeline_entries (incident_id, kind, actor, at) "
        "SELECT id, 'created', 'source:' || source_key, created_at FROM incidents ORDER BY id",
        "INSERT INTO timeline_entries (incident_id, kind, actor, at, note) "
        "SELECT id, 'commented', 'kim', created_at, 'looked at host-' || id FROM incidents WHERE id % 10 = 0 ORDER BY id",
    ]


def run_without_indexes(execute, indexes: list, statements: list[str]) -> None:
    """``statements`` with ``indexes`` ((name, definition) pairs) dropped before and built after:
    one sort per index instead of a B-tree insert per row."""
    for name, _ in indexes:
        execute(f'DROP INDEX "{name}"')
    for statement in statements:
        execute(statement)
    for _, definition in indexes:
        execute(definition)


def fill(url: str) -> None:
    """Generate the year inside the database (INSERT ... SELECT), the four tables' secondary
    indexes and foreign keys (on SQLite: the search's triggers) dropped first and built after,
    then statistics (and on PostgreSQL the visibility map autovacuum keeps on a live database).
    Nothing goes through Python row by row."""
    start = int(time.time()) - YEAR_S
    postgres = url.startswith("postgresql")
    statements = generate(Sql(postgres), start)
    if postgres:
        import psycopg

        # The year's raw requests go to their day partitions, as a year's retention keeps them.
        engine = create_engine(url)
        partitions.ensure(engine, datetime.fromtimestamp(start, timezone.utc).date(), utcnow().date())
        engine.dispose()
        with psycopg.connect(url.replace("postgresql+psycopg://", "postgresql://", 1)) as conn:
            conn.execute("SET maintenance_work_mem = '1GB'")
            conn.execute("SET synchronous_commit = off")
            # A partitioned table's index reads back "ON ONLY" it, which would build it on the parent alone
            # and leave every day partition without it (and the parent's index invalid): built whole instead.
            indexes = [(name, definition.replace(" ON ONLY ", " ON ", 1)) for name, definition in conn.execute(
                "SELECT indexname, indexdef FROM pg_indexes WHERE schemaname = current_schema()"
                " AND tablename = ANY(%s) AND indexname NOT IN (SELECT conname FROM pg_constraint)", [list(TABLES)])]
            keys = conn.execute(
                "SELECT conrelid::regclass::text, conname, pg_get_constraintdef(oid) FROM pg_constraint"
                " WHERE contype = 'f' AND conrelid::regclass::text = ANY(%s)", [list(TABLES)]).fetchall()
            for table, name, _ in keys:
                conn.execute(f'ALTER TABLE {table} DROP CONSTRAINT "{name}"')
            run_without_indexes(conn.execute, indexes, statements)
            for table, name, definition in keys:
                conn.execute(f'ALTER TABLE {table} ADD CONSTRAINT "{name}" {definition}')
            for table in TABLES:
                conn.execute(f"SELECT setval(pg_get_serial_sequence('{table}', 'id'), (SELECT max(id) FROM {table}))")
            invalid = conn.execute("SELECT indexrelid::regclass::text FROM pg_index WHERE NOT indisvalid").fetchall()
            if invalid:
                raise SystemExit(f"the load left invalid indexes: {invalid}")
            conn.commit()
            conn.autocommit = True
            conn.execute("VACUUM ANALYZE")
            conn.execute("CHECKPOINT")  # the load's dirty pages written now, not during the ingest runs
        return
    import sqlite3

    conn = sqlite3.connect(url.removeprefix("sqlite:///"), isolation_level=None)
    try:
        # No journal while loading (a failed load is thrown away), a big cache for the index builds.
        conn.execute("PRAGMA journal_mode=OFF")
        conn.execute("PRAGMA synchronous=OFF")
        conn.execute("PRAGMA cache_size=-1000000")
        placeholders = ", ".join("?" * len(TABLES))
        indexes = conn.execute(f"SELECT name, sql FROM sqlite_master WHERE type = 'index' AND sql IS NOT NULL"
                               f" AND tbl_name IN ({placeholders})", TABLES).fetchall()
        # The incident search's FTS5 tables (migration 0014): their triggers dropped for the load,
        # the tables filled after it by 'rebuild', which reads the loaded rows once.
        triggers = conn.execute(f"SELECT name, sql FROM sqlite_master WHERE type = 'trigger'"
                                f" AND tbl_name IN ({placeholders})", TABLES).fetchall()
        conn.execute("BEGIN")
        for name, _ in triggers:
            conn.execute(f'DROP TRIGGER "{name}"')
        run_without_indexes(conn.execute, indexes, statements)
        for _, definition in triggers:
            conn.execute(definition)
        for name in SEARCH_TABLES:
            conn.execute(f"INSERT INTO {name} ({name}) VALUES ('rebuild')")
        conn.execute("COMMIT")
        conn.execute("ANALYZE")
        conn.execute("PRAGMA journal_mode=WAL")
    finally:
        conn.close()


SEARCHES = {
    "API list, broad search": "/api/incidents?q=CPU",
    "API list, search in comments": "/api/incidents?q=looked",
    "API list, search matching far along": "/api/incidents?q=host-1",
    "console list, broad search": "/incidents?q=CPU",
}
"""The searches that are not narrow: a word every title holds ("CPU high on host-N"); one only the
comments hold, every tenth incident's ("looked at host-N"); and one that 11 % hold (host-1, host-1x,
host-1xx...) but, newest first, only the first of 2,000 read (host-1000000), then none for 800,000."""
API_SORTS = {"API list, sort by severity": "severity", "API list, sort by events": "-event_count"}
"""The API's sorts whose indexes lead with the status, asked across every status (a merge of four walks)."""
API_SORT_PAGES = {name: f"/api/incidents?sort={sort}" for name, sort in API_SORTS.items()}
VERSUS = os.environ.get("BENCH_SCALE_VERSUS")
"""Another checkout's directory: its code's searches (``SEARCHES`` and the narrow ones) measured on the
same loaded database too, alternated with this checkout's, BENCH_SCALE_VERSUS_ROUNDS (2) times."""
VERSUS_REQUESTS = int(os.environ.get("BENCH_SCALE_VERSUS_REQUESTS") or 10)


def pages(cursors: dict[str, str]) -> dict[str, Optional[str]]:
    """Issue 16's reads, by name: the API's list (default sort, each filter, a search, page 1,000
    by offset and by ``cursor``, the next_cursor of page 999, the severity and event-count sorts
    across every status, on page 1 and page 1,000 by cursor), the incident with the long
    timeline, the raw journal's (events, by source and by delivery id, a source's requests), and
    the console's list (the same filters, search, page 1,000 as its Next link reaches it, in the
    default sort and by severity), incident page, a raw payload and the sources' pages.  A page by a cursor
    ``deep_cursors`` could not make (the list is shorter than 1,000 pages) is None."""

    def by_cursor(path: str, key: str) -> Optional[str]:
        return f"{path}&cursor={cursors[key]}" if key in cursors else None

    return {
        "API list, default sort": "/api/incidents",
        "API list, status=resolved": "/api/incidents?status=resolved",
        "API list, severity=critical": "/api/incidents?severity=critical",
        "API list, source filter": f"/api/incidents?source={SOURCES[7]}",
        "API list, text search": "/api/incidents?q=host-4242",
        **{name: path for name, path in SEARCHES.items() if path.startswith("/api/")},
        "API list, page 1,000": "/api/incidents?page=1000",
        "API list, page 1,000 by cursor": by_cursor("/api/incidents?sort=-last_event_at", "-last_event_at"),
        **API_SORT_PAGES,
        **{f"{name}, page 1,000 (offset)": f"{API_SORT_PAGES[name]}&page=1000" for name in API_SORTS},
        **{f"{name}, page 1,000 by cursor": by_cursor(API_SORT_PAGES[name], sort) for name, sort in API_SORTS.items()},
        f"API incident, {TIMELINE:,} entries": f"/api/incidents/{LONG_TIMELINE}",
        "API events (raw journal)": "/api/events",
        "API events, source filter": f"/api/events?source={SOURCES[7]}",
        "API events, by delivery id": f"/api/events?external_id=e{ALERTS // 2}",
        "API a source's requests": f"/api/sources/{SOURCES[7]}/requests",
        "API a source's requests, page 100": f"/api/sources/{SOURCES[7]}/requests?page=100",
        "console list": "/incidents",
        "console list, status tab": "/incidents?status=resolved",
        "console list, severity=critical": "/incidents?severity=critical",
        "console list, source filter": f"/incidents?source={SOURCES[7]}",
        "console list, sort by severity": "/incidents?sort=severity",
        "console list, sort by events": "/incidents?sort=-event_count",
        "console list, search": "/incidents?q=host-4242",
        **{name: path for name, path in SEARCHES.items() if not path.startswith("/api/")},
        "console list, page 1,000": by_cursor("/incidents?page=1000", "console"),
        "console list, sort by severity, page 1,000 (offset)": "/incidents?sort=severity&page=1000",
        "console list, sort by severity, page 1,000": by_cursor("/incidents?sort=severity&page=1000", "console severity"),
        f"console incident, {TIMELINE:,} entries": f"/incidents/{LONG_TIMELINE}",
        "console raw payload": f"/events/{ALERTS // 2}",
        "console sources, last 24 h": "/sources",
        "console source page": f"/sources/{SOURCES[7]}",
    }


OFFSET_ONLY = "(offset)"
"""In a read's name: a deep page by offset of a sort a cursor serves, printed beside its cursor's
page to show what the cursor spares, and not held to the target (issue 16: keyset pagination where
offsets cannot)."""


def deep_cursors(url: str) -> dict[str, str]:
    """The cursors that reach page 1,000 (50 a page): the API's list's ``next_cursor`` of page 999
    in each sort of its deep pages, and the console's Next link there (its default tab, triggered,
    newest first and by severity).  A list shorter than that has none: the triggered tab holds a
    quarter of the incidents, 50,000 from 200,000 on."""
    engine = create_engine(url)
    lists = {**{sort: (sort,) for sort in ("-last_event_at", *API_SORTS.values())},
             "console": ("-created_at", Incident.status == "triggered"),
             "console severity": ("severity", Incident.status == "triggered")}
    cursors = {}
    with engine.connect() as conn:
        for key, (sort, *where) in lists.items():
            row = conn.execute(select(Incident.__table__).where(*where).order_by(*sort_order(sort))
                               .offset(999 * 50 - 1).limit(1)).first()
            if row is not None:
                cursors[key] = cursor_after(sort, row)
    engine.dispose()
    return cursors


def census(url: str) -> str:
    """What was loaded, counted: rows per table, sources, the longest timeline."""
    engine = create_engine(url)
    with engine.connect() as conn:
        counts = {table: conn.execute(text(f"SELECT count(*) FROM {table}")).scalar_one() for table in TABLES}
        sources = conn.execute(text("SELECT count(DISTINCT source_key) FROM incidents")).scalar_one()
        alerts = conn.execute(text("SELECT count(*) FROM alerts WHERE incident_id = :i"), {"i": LONG_TIMELINE}).scalar_one()
    engine.dispose()
    return (", ".join(f"{table} {n:,}" for table, n in counts.items()) +
            f"; {sources} sources; incident {LONG_TIMELINE} has {alerts:,} alerts")


def ingest(db: str, url: str, workdir: Path, wrk: str) -> None:
    """Webhooks/s into the loaded database against a fresh empty one, alternated BENCH_SCALE_INGEST_RUNS
    times in this run (bench/bench.py's gateway, warm-up and wrk), medians; recorded against 90 %."""
    rates: dict[str, list[float]] = {"empty": [], "loaded": []}
    for run in range(INGEST_RUNS):
        for kind in ("empty", "loaded"):
            with (fresh_database(db, workdir / "empty") if kind == "empty" else nullcontext(url)) as target:
                server, hook = harness.start_gateway(workdir, target, f"{db}-{kind}-{run}", db)
                try:
                    result = harness.measure(wrk, server, hook, target)
                finally:
                    server.stop()
            rates[kind].append(result["accepted_per_s"])
            print(f"  ingest into the {kind} database: {result['accepted_per_s']:.0f}/s, p99 {result['p99_ms']:.1f} ms,"
                  f" non-2xx {sum(result['non_2xx'].values())}, load average {result['loadavg_before']:.1f}", flush=True)
    empty, loaded = statistics.median(rates["empty"]), statistics.median(rates["loaded"])
    runs = lambda kind: " / ".join(f"{r:.0f}" for r in rates[kind])  # noqa: E731
    meets = record("scale", "ingest, loaded / empty database", db, loaded / empty, 0.9, higher_is_better=True,
                   unit="ratio", detail=f"{loaded:.0f}/s against {empty:.0f}/s, medians of {runs('loaded')} and "
                                        f"{runs('empty')}, {harness.DURATION} s runs alternated, {INCIDENTS:,} incidents")
    print(f"  ingest loaded/empty {loaded / empty:.0%} (target 90 %): {'yes' if meets else 'NO'}")


def versus(url: str, config_path: str) -> None:
    """The searches and the sorts timed with VERSUS's code and with this checkout's on the
    same database, in turns, each in a process of its own (its ``gateway`` and ``bench/console.py``
    first on the path; the installed plugins are this checkout's): before against after without a
    second load."""
    reads = {"API list, text search": "/api/incidents?q=host-4242", "console list, search": "/incidents?q=host-4242",
             "console list, sort by severity": "/incidents?sort=severity", **API_SORT_PAGES, **SEARCHES}
    script = ("import json, logging, sys; sys.path[:0] = [sys.argv[1], sys.argv[1] + '/bench']; "
              "logging.disable(logging.INFO); from console import measure; "
              "print(json.dumps(measure(sys.argv[2], sys.argv[3], json.loads(sys.argv[4]), int(sys.argv[5]))))")
    codes = {"before": str(Path(VERSUS).resolve()), "after": str(harness.ROOT)}
    samples: dict[str, dict[str, list[float]]] = {code: {name: [] for name in reads} for code in codes}
    for _ in range(int(os.environ.get("BENCH_SCALE_VERSUS_ROUNDS") or 2)):
        for code, root in codes.items():
            engine = create_engine(url)  # each ``measure`` signs in as a new user "bench"
            with engine.begin() as conn:
                conn.execute(text("DELETE FROM users WHERE name = 'bench'"))
            engine.dispose()
            done = subprocess.run([sys.executable, "-c", script, root, url, config_path, json.dumps(reads),
                                   str(VERSUS_REQUESTS)], capture_output=True, text=True, check=True, cwd=root)
            for name, times in json.loads(done.stdout.strip().splitlines()[-1]).items():
                samples[code][name] += times
    load = " ".join(Path("/proc/loadavg").read_text().split()[:3])
    print(f"  searches, {VERSUS} (before) against this checkout (after), same database, load average {load}:")
    print(f"  {'read':36} {'before median':>13} {'p95':>8} {'after median':>13} {'p95':>8}")
    for name in reads:
        before, after = samples["before"][name], samples["after"][name]
        print(f"  {name:36} {statistics.median(before):13.1f} {percentile95(before):8.1f}"
              f" {statistics.median(after):13.1f} {percentile95(after):8.1f}", flush=True)


def percentile95(samples: list[float]) -> float:
    return statistics.quantiles(samples, n=20, method="inclusive")[-1]


def main() -> None:
    requests = int(os.environ.get("BENCH_CONSOLE_REQUESTS") or 20)
    base, _ = plan()
    print(f"at scale: {INCIDENTS:,} incidents, ~{ALERTS:,} alerts and as many raw requests, {SOURCE_COUNT} sources,"
          f" timelines up to {TIMELINE:,} entries (full size: 1,000,000 / 10,000,000)")
    print(f"machine: {machine()}; {requests} requests each, server time in ms")
    logging.disable(logging.INFO)  # a line per request and per migration step would bury the table
    wrk = harness.ensure_wrk() if INGEST_RUNS else ""
    workdir = Path(tempfile.mkdtemp(prefix="bench-scale-"))
    (workdir / "empty").mkdir()
    config_path = workdir / "gateway.yaml"
    config_path.write_text(CONFIG % "\n".join(f"  - {{key: {k}, type: whatap}}" for k in SOURCES))
    try:
        for db in DBS:
            with fresh_database(db, workdir) as url:
                started = time.perf_counter()
                fill(url)
                loaded = time.perf_counter() - started
                load = " ".join(Path("/proc/loadavg").read_text().split()[:3])
                print(f"\n{db}: loaded in {loaded:.0f} s; load average {load}; {census(url)}", flush=True)
                print(f"  {'read':36} {'median':>8} {'p95':>8} {'target':>7}  meets  {'CPU median':>10} {'CPU p95':>8}")
                cpu: dict[str, list[float]] = {}
                reads = pages(deep_cursors(url))
                for name in [name for name, path in reads.items() if path is None]:
                    print(f"  {name:36} not measured: the list has fewer than 1,000 pages at this size")
                reads = {name: path for name, path in reads.items() if path is not None}
                for name, samples in measure(url, str(config_path), reads, requests, cpu).items():
                    median, p95 = statistics.median(samples), percentile95(samples)
                    cpu_median, cpu_p95 = statistics.median(cpu[name]), percentile95(cpu[name])
                    if OFFSET_ONLY in name:
                        print(f"  {name:36} {median:8.1f} {p95:8.1f} {'-':>7}  {'-':5}{cpu_median:10.1f} {cpu_p95:8.1f}")
                        continue
                    meets = record("scale", f"{name}, p95", db, p95, TARGET_MS, higher_is_better=False, unit="ms",
                                   detail=f"median {median:.1f} ms; CPU median {cpu_median:.1f}, p95 {cpu_p95:.1f} ms;"
                                          f" {requests} requests, {INCIDENTS:,} incidents")
                    print(f"  {name:36} {median:8.1f} {p95:8.1f} {TARGET_MS:7}  {'yes' if meets else 'NO ':5}"
                          f"{cpu_median:10.1f} {cpu_p95:8.1f}", flush=True)
                if VERSUS:
                    versus(url, str(config_path))
                if INGEST_RUNS:
                    ingest(db, url, workdir, wrk)
    finally:
        harness.Server.stop_all()
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
