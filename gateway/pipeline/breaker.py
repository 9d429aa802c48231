"""A sink whose destination keeps failing is paused: its senders stop claiming, and one row goes
out now and then as a probe.

Without it every ordering key's first row is retried on its own backoff, so the first minutes of
an outage with a thousand open problems cost thousands of failing POSTs (270 a second at the
start of bench/outbox.py's outage), and the gateway's ingest, which shares the machine and on
SQLite the one writer, fell to half its rate.  Paused, a dispatcher sends one probe per pause;
the pause doubles from the sink's ``backoff_initial`` up to ``PROBE_MAX``, 5 s (or ``backoff_max``
if that is shorter) while probes fail.  The first delivery closes it, and the rows waiting out their
backoff are then due at once (``Breaker.recovered``, ``Dispatcher._reschedule_backlog``).

Rows the pause keeps from being tried still go dead at their ``max_age``, as they would have at
their next failed attempt: before each probe, the rows past it are ended, untried (``expire``), each
unblocking the next row of its problem.  Each dispatcher keeps its own breakers: with several,
each probes.
"""
from __future__ import annotations

import logging
import threading
import time
from datetime import timedelta
from typing import Optional

from sqlalchemy import Connection, Engine, select, update

from gateway import metrics
from gateway.pipeline import ordering
from gateway.pipeline.ordering import PENDING
from gateway.store.db import run_in_transaction
from gateway.store.models import DeliveryRow, utcnow

log = logging.getLogger("gateway.pipeline.outbox")
deliveries = DeliveryRow.__table__
OPEN_AFTER = 5
"""Failed attempts in a row (retryable, no delivery between) across a sink's senders that pause it."""
PROBE_MAX = 5.0
"""Seconds between probes at most: once the destination is back, its backlog waits no longer than this.
At 30 s, bench/outbox.py's first event came 7.2 and 15.3 s after the receiver was back (0.03-0.63 s
before the pause, when some problem's retry was always due); a send per 5 s per dispatcher costs the
destination nothing."""
EXPIRE_BATCH = 2000
"""Rows ended per transaction by ``expire``."""


class Breaker:
    """One sink's state in one dispatcher: closed (claims as usual), open (no claims until
    ``open_until``), or probing (one sender sends one row; its outcome closes or re-opens it)."""

    def __init__(self, sink_name: str):
        self.sink_name = sink_name
        self._lock = threading.Lock()
        self.failures = 0
        self.pause = 0.0
        self.open_until: Optional[float] = None
        """``time.monotonic()`` when the next probe may go; None while closed."""
        self.probing = False
        self.last_error: Optional[str] = None
        self.failed_since_delivery = False
        """Some attempt failed retryably since the sink last took a delivery: rows are backing off."""

    def claim_size(self, batch: int) -> int:
        """How many rows the asking sender may claim now: ``batch`` while closed; 1 to the one
        sender that gets the probe once the pause is over; 0 otherwise."""
        with self._lock:
            if self.open_until is None:
                return batch
            if self.probing or time.monotonic() < self.open_until:
                return 0
            self.probing = True
            return 1

    def wait(self) -> float:
        """Seconds until a probe may go (0 while closed)."""
        until = self.open_until
        return 0.0 if until is None else max(0.0, until - time.monotonic())

    def note(self, retryable: bool, error: Optional[str], options: dict) -> bool:
        """Count one attempt's outcome: ``retryable`` when the destination did not take it for a
        reason that may pass (a dead row whose time or attempts ran out counts so).  True when
        the sink is paused after it: the sender stops its batch there."""
        with self._lock:
            if not retryable:  # the destination answered: a delivery, or a refusal of that one row
                if self.open_until is not None:
                    log.info("sink %s takes deliveries again", self.sink_name, extra={"sink": self.sink_name})
                self.failures, self.pause, self.open_until, self.probing = 0, 0.0, None, False
                metrics.SINK_PAUSED.labels(self.sink_name).set(0)
                return False
            self.failures += 1
            self.last_error = error
            if not (self.probing or (self.open_until is None and self.failures >= OPEN_AFTER)):
                return self.open_until is not None  # paused meanwhile by another sender: stop this batch too
            ceiling = min(options["backoff_max"], PROBE_MAX)
            self.pause = min(ceiling, max(self.pause * 2, options["backoff_initial"]))
            self.open_until, self.probing = time.monotonic() + self.pause, False
        metrics.SINK_PAUSED.labels(self.sink_name).set(1)
        log.warning("sink %s paused: %d attempts in a row failed; one probe in %.1fs. Last error: %s",
                    self.sink_name, self.failures, self.pause, error, extra={"sink": self.sink_name})
        return True

    def recovered(self, outcome: str) -> bool:
        """Follow the recorded outcomes: True once, for the first delivery after retryable failures,
        when the rows waiting out their backoff should be due at once."""
        with self._lock:
            if outcome == "retry":
                self.failed_since_delivery = True
            elif outcome == "delivered" and self.failed_since_delivery:
                self.failed_since_delivery = False
                return True
            return False

    def forget(self) -> None:
        """The sink is gone from the config: its pause must not stay on ``/metrics``."""
        with self._lock:
            if self.open_until is not None:
                metrics.SINK_PAUSED.labels(self.sink_name).set(0)

    def probe_abandoned(self) -> None:
        """The probe found no row to send (or its sender stopped): the next sender may probe."""
        with self._lock:
            self.probing = False


def _expire_batch(conn: Connection, sink_name: str, max_age: float, last_error: Optional[str]) -> list:
    """End up to ``EXPIRE_BATCH`` pending rows of a paused sink that have waited ``max_age``
    (since queued or re-driven) and are held by no one; returns their (id, ordering_key)."""
    now = utcnow()
    unheld = deliveries.c.claimed_until.is_(None) | (deliveries.c.claimed_until < now)
    overdue = (select(DeliveryRow.id)
               .where(DeliveryRow.sink_name == sink_name, DeliveryRow.status == PENDING, unheld,
                      DeliveryRow.created_at <= now - timedelta(seconds=max_age),
                      DeliveryRow.requeued_at.is_(None) | (DeliveryRow.requeued_at <= now - timedelta(seconds=max_age)))
               .limit(EXPIRE_BATCH))
    error = (f"gave up after max_age ({max_age:g}s) while the sink was paused, its destination failing; "
             f"last error: {last_error}")
    # The outer statement repeats the row's conditions: one it waited for (a delivery being recorded
    # elsewhere) is checked again as it is now, while the subquery's answer is from before the wait.
    ended = conn.execute(update(deliveries).where(deliveries.c.id.in_(overdue.scalar_subquery()),
                                                  deliveries.c.status == PENDING, unheld)
                         .values(status="dead", finished_at=now, last_error=error, claimed_by=None, claimed_until=None)
                         .returning(deliveries.c.id, deliveries.c.ordering_key)).all()
    ordering.UNBLOCK_NEXT.run_many(conn, [{"sink": sink_name, "key": key}
                                          for key in {row.ordering_key for row in ended}])
    return ended


def expire(engine: Engine, sink, breaker: Breaker) -> int:
    """Before a probe: end every row of the paused ``sink`` past its ``max_age``, a batch per
    transaction; how many."""
    total = 0
    while True:
        ended = run_in_transaction(engine, lambda conn: _expire_batch(conn, sink.name, sink.options["max_age"],
                                                                      breaker.last_error))
        if ended:
            total += len(ended)
            metrics.DELIVERIES_EXPIRED.labels(sink.name).inc(len(ended))
            log.warning("%d deliveries to %s are dead: max_age (%gs) passed while the sink was paused (ids %s)",
                        len(ended), sink.name, sink.options["max_age"],
                        ", ".join(str(row.id) for row in ended[:20]) + (", ..." if len(ended) > 20 else ""),
                        extra={"sink": sink.name})
        if len(ended) < EXPIRE_BATCH:
            return total
