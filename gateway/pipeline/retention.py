"""Retention: raw and refused requests older than ``global.retention`` are removed, by hand (``gateway purge``)
or on schedule in every process that delivers (``gateway worker``, ``gateway serve``'s workers).

``purge`` is the one place that says what retention removes.  On PostgreSQL the raw journal is
partitioned by day (``gateway.store.partitions``): a day wholly past the cutoff is dropped, a
day straddling it is kept whole until it is past too (so raw requests are kept up to a day
longer than ``global.retention``), and old rows in the default partition are deleted.  Rows are
deleted in batches of ``PURGE_BATCH``, each batch its own short transaction, so a purge never
holds SQLite's write lock (or PostgreSQL row locks) long enough to delay a webhook noticeably.
The schedule runs it at most once per ``global.purge_interval`` across every process sharing the
database: the process that moves the ``schedules`` row's ``due_at`` forward runs it, and stops
within half the interval, so two purges never overlap.
"""
from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Optional

from sqlalchemy import Engine, column, delete, select, table as table_clause, update
from sqlalchemy.dialects import postgresql, sqlite

from gateway.store import partitions
from gateway.store.db import run_in_transaction
from gateway.store.models import RawRequest, RefusedRequest, Schedule, utcnow

log = logging.getLogger(__name__)

PURGE_BATCH = 1000
PURGE_YIELD = 3
"""On SQLite, how many times a batch's own time the purge pauses after it: the batches hold the one
writer lock a quarter of the time at most, and ingest has the rest (bench/HISTORY.md, "Session 23")."""
PURGE_SCHEDULE = "purge"
CHECK_EVERY = 60.0
"""Seconds between looks at the schedule; a shorter purge interval is looked at as often as it runs."""

_raw = RawRequest.__table__
_refused = RefusedRequest.__table__
_schedules = Schedule.__table__
_INSERT = {"postgresql": postgresql.insert, "sqlite": sqlite.insert}
_raw_default = table_clause(partitions.DEFAULT, column("id"), column("received_at", _raw.c.received_at.type))


@dataclass(frozen=True)
class Purged:
    raw: int
    refused: int
    partitions: int = 0
    """Day partitions of raw requests dropped (PostgreSQL); their rows are not counted in ``raw``."""


def purge(engine: Engine, cutoff: datetime, *, batch: int = PURGE_BATCH, until: Optional[float] = None) -> Purged:
    """Remove raw and refused requests received before ``cutoff`` (alerts and incidents stay): on
    PostgreSQL first the raw journal's days wholly before it (and the coming days are made ready),
    then rows, ``batch`` per transaction; stop early once ``time.monotonic()`` passes ``until``."""
    dropped = []
    raw = _raw
    if engine.dialect.name == "postgresql":
        partitions.ensure_ahead(engine)
        dropped = partitions.drop_before(engine, cutoff) if until is None or time.monotonic() < until else []
        raw = _raw_default
    return Purged(*(_purge_table(engine, table, cutoff, batch, until) for table in (raw, _refused)), len(dropped))


def _purge_table(engine: Engine, table, cutoff: datetime, batch: int, until: Optional[float]) -> int:
    """Delete a batch per transaction.  On SQLite, after each batch, pause ``PURGE_YIELD`` times as
    long as it took: each batch holds the one writer lock, so back to back they would take most of
    it from ingest (at 5,000,000 rows ingest's p99 doubled and more; bench/HISTORY.md, "Retention at
    scale")."""
    removed = 0
    while until is None or time.monotonic() < until:
        oldest = select(table.c.id).where(table.c.received_at < cutoff).order_by(table.c.received_at).limit(batch)
        started = time.monotonic()
        deleted = run_in_transaction(engine, lambda conn: conn.execute(
            delete(table).where(table.c.id.in_(oldest.scalar_subquery()))).rowcount)
        removed += deleted
        if deleted < batch:
            break
        if engine.dialect.name == "sqlite":
            time.sleep(PURGE_YIELD * (time.monotonic() - started))
    return removed


def claim(engine: Engine, name: str, every: float, holder: str) -> bool:
    """Whether this process runs job ``name`` now: true for one caller per ``every`` seconds across
    every process on the database (the first caller ever included)."""
    now = utcnow()
    due = now + timedelta(seconds=every)

    def work(conn) -> bool:
        moved = conn.execute(update(_schedules).where(_schedules.c.name == name, _schedules.c.due_at <= now)
                             .values(due_at=due, holder=holder)).rowcount
        if moved:
            return True
        created = conn.execute(_INSERT[conn.dialect.name](_schedules).values(name=name, due_at=due, holder=holder)
                               .on_conflict_do_nothing(index_elements=["name"]).returning(_schedules.c.name))
        return created.first() is not None  # (psycopg's rowcount of an insert here is -1)

    return run_in_transaction(engine, work)


class RetentionSchedule:
    """The scheduled purge of one process: a daemon thread, started and stopped with its dispatchers."""

    def __init__(self, runtime, holder: str):
        self.runtime = runtime
        self.holder = holder
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="retention", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        """No new purge starts; one under way gets ``timeout`` seconds to finish its batch and say so."""
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout)

    def run_once(self) -> Optional[Purged]:
        """Purge if it is due here; what was deleted, or None if it was not this process's turn."""
        config = self.runtime.snapshot.config
        if not claim(self.runtime.engine, PURGE_SCHEDULE, config.purge_interval, self.holder):
            return None
        cutoff = utcnow() - timedelta(seconds=config.retention)
        removed = purge(self.runtime.engine, cutoff, until=time.monotonic() + config.purge_interval / 2)
        log.info("retention: purged %d raw and %d refused requests and %d day partitions of raw requests received"
                 " before %s", removed.raw, removed.refused, removed.partitions, cutoff.isoformat(),
                 extra={"purged": removed.raw, "purged_refused": removed.refused, "purged_partitions": removed.partitions})
        return removed

    def _run(self) -> None:
        try:  # the coming days' partitions at start-up, not only at the first purge
            partitions.ensure_ahead(self.runtime.engine)
        except Exception:
            log.exception("retention: could not create the coming days' partitions; the next purge tries again")
        while not self._stop.wait(min(CHECK_EVERY, self.runtime.snapshot.config.purge_interval)):
            try:
                self.run_once()
            except Exception:  # the database away, say: the next look tries again
                log.exception("retention: the scheduled purge failed; it is tried again at the next look")
