"""Retention: what ``gateway purge`` (and anything that schedules it) removes, in bounded batches.

Each batch is its own short transaction, so a purge of millions of rows never holds the
database (on SQLite, the one writer lock every webhook needs) for longer than one batch.
On PostgreSQL it deletes in batches too: raw requests are not partitioned by time yet.
"""
from __future__ import annotations

from datetime import datetime

from sqlalchemy import Engine, delete, select

from gateway.store.db import run_in_transaction
from gateway.store.models import RawRequest, RefusedRequest

PURGE_BATCH = 5_000
"""Rows per purge transaction: milliseconds of work, so ingest waits at most that long."""


def purge(engine: Engine, cutoff: datetime, batch: int = PURGE_BATCH) -> tuple[int, int]:
    """Delete raw and refused requests received before ``cutoff``, ``batch`` rows per transaction;
    how many of each were removed.  Alerts and incidents stay (their raw link becomes NULL)."""
    removed = {}
    for model in (RefusedRequest, RawRequest):
        table = model.__table__
        oldest = (select(table.c.id).where(table.c.received_at < cutoff).order_by(table.c.id).limit(batch)
                  .scalar_subquery())
        statement = delete(table).where(table.c.id.in_(oldest))
        removed[model] = 0
        while True:
            count = run_in_transaction(engine, lambda conn: conn.execute(statement).rowcount)
            removed[model] += count
            if count < batch:
                break
    return removed[RawRequest], removed[RefusedRequest]
