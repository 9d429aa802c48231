#!/usr/bin/env python3
"""``make bench BENCH_PURGE=1``: ingest latency while retention removes millions of old raw requests.

Issue 16: "During a purge of 5,000,000 rows, ingest p99 stays within 2x its baseline."  For each
database in BENCH_PURGE_DBS (postgresql,sqlite): a fresh database, ``gateway serve`` as bench.py
starts it (without dispatchers, so no scheduled purge runs on its own), BENCH_PURGE_ROWS raw
requests received 20 to 30 days ago bulk-loaded (COPY on PostgreSQL, batched inserts on SQLite; on PostgreSQL into
their day partitions, as the gateway keeps them; BENCH_PURGE_PARTITIONS=0 loads them into the
default partition instead, where the purge deletes them in batches as it did before partitioning),
then wrk (bench.py's ``run_wrk``, bench/whatap.lua) for BENCH_DURATION seconds: once alone (the
baseline), once while ``gateway purge --older-than 7d`` runs beside it, started a second into
the run, and once more after it (how much the machine's own load moved meanwhile).  It records
the ratio of the p99 during the purge to the baseline's (target <= 2) with ``bench/targets.py``,
and prints the purge's duration and what it removed.  On PostgreSQL the purge may be over well
before wrk is: then the window holds the purge and some time after it, and the detail says so.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from datetime import datetime, timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench import bench as driver  # noqa: E402  (bench/bench.py: servers, databases, wrk)
from sqlalchemy import create_engine, insert, text  # noqa: E402
from targets import record  # noqa: E402

from gateway.store import partitions  # noqa: E402
from gateway.store.models import RawRequest, utcnow  # noqa: E402

DBS = [d.strip() for d in (os.environ.get("BENCH_PURGE_DBS") or "postgresql,sqlite").split(",") if d.strip()]
ROWS = int(os.environ.get("BENCH_PURGE_ROWS") or 5_000_000)
INTO_PARTITIONS = (os.environ.get("BENCH_PURGE_PARTITIONS") or "1") not in ("0", "no", "false")
DURATION = driver.DURATION
TARGET = 2.0
OLDEST, SPAN = timedelta(days=30), timedelta(days=10)
"""The loaded requests were received from 30 to 20 days ago: all past the purge's 7 days."""


COLUMNS = ("source_key", "source_type", "method", "path", "headers", "body", "content_type", "remote_addr",
           "received_at", "external_id", "alert_count")
BATCH = 20_000


def old_requests(count: int, start: datetime, span: timedelta):
    """``count`` small raw requests (columns as ``COLUMNS``), evenly over ``span`` from ``start``."""
    for i in range(1, count + 1):
        yield (f"src-{i % 50:02d}", "whatap", "POST", "/hooks/whatap/x/", "{}", b'{"title": "cpu high"}',
               "application/json", "127.0.0.1", start + span * i / count, f"e{i}", 1)


def load(url: str, rows) -> None:
    """COPY on PostgreSQL (partition routing included), batched inserts through the model's types on SQLite."""
    engine = create_engine(url)
    if url.startswith("postgresql"):
        raw = engine.raw_connection()
        with raw.driver_connection.cursor() as cursor:
            with cursor.copy(f"COPY raw_requests ({', '.join(COLUMNS)}) FROM STDIN") as copy:
                for row in rows:
                    copy.write_row(row)
        raw.driver_connection.commit()
        raw.close()
    else:
        with engine.begin() as conn:
            batch = []
            for row in rows:
                batch.append(dict(zip(COLUMNS, row), headers=json.loads(row[4])))
                if len(batch) == BATCH:
                    conn.execute(insert(RawRequest.__table__), batch)
                    batch = []
            if batch:
                conn.execute(insert(RawRequest.__table__), batch)
    engine.dispose()


def load_old_requests(url: str) -> float:
    """Bulk-load ``ROWS`` old raw requests, then vacuum and analyze them; seconds it took."""
    started = time.perf_counter()
    start = utcnow() - OLDEST
    if url.startswith("postgresql") and INTO_PARTITIONS:
        engine = create_engine(url)
        partitions.ensure(engine, start.date(), (start + SPAN).date())
        engine.dispose()
    load(url, old_requests(ROWS, start, SPAN))
    engine = create_engine(url)
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        # What autovacuum has long done to requests 20 days old; else it would still be at work on
        # them, and a partition's drop waits for it.
        conn.execute(text("VACUUM ANALYZE raw_requests" if url.startswith("postgresql") else "ANALYZE"))
    engine.dispose()
    return time.perf_counter() - started


def run(wrk: str, workdir: Path, dbs: driver.Databases, db: str) -> None:
    url = dbs.fresh(db, "purge")
    env = dict(os.environ, **driver.sqlite_synchronous(db), GATEWAY_DATABASE_URL=url,
               GATEWAY_CONFIG=str(workdir / "bench-gateway.yaml"))
    subprocess.run([str(driver.BIN / "gateway"), "db", "upgrade"], env=env, check=True, timeout=120,
                   stdout=subprocess.DEVNULL)
    loaded = load_old_requests(url)
    where = "day partitions" if db == "postgresql" and INTO_PARTITIONS else (
        "the default partition" if db == "postgresql" else "one table")
    driver.log(f"[purge] {db}: {ROWS:,} raw requests from 20-30 days ago loaded into {where} (and vacuumed)"
               f" in {loaded:.0f} s")
    server, hook = driver.start_gateway(workdir, url, f"{db}-purge", db, serve_args=("--no-dispatcher",))
    try:
        driver.run_wrk(wrk, hook, driver.WARMUP)
        baseline = driver.run_wrk(wrk, hook, DURATION)
        driver.describe("baseline", baseline)
        purge = {}

        def run_purge():
            started = time.monotonic()
            done = subprocess.run([str(driver.BIN / "gateway"), "purge", "--older-than", "7d"], env=env,
                                  stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=3600)
            purge.update(took=time.monotonic() - started, output=done.stdout.strip(), code=done.returncode)

        timer = threading.Timer(1.0, run_purge)  # a second into wrk's run
        timer.start()
        during = driver.run_wrk(wrk, hook, DURATION)
        timer.join()
        took, output = purge["took"], purge["output"]
        if purge["code"]:
            raise RuntimeError(f"gateway purge failed (exit {purge['code']}):\n{output}")
        driver.describe("during the purge", during)
        after = driver.run_wrk(wrk, hook, DURATION)  # how far the machine's own load moved meanwhile
        driver.describe("after it", after)
    finally:
        server.stop()
    ratio = during["p99_ms"] / baseline["p99_ms"]
    overlap = ("the purge outlasted the window" if took > DURATION - 1
               else f"the purge ran from 1 s to {1 + took:.1f} s of it")
    longest = [run["latency_us"]["max"] / 1000 for run in (baseline, during)]
    said = output.splitlines()[-1] if output else "no output"
    detail = (f"p99 {baseline['p99_ms']:.1f} ms before, {during['p99_ms']:.1f} ms during, {after['p99_ms']:.1f} ms"
              f" after (max {longest[0]:.0f} and {longest[1]:.0f} ms before and during);"
              f" {baseline['accepted_per_s']:.0f}/s, {during['accepted_per_s']:.0f}/s and"
              f" {after['accepted_per_s']:.0f}/s;"
              f" purge of {ROWS:,} rows from {where}: `gateway purge` ran {took:.1f} s, start-up included ({said});"
              f" wrk {DURATION} s, {overlap}")
    driver.log(f"  ratio {ratio:.2f} (target <= {TARGET}); {detail}")
    record("retention", f"ingest p99 during a purge of {ROWS:,} / alone", db, ratio, TARGET,
           higher_is_better=False, unit="x", detail=detail)


def main() -> int:
    wrk = driver.ensure_wrk()
    driver.log(f"[purge] load average {' '.join(Path('/proc/loadavg').read_text().split()[:3])}")
    workdir = Path(tempfile.mkdtemp(prefix="bench-purge-"))
    dbs = driver.Databases(workdir)
    (workdir / "bench-gateway.yaml").write_text(driver.BENCH_CONFIG)
    try:
        for db in DBS:
            run(wrk, workdir, dbs, db)
    finally:
        driver.Server.stop_all()
        dbs.drop_all()
        subprocess.run(["rm", "-rf", str(workdir)], check=False)
    return 0


if __name__ == "__main__":
    sys.exit(main())
