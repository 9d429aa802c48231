"""The delivery outbox dispatcher: external sinks never run on the request path.

Each outbox sink gets its own thread, so a slow or failing destination never delays
another.  Rows are claimed with a lease (``FOR UPDATE SKIP LOCKED`` on PostgreSQL; one
atomic UPDATE under SQLite's single writer), so any number of dispatchers in any number
of processes share one database without delivering a row twice at once, and rows held
by a crashed worker are taken up again when their lease runs out.  Within a sink, a row
waits while an earlier row with the same ordering key (the alert's fingerprint) is
still pending: a recovery is never delivered before the alert it follows.
"""
from __future__ import annotations

import logging
import os
import random
import socket
import threading
import time
from datetime import datetime, timedelta
from typing import Optional

from sqlalchemy import Connection, and_, exists, insert, select, update
from sqlalchemy.orm import aliased

from gateway import metrics
from gateway.contracts import (
    DELIVERY_LEASE_SECONDS, Alert, Delivery as DeliveryTask, InlineSinkType, PermanentError, Resource, RetryableError,
    SinkType,
)
from gateway.pipeline import problems
from gateway.pipeline.runtime import Runtime
from gateway.store.db import run_in_transaction
from gateway.store.models import AlertRow, Delivery, DeliveryAttempt, utcnow

log = logging.getLogger(__name__)
deliveries = Delivery.__table__
MAX_RETRY_AFTER = 3600.0


def worker_name() -> str:
    return f"{socket.gethostname()}:{os.getpid()}:{threading.get_ident()}"


def backoff_delay(attempt: int, initial: float, maximum: float) -> float:
    """Exponential backoff with jitter: half the delay is fixed, half random, so retries spread out."""
    delay = min(maximum, initial * 2 ** max(0, attempt - 1))
    return delay / 2 + random.uniform(0, delay / 2)


def alert_from_row(row) -> Alert:
    return Alert(
        status=row.status, severity=row.severity, title=row.title, description=row.description,
        resource=Resource(row.resource_id, row.resource_name, row.resource_type),
        occurred_at=row.occurred_at, labels=dict(row.labels or {}), external_id=row.external_id,
        source_key=row.source_key, source_type=row.source_type, fingerprint=row.fingerprint,
        raw_request_id=row.raw_request_id, id=row.id, origin=row.origin,
    )


class Dispatcher:
    def __init__(
        self, runtime: Runtime, *, lease: float = DELIVERY_LEASE_SECONDS, batch: int = 20, poll: float = 1.0
    ):
        self.runtime = runtime
        self.lease = lease
        self.batch = batch
        self.poll = poll
        self.stopping = threading.Event()
        self._threads: dict[str, threading.Thread] = {}
        self._supervisor: Optional[threading.Thread] = None

    # -- claiming and finishing rows -------------------------------------------------
    def claim(self, sink_name: str, worker: str) -> list:
        """Lease up to ``batch`` due rows of one sink to ``worker``; each attempt is counted when it starts."""
        now = utcnow()
        earlier = aliased(Delivery)
        candidates = (
            select(Delivery.id)
            .where(
                Delivery.sink_name == sink_name,
                Delivery.status == "pending",
                Delivery.next_attempt_at <= now,
                (Delivery.claimed_until.is_(None)) | (Delivery.claimed_until < now),
                ~exists().where(and_(
                    earlier.sink_name == Delivery.sink_name,
                    earlier.ordering_key == Delivery.ordering_key,
                    earlier.status == "pending",
                    earlier.id < Delivery.id,
                )),
            )
            .order_by(Delivery.id)
            .limit(self.batch)
            .with_for_update(skip_locked=True)
        )
        stmt = (
            update(deliveries)
            .where(deliveries.c.id.in_(candidates.scalar_subquery()))
            .values(claimed_by=worker, claimed_until=now + timedelta(seconds=self.lease))
            .returning(deliveries.c.id, deliveries.c.alert_id)
        )
        rows = run_in_transaction(self.runtime.engine, lambda conn: conn.execute(stmt).all())
        return sorted(rows, key=lambda r: r.id)

    def _start(self, row_id: int, worker: str):
        """Begin an attempt on a row ``worker`` still holds: renew its lease and count the attempt.

        The lease of a row late in a slow batch may run out before its turn, and another
        worker may take it over; then this returns None and only the other worker sends it.
        """
        stmt = (
            update(deliveries)
            .where(deliveries.c.id == row_id, deliveries.c.claimed_by == worker, deliveries.c.status == "pending")
            .values(claimed_until=utcnow() + timedelta(seconds=self.lease), attempts=deliveries.c.attempts + 1)
            .returning(deliveries.c.id, deliveries.c.alert_id, deliveries.c.attempts)
        )
        return run_in_transaction(self.runtime.engine, lambda conn: conn.execute(stmt).first())

    def _release(self, row_ids: list[int], worker: str) -> None:
        """Hand back claimed rows that were never started, so a stopping worker does not hold them a lease long."""
        stmt = (update(deliveries).where(deliveries.c.id.in_(row_ids), deliveries.c.claimed_by == worker)
                .values(claimed_by=None, claimed_until=None))
        run_in_transaction(self.runtime.engine, lambda conn: conn.execute(stmt))

    def _finish(self, conn: Connection, row, worker: str, started: datetime, seconds: float,
                outcome: str, values: dict, error: Optional[str] = None, status_code: Optional[int] = None) -> None:
        conn.execute(insert(DeliveryAttempt.__table__).values(
            delivery_id=row.id, started_at=started, duration_ms=int(seconds * 1000), outcome=outcome,
            status_code=status_code, error=error, worker=worker,
        ))
        done = conn.execute(
            update(deliveries)
            .where(deliveries.c.id == row.id, deliveries.c.claimed_by == worker)
            .values(claimed_by=None, claimed_until=None, last_error=error, **values)
        )
        if done.rowcount != 1:
            log.warning("delivery %s: lease lost before the outcome was recorded", row.id)

    def _alerts(self, rows) -> dict[int, Alert]:
        """The alerts of a claimed batch, read in one query."""
        with self.runtime.engine.connect() as conn:
            found = conn.execute(select(AlertRow.__table__).where(AlertRow.id.in_({r.alert_id for r in rows}))).all()
        return {row.id: alert_from_row(row) for row in found}

    def deliver_one(self, sink: SinkType, row, alert: Alert, worker: str,
                    period: Optional[problems.Period] = None) -> str:
        """``period``: the row's problem period, for a sink that tracks problems."""
        started = utcnow()
        clock = time.perf_counter()
        error: Optional[str] = None
        status_code: Optional[int] = None
        retry_after: Optional[float] = None
        try:
            sink.deliver(DeliveryTask(row.id, row.attempts, sink.name, alert, *(period or (None, False))))
            outcome = "delivered"
        except PermanentError as exc:
            outcome, error, status_code = "dead", _describe(exc), exc.status_code
        except RetryableError as exc:
            outcome, error, status_code, retry_after = "retry", _describe(exc), exc.status_code, exc.retry_after
        except Exception as exc:  # a plugin bug must not kill the dispatcher; retry like a transient error
            log.exception("sink %s raised unexpectedly on delivery %s", sink.name, row.id)
            outcome, error = "retry", f"{exc.__class__.__name__}: {exc}"
        seconds = time.perf_counter() - clock
        now = utcnow()

        options = sink.options  # loaded through SinkOptions, so the retry settings are always there
        if outcome == "retry" and row.attempts >= options["max_attempts"]:
            outcome, error = "dead", f"gave up after {row.attempts} attempts; last error: {error}"
        if outcome in ("delivered", "dead"):
            values = {"status": outcome, "finished_at": now}
        else:
            delay = (min(retry_after, MAX_RETRY_AFTER) if retry_after is not None else backoff_delay(
                row.attempts, options["backoff_initial"], options["backoff_max"]))
            values = {"next_attempt_at": now + timedelta(seconds=delay)}

        def record(conn: Connection) -> None:
            self._finish(conn, row, worker, started, seconds, outcome, values, error, status_code)
            if period is not None and outcome == "delivered":  # a refresh is queued with the outcome
                problems.follow_up(conn, sink, row.id, alert, period, now)

        run_in_transaction(self.runtime.engine, record)
        metrics.DELIVERY_ATTEMPTS.labels(sink.name, outcome).inc()
        if period is not None and period.refresh:
            metrics.REFRESH_ATTEMPTS.labels(sink.name, outcome).inc()
        return outcome

    def run_once(self, sink_name: str, worker: Optional[str] = None) -> int:
        """Claim and deliver one batch for one sink; returns how many rows were tried."""
        sink = self.runtime.snapshot.sinks.get(sink_name)
        if sink is None or isinstance(sink, InlineSinkType):
            return 0
        worker = worker or worker_name()
        rows = self.claim(sink_name, worker)
        alerts = self._alerts(rows) if rows else {}
        periods = problems.periods(self.runtime.engine, [r.id for r in rows]) if rows and sink.tracks_problems else {}
        for index, row in enumerate(rows):
            if self.stopping.is_set():
                self._release([r.id for r in rows[index:]], worker)
                break
            started = self._start(row.id, worker)
            if started is not None:
                self.deliver_one(sink, started, alerts[started.alert_id], worker, periods.get(started.id))
        return len(rows)

    # -- threads -----------------------------------------------------------------
    def _sink_loop(self, sink_name: str) -> None:
        worker = worker_name()
        while not self.stopping.is_set() and sink_name in self.runtime.snapshot.sinks:
            seen = self.runtime.wakeups.generation
            try:
                tried = self.run_once(sink_name, worker)
            except Exception:
                log.exception("dispatcher for sink %s failed; retrying after a pause", sink_name)
                tried = 0
            if not tried:
                self.runtime.wakeups.wait_for_deliveries(self.poll, seen)
        self._threads.pop(sink_name, None)

    def start(self) -> None:
        """Keep one daemon thread per configured outbox sink (new sinks appear after a reload)."""

        def supervise() -> None:
            while not self.stopping.is_set():
                for name, sink in self.runtime.snapshot.sinks.items():
                    if not isinstance(sink, InlineSinkType) and name not in self._threads:
                        thread = threading.Thread(target=self._sink_loop, args=(name,), daemon=True,
                                                  name=f"dispatch-{name}")
                        self._threads[name] = thread
                        thread.start()
                self.stopping.wait(min(self.poll, 1.0))  # a sink added by a reload starts within 1 s

        self._supervisor = threading.Thread(target=supervise, daemon=True, name="dispatch-supervisor")
        self._supervisor.start()

    def stop(self, timeout: float = 30.0) -> None:
        """Stop claiming and wait up to ``timeout`` for deliveries in flight, so none is cut off half-way."""
        self.stopping.set()
        self.runtime.wakeups.wake_dispatchers()
        deadline = time.monotonic() + timeout
        if self._supervisor is not None:
            self._supervisor.join(timeout)
        for thread in list(self._threads.values()):
            thread.join(max(0.0, deadline - time.monotonic()))


def _describe(exc: Exception) -> str:
    text = str(exc)
    response = getattr(exc, "response", None)
    return f"{text} | response: {response}" if response and response not in text else text
