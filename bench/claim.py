#!/usr/bin/env python3
"""``make bench BENCH_CLAIM=1``: what one outbox claim costs against the depth of the backlog.

Behind an outage a sink's backlog is mostly rows waiting behind an earlier row of their problem,
whose first row waits out its backoff.  For each database in BENCH_CLAIM_DBS (sqlite,postgresql),
on a fresh database, for each depth in BENCH_CLAIM_DEPTHS (2,000, 10,000, 100,000 pending rows over
BENCH_CLAIM_PROBLEMS problems, 1,000): the dispatcher's pass marks the waiting rows blocked (timed,
once), then ``Dispatcher.claim_statement`` runs BENCH_CLAIM_RUNS times (15), each in a transaction
rolled back, and its median is printed, twice: with every problem's first row backing off (nothing
can go) and with them due (a batch of 20 goes).  It records the ratio of the deepest backlog's claim
to the shallowest's (target <= 2: the claim's cost does not follow the backlog) with
``bench/targets.py``.  In-process, no server: this is the claim alone, not the dispatcher.
"""
from __future__ import annotations

import os
import statistics
import sys
import tempfile
import time
from datetime import timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from bench import bench as driver  # noqa: E402  (bench/bench.py: databases, logging, env)
from bench.targets import record  # noqa: E402
from sqlalchemy import delete, insert, text  # noqa: E402

from gateway.pipeline.outbox import Dispatcher  # noqa: E402
from gateway.store.db import make_engine, upgrade  # noqa: E402
from gateway.store.models import AlertRow, DeliveryRow, utcnow  # noqa: E402

DBS = [d.strip() for d in (os.environ.get("BENCH_CLAIM_DBS") or "sqlite,postgresql").split(",") if d.strip()]
DEPTHS = [int(d) for d in (os.environ.get("BENCH_CLAIM_DEPTHS") or "2000,10000,100000").split(",")]
PROBLEMS = driver.env_int("BENCH_CLAIM_PROBLEMS", 1000)
RUNS = driver.env_int("BENCH_CLAIM_RUNS", 15)
SINK = "spaceone"
TARGET_DEPTH_RATIO = 2.0
log = driver.log


class Runtime:
    """All a Dispatcher's claim and blocking pass need."""

    def __init__(self, engine):
        self.engine = engine


def fill(engine, depth: int, heads_due: bool) -> None:
    """``depth`` pending rows, row n of problem n % PROBLEMS; each problem's first row was tried
    once and is due again now (``heads_due``) or in an hour."""
    now = utcnow() - timedelta(minutes=5)
    with engine.begin() as conn:
        conn.execute(delete(DeliveryRow))
        conn.execute(delete(AlertRow))
        conn.execute(insert(AlertRow), [dict(
            id=1, source_key="bench", source_type="whatap", fingerprint="f", status="firing", severity="info",
            title="x", description="", resource_id="", resource_name="", resource_type="", occurred_at=now,
            labels={}, origin="webhook", received_at=now)])
        head_due = now if heads_due else now + timedelta(hours=1)
        conn.execute(insert(DeliveryRow), [dict(
            id=n, alert_id=1, sink_name=SINK, ordering_key=f"problem-{n % PROBLEMS}", status="pending",
            attempts=int(n <= PROBLEMS), next_attempt_at=head_due if n <= PROBLEMS else now, created_at=now)
            for n in range(1, depth + 1)])
        conn.execute(text("ANALYZE deliveries" if engine.dialect.name == "postgresql" else "ANALYZE"))


def claim_ms(engine, dispatcher: Dispatcher) -> tuple[float, int]:
    """The claim's median time over RUNS (each rolled back) and how many rows it claimed."""
    times, claimed = [], 0
    for _ in range(RUNS):
        stmt, params = dispatcher.claim_statement(SINK, "bench")
        with engine.connect() as conn:
            with conn.begin() as tx:
                started = time.perf_counter()
                claimed = len(conn.execute(stmt, params).all())
                times.append((time.perf_counter() - started) * 1000)
                tx.rollback()
    return statistics.median(times), claimed


def measure(db: str, url: str) -> dict[tuple[int, bool], float]:
    engine = make_engine(url)
    dispatcher = Dispatcher(Runtime(engine))
    medians = {}
    try:
        for depth in DEPTHS:
            for heads_due in (False, True):
                fill(engine, depth, heads_due)
                started = time.perf_counter()
                blocked = dispatcher.block_waiting(SINK)
                marking = time.perf_counter() - started
                medians[depth, heads_due], claimed = claim_ms(engine, dispatcher)
                log(f"{db:10} {depth:>7,} pending, first rows {'due' if heads_due else 'backing off':11}: "
                    f"{blocked:>6,} marked blocked in {marking * 1000:7.0f} ms "
                    f"({marking / max(blocked, 1) * 1e6:5.1f} µs a row); claim median "
                    f"{medians[depth, heads_due]:7.2f} ms, {claimed} claimed")
    finally:
        engine.dispose()
    return medians


def main() -> int:
    with tempfile.TemporaryDirectory(prefix="bench-claim-") as tmp:
        dbs = driver.Databases(Path(tmp))
        try:
            for db in DBS:
                url = dbs.fresh(db, "claim")
                upgrade(url)
                medians = measure(db, url)
                shallow, deep = min(DEPTHS), max(DEPTHS)
                for heads_due in (False, True):
                    ratio = medians[deep, heads_due] / medians[shallow, heads_due]
                    record("outbox", f"claim at {deep:,} pending / at {shallow:,}, first rows "
                           f"{'due' if heads_due else 'backing off'}", db, ratio, TARGET_DEPTH_RATIO,
                           higher_is_better=False, unit="x",
                           detail=f"{medians[deep, heads_due]:.2f} ms against {medians[shallow, heads_due]:.2f} ms")
        finally:
            dbs.drop_all()
    return 0


if __name__ == "__main__":
    sys.exit(main())
