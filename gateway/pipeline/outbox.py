"""The delivery outbox dispatcher: external sinks never run on the request path.

Each outbox sink gets threads of its own (``SENDERS``), so a slow or failing destination never
delays another.  Rows are claimed with a short lease (``FOR UPDATE SKIP LOCKED`` on PostgreSQL;
one atomic UPDATE under SQLite's single writer), so any number of dispatchers in any
number of processes share one database without delivering a row twice at once.  A
dispatcher renews the claims it holds while it works and hands them back when it stops,
so only the rows of a dispatcher that died wait for their lease to run out, a few seconds.
Every delivery has a deadline, cut short when the claim can no longer be renewed: no row
is sent by a second dispatcher while the first may still be sending it.

Within a sink, a row waits while an earlier row with the same ordering key (the fingerprint
of the problem it is about, see ``problems``) is still pending: a recovery is never delivered
before the alert it follows (``ordering`` says how the claim keeps that cheap behind a backlog).
Retries go on for the sink's ``max_age``, so an outage shorter than that loses nothing.
"""
from __future__ import annotations

import logging
import os
import socket
import threading
import time
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any, Callable, Optional, TypeVar

from sqlalchemy import Connection, Interval, Update, bindparam, func, insert, select, update
from sqlalchemy.exc import DBAPIError

from gateway import metrics
from gateway.contracts import (
    Alert, InlineSinkType, Link, Resource, SinkType,
)
from gateway.deadline import DELIVERY_DEADLINE_SECONDS, DELIVERY_LEASE_SECONDS, Deadline
from gateway.pipeline import breaker, ordering, problems
from gateway.pipeline.attempts import Attempt, attempt
from gateway.pipeline.ordering import PENDING
from gateway.pipeline.runtime import Runtime
from gateway.store.db import HotStatement, reading, run_in_transaction
from gateway.store.lists import one_of
from gateway.store.models import AlertRow, DeliveryRow, DeliveryAttempt, utcnow

log = logging.getLogger(__name__)
T = TypeVar("T")
deliveries = DeliveryRow.__table__
RENEWALS_PER_LEASE = 4
WATCH_INTERVAL = 0.05
"""How often a batch's keeper looks whether the delivery in flight must be cut."""
RENEWAL_RETRY = 0.25
"""Seconds between tries to renew a claim while the database does not answer."""
SENDERS = 4
"""Threads per outbox sink in each dispatcher: deliveries to a destination overlap its answer times
(a batch's rows go out one by one; with one thread, a destination answering in 1 ms caps a sink at
under 1,000 a second whatever the cores)."""
RECORD_INTERVAL = 0.2
"""Outcomes of a batch wait at most this long (after the delivery that ends it) to be written together."""
IDLE_PAUSE = 0.05
"""Seconds a sender whose claim found nothing waits before it claims again, however often it is woken
meanwhile (a wake-up is not lost: it claims then).  Without it a sender claimed once per webhook
ingested, each claim a transaction (on SQLite, the one writer's) that finds nothing while the
destination is down; at most this much is added to a delivery's lag."""
BLOCK_INTERVAL = 1.0
"""Seconds between a dispatcher's passes marking a sink's waiting rows (``block_waiting``);
a pass runs only after a batch that came back short."""


def worker_name() -> str:
    return f"{socket.gethostname()}:{os.getpid()}:{threading.get_ident()}"


def alert_from_row(row) -> Alert:
    return Alert(
        status=row.status, severity=row.severity, title=row.title, description=row.description,
        resource=Resource(row.resource_id, row.resource_name, row.resource_type),
        occurred_at=row.occurred_at, labels=dict(row.labels or {}), external_id=row.external_id,
        annotations=dict(row.annotations or {}), links=[Link(**link) for link in row.links or ()],
        source_key=row.source_key, source_type=row.source_type, fingerprint=row.fingerprint,
        raw_request_id=row.raw_request_id, id=row.id, origin=row.origin,
    )


# Prebuilt (see HotStatement): they run for every delivery, where building a statement cost more than running it.
_RECORD_ATTEMPT = HotStatement(insert(DeliveryAttempt.__table__))
_OUTCOME = {delivered: HotStatement(update(deliveries).where(
    deliveries.c.id == bindparam("row_id"),
    deliveries.c.status == PENDING if delivered else deliveries.c.claimed_by == bindparam("holder")))
    for delivered in (True, False)}
"""The outcome of an attempt: a delivery whoever holds the row, anything else only by its holder."""


def _claim(on_postgresql: bool) -> Update:
    """The claim: up to ``limit`` due rows of ``sink`` longest due first, each only if it is its
    key's earliest pending row, leased to ``worker``.  Built once per dialect, not per claim:
    building it cost a tenth of a delivery's CPU.

    A lease ends by the database's clock on PostgreSQL (dispatchers on several machines compare
    leases of a few seconds; their clocks may disagree by more).  Only leases use it: when a row is
    due (``next_attempt_at``) is written and read by the core's clock (``utcnow``: ``due``), which
    tests move forward to make refreshes due.

    It compares with ``<=`` (the same rows: the MIN is never above the row's own id):
    estimated as selective as ``=`` is, the planner sorted every pending row of the sink once
    ANALYZE had run (19 ms at 2,000 pending rows, against 0.4 ms walking the index in order).
    """
    due = bindparam("due")
    if on_postgresql:
        now, until = func.now(), func.now() + bindparam("lease", type_=Interval())
    else:
        now, until = due, bindparam("until")
    candidates = (
        ordering.due_rows(
            bindparam("sink"), due,
            DeliveryRow.claimed_until.is_(None) | (DeliveryRow.claimed_until < now)
            | (DeliveryRow.claimed_by == bindparam("worker")),
            DeliveryRow.id <= ordering.first_pending_of_key(bindparam("sink")),
        )
        .limit(bindparam("limit"))
        .with_for_update(skip_locked=True)
    )
    return (
        update(deliveries)
        .where(deliveries.c.id.in_(candidates.scalar_subquery()))
        .values(claimed_by=bindparam("worker"), claimed_until=until, attempts=deliveries.c.attempts + 1)
        .returning(deliveries.c.id, deliveries.c.alert_id, deliveries.c.attempts, deliveries.c.created_at,
                   deliveries.c.requeued_at, deliveries.c.ordering_key)
    )


_CLAIM = {on_postgresql: _claim(on_postgresql) for on_postgresql in (True, False)}
_BATCH_ALERTS = select(AlertRow.__table__).where(one_of(AlertRow.id, "ids"))
_HELD = (one_of(deliveries.c.id, "ids"), deliveries.c.claimed_by == bindparam("worker"))
"""A worker's claimed rows among a list of ids."""
_RELEASE = update(deliveries).where(*_HELD).values(claimed_by=None, claimed_until=None, attempts=deliveries.c.attempts - 1)
"""Hand rows a worker claimed but never sent back, their attempt uncounted."""


@dataclass
class Holding:
    """What one dispatcher thread holds: its claimed rows and the delivery in flight."""

    worker: str
    ids: set[int]
    valid_until: float
    """When the claim on the row in flight runs out unless renewed (``time.monotonic()``, counted
    from before the last statement that renewed it was sent)."""
    renew_at: float
    deadline: Optional[Deadline] = None
    lock: threading.Lock = field(default_factory=threading.Lock)


class Dispatcher:
    def __init__(self, runtime: Runtime, *, lease: float = DELIVERY_LEASE_SECONDS,
                 deadline: float = DELIVERY_DEADLINE_SECONDS, batch: int = 20, poll: float = 1.0,
                 senders: int = SENDERS, give_way: float = 0.0):
        """``give_way``: seconds each send waits at most for this process's requests to finish (``giveway``)."""
        self.runtime = runtime
        self.senders = senders
        self.give_way = give_way
        self.lease = lease
        self.deadline = deadline
        self.batch = batch
        self.poll = poll
        self.stopping = threading.Event()
        self._stop_at = float("inf")
        self._blocked_at: dict[str, float] = {}
        self._blocking = threading.Lock()
        self._breakers: dict[str, breaker.Breaker] = {}
        self._threads: dict[tuple[str, int], threading.Thread] = {}
        self._supervisor: Optional[threading.Thread] = None

    # -- claiming and finishing rows -------------------------------------------------
    def _lease_end(self) -> Any:
        """The end of a lease from now, by the database's clock on PostgreSQL (see ``_claim``)."""
        if self.runtime.engine.dialect.name == "postgresql":
            return func.now() + timedelta(seconds=self.lease)
        return utcnow() + timedelta(seconds=self.lease)

    def claim(self, sink_name: str, worker: str, limit: Optional[int] = None) -> list:
        """Lease up to ``batch`` due rows of one sink to ``worker`` and count an attempt on each
        (a row handed back unsent gets it back, ``_release``); the rows, by id.

        One write transaction, not a claim and then a start: on SQLite each is a synced commit
        under the one writer lock, which ingest waits on.  A dispatcher that dies before sending
        leaves the attempt counted: nobody can tell whether the row went out.  So does a claim
        whose answer a lost connection swallowed: its retry takes the same rows and counts again.

        Rows ``worker`` already holds are claimed again: a dispatcher whose batch was cut off
        by a lost database connection takes it up again when the database is back.
        """
        stmt, params = self.claim_statement(sink_name, worker, limit)
        rows = run_in_transaction(self.runtime.engine, lambda conn: conn.execute(stmt, params).all())
        return sorted(rows, key=lambda r: r.id)

    def claim_statement(self, sink_name: str, worker: str, limit: Optional[int] = None) -> tuple[Update, dict]:
        """The claim's UPDATE ... RETURNING (``_CLAIM``) and its parameters, as ``claim`` runs them."""
        now = utcnow()
        params = dict(sink=sink_name, worker=worker, due=now, limit=limit or self.batch)
        if self.runtime.engine.dialect.name == "postgresql":
            return _CLAIM[True], dict(params, lease=timedelta(seconds=self.lease))
        return _CLAIM[False], dict(params, until=now + timedelta(seconds=self.lease))

    def _renew(self, holding: Holding) -> None:
        """Extend the claim on every row ``holding`` still has; rows lost meanwhile are dropped from it."""
        with holding.lock:
            ids = list(holding.ids)
        if not ids:
            return
        sent = time.monotonic()
        until = self._lease_end()
        stmt = (update(deliveries).where(*_HELD, deliveries.c.status == PENDING)
                .values(claimed_until=until).returning(deliveries.c.id))
        kept = {row.id for row in run_in_transaction(
            self.runtime.engine, lambda conn: conn.execute(stmt, {"ids": ids, "worker": holding.worker}).all(),
            attempts=1)}
        with holding.lock:
            holding.ids &= kept | (holding.ids - set(ids))
        holding.valid_until = max(holding.valid_until, sent + self.lease)

    def _keep(self, holding: Holding, done: threading.Event) -> None:
        """While a batch is worked through: renew its claim, and cut the delivery in flight when
        its deadline passes, when the claim is about to run out unrenewed, or when stopping."""
        margin = self.lease / RENEWALS_PER_LEASE
        while not done.wait(WATCH_INTERVAL):
            now = time.monotonic()
            deadline = holding.deadline
            if deadline is not None and now >= min(deadline.at, holding.valid_until - margin, self._stop_at):
                deadline.expire()
            if now >= holding.renew_at:
                try:
                    self._renew(holding)
                    holding.renew_at = now + margin
                except DBAPIError as exc:  # the database is away: the claim runs on until valid_until
                    log.warning("could not renew the claim of %s on %d rows: %s", holding.worker,
                                len(holding.ids), exc.__class__.__name__)
                    holding.renew_at = now + RENEWAL_RETRY

    def _release(self, row_ids: list[int], worker: str) -> None:
        """Hand back claimed rows that were never sent, so a stopping worker does not hold them a lease long."""
        self._persist(lambda conn: conn.execute(_RELEASE, {"ids": row_ids, "worker": worker}))

    def _persist(self, work: Callable[[Connection], T]) -> T:
        """Run a write that must not be lost (an outcome, a release) until the database takes it:
        an outcome lost in a database blip would send the row again.  A stopping dispatcher
        gives up at its stop deadline; then the claim runs out instead."""
        delay = 0.1
        while True:
            try:
                return run_in_transaction(self.runtime.engine, work)
            except DBAPIError as exc:
                if time.monotonic() >= self._stop_at:
                    raise
                log.warning("outbox write failed (%s); retrying in %.1fs", exc.__class__.__name__, delay)
                time.sleep(delay)
                delay = min(delay * 2, 2.0)

    def _finish(self, conn: Connection, done: list[Attempt], worker: str) -> None:
        """Write the attempts' log entries and their rows' outcomes, each kind of statement once for
        all of them (``run_many``: on PostgreSQL one round trip, where a statement per row cost two
        per delivery)."""
        _RECORD_ATTEMPT.run_many(conn, [dict(
            delivery_id=a.row.id, started_at=a.started, duration_ms=int(a.seconds * 1000), outcome=a.outcome,
            status_code=a.status_code, error=a.error, worker=worker) for a in done])
        # A delivery is recorded even if the claim ran out meanwhile: whoever took the row over
        # then finds it delivered and does not send it again.  Other outcomes only by the holder.
        by_outcome: dict[str, list[dict]] = {}  # one outcome's rows change the same columns (next_step)
        for a in done:
            by_outcome.setdefault(a.outcome, []).append(dict(
                row_id=a.row.id, holder=worker, claimed_by=None, claimed_until=None, last_error=a.error, **a.values))
        updated = sum(_OUTCOME[outcome == "delivered"].run_many(conn, rows) for outcome, rows in by_outcome.items())
        if updated != len(done):
            log.warning("%d of %d outcomes not recorded: the claim was lost first (the batch: deliveries %s)",
                        len(done) - updated, len(done), ", ".join(str(a.row.id) for a in done))

    def _alerts(self, rows) -> dict[int, Alert]:
        """The alerts of a claimed batch, read in one query."""
        with reading(self.runtime.engine) as conn:
            found = conn.execute(_BATCH_ALERTS, {"ids": sorted({r.alert_id for r in rows})}).all()
        return {row.id: alert_from_row(row) for row in found}

    def _attempt(self, sink: SinkType, row, alert: Alert, holding: Holding,
                 period: Optional[problems.Period]) -> Attempt:
        """One attempt of a claimed row, cut at its deadline, or sooner by ``_keep``."""
        deadline = Deadline(self.deadline)
        holding.deadline = deadline
        try:
            return attempt(sink, row, alert, deadline, period)
        finally:
            holding.deadline = None

    def _record(self, sink: SinkType, attempts: list[Attempt], worker: str, holding: Holding) -> None:
        """Write the outcomes of ``attempts`` in one transaction (one commit, not one per delivery:
        on SQLite each is a sync of the WAL), then count and log them."""

        def record(conn: Connection) -> None:
            # A batch holds one row per ordering key: each key's outcome is written before its next
            # row is unblocked, and that before its refresh is queued.
            self._finish(conn, attempts, worker)
            ordering.UNBLOCK_NEXT.run_many(conn, [{"sink": sink.name, "key": a.row.ordering_key}
                                                  for a in attempts if a.outcome != "retry"])
            problems.follow_up(conn, sink, [(a.delivery, a.now) for a in attempts  # refreshes, with the outcomes
                                            if a.period is not None and a.outcome == "delivered"])

        self._persist(record)
        with holding.lock:
            holding.ids -= {a.row.id for a in attempts}
        for a in attempts:
            if a.outcome == "dead":
                log.warning("delivery %s to %s is dead: %s", a.row.id, sink.name, a.error,
                            extra={"delivery_id": a.row.id, "sink": sink.name})
            metrics.DELIVERY_ATTEMPTS.labels(sink.name, a.outcome).inc()
            if a.period is not None and a.period.refresh:
                metrics.REFRESH_ATTEMPTS.labels(sink.name, a.outcome).inc()
            if self.breaker(sink.name).recovered(a.outcome):
                self._reschedule_backlog(sink.name)

    def block_waiting(self, sink_name: str) -> int:
        """Mark the sink's due rows that wait behind an earlier row of their key, so later claims
        pass them by (``ordering``), a batch per transaction; how many were marked."""
        total = 0
        while True:
            blocked = run_in_transaction(self.runtime.engine,
                                         lambda conn: ordering.block_followers(conn, sink_name, utcnow()))
            total += blocked
            if blocked < ordering.BLOCK_BATCH or self.stopping.is_set():
                return total

    def _block_now_and_then(self, sink_name: str) -> None:
        """``block_waiting``, at most every ``BLOCK_INTERVAL`` per sink in this dispatcher, by one
        of its threads at a time (two passes would contend for the same rows)."""
        now = time.monotonic()
        with self._blocking:
            if now - self._blocked_at.get(sink_name, float("-inf")) < BLOCK_INTERVAL:
                return
            self._blocked_at[sink_name] = float("inf")  # until this pass is done
        try:
            self.block_waiting(sink_name)
        finally:
            self._blocked_at[sink_name] = time.monotonic()

    def _reschedule_backlog(self, sink_name: str) -> None:
        """A sink that was failing took a delivery again: the rows waiting out their backoff are
        due at once, so a destination back from an outage gets its backlog now, in order, not up
        to ``backoff_max`` later."""
        now = utcnow()
        stmt = (update(deliveries)  # tried before: a row never tried is scheduled (a refresh), not backing off
                .where(deliveries.c.sink_name == sink_name, deliveries.c.status == PENDING,
                       deliveries.c.attempts > 0, deliveries.c.next_attempt_at > now)
                .values(next_attempt_at=now))
        if run_in_transaction(self.runtime.engine, lambda conn: conn.execute(stmt).rowcount):
            self.runtime.wakeups.wake_dispatchers()

    def run_once(self, sink_name: str, worker: Optional[str] = None) -> int:
        """Claim and deliver one batch for one sink; returns how many rows were tried.

        A batch holds at most one row per ordering key (the claim takes only each key's earliest
        pending row), so its rows are sent one after another and their outcomes written together:
        at the end of the batch, or as soon as ``RECORD_INTERVAL`` has passed since the last write,
        so a slow destination's outcomes are not held back.

        A paused sink (``breaker``) is not claimed from, but for one row now and then: a probe."""
        sink = self.runtime.snapshot.sinks.get(sink_name)
        if sink is None or isinstance(sink, InlineSinkType):
            return 0
        sink_breaker = self.breaker(sink_name)
        size = sink_breaker.claim_size(self.batch)
        if not size:
            return 0
        try:
            return self._run_batch(sink, worker or worker_name(), size, sink_breaker)
        finally:
            if sink_breaker.probing:  # no row went out as the probe: let the next sender try
                sink_breaker.probe_abandoned()

    def breaker(self, sink_name: str) -> breaker.Breaker:
        """The sink's breaker in this dispatcher (made on first use; a sink renamed gets a new one)."""
        return self._breakers.get(sink_name) or self._breakers.setdefault(sink_name, breaker.Breaker(sink_name))

    def _run_batch(self, sink: SinkType, worker: str, size: int, sink_breaker: breaker.Breaker) -> int:
        if sink_breaker.probing:
            breaker.expire(self.runtime.engine, sink, sink_breaker)
        sent = time.monotonic()
        rows = self.claim(sink.name, worker, size)
        if not rows:
            return 0
        holding = Holding(worker, {r.id for r in rows}, sent + self.lease, sent + self.lease / RENEWALS_PER_LEASE)
        done = threading.Event()
        keeper = threading.Thread(target=self._keep, args=(holding, done), daemon=True, name=f"keep-{sink.name}")
        keeper.start()
        try:
            alerts = self._alerts(rows)
            periods = problems.periods(self.runtime.engine, [r.id for r in rows]) if sink.tracks_problems else {}
            unrecorded: list[Attempt] = []
            recorded_at, tried, paused = time.monotonic(), 0, False
            for row in rows:
                if self.stopping.is_set() or paused:
                    break
                if self.give_way:
                    self.runtime.requests.wait_idle(self.give_way)
                done_now = self._attempt(sink, row, alerts[row.alert_id], holding, periods.get(row.id))
                unrecorded.append(done_now)
                tried += 1
                paused = sink_breaker.note(done_now.retryable, done_now.error, sink.options)
                if time.monotonic() - recorded_at >= RECORD_INTERVAL or tried == len(rows):
                    self._record(sink, unrecorded, worker, holding)
                    unrecorded, recorded_at = [], time.monotonic()
            if unrecorded:  # stopping or paused: what was sent is recorded before the rest is handed back
                self._record(sink, unrecorded, worker, holding)
            if tried < len(rows):
                self._release([r.id for r in rows[tried:]], worker)
        finally:
            done.set()
            keeper.join()
        return len(rows)

    # -- threads -----------------------------------------------------------------
    def _sink_loop(self, sink_name: str, slot: int) -> None:
        worker = worker_name()
        while not self.stopping.is_set() and sink_name in self.runtime.snapshot.sinks:
            seen = self.runtime.wakeups.generation
            try:
                tried = self.run_once(sink_name, worker)
                if tried < self.batch:  # a short claim may have passed by rows that wait
                    self._block_now_and_then(sink_name)
            except Exception:
                log.exception("dispatcher for sink %s failed; retrying after a pause", sink_name)
                tried = 0
            if not tried and (paused_for := self.breaker(sink_name).wait()):
                self.stopping.wait(min(paused_for, self.poll))  # until the probe is due, whatever is queued
            elif not tried:
                # Every commit that queues a row wakes the senders; behind a destination that is down,
                # or rows blocked behind their problem, most wake-ups find nothing to claim.
                self.stopping.wait(min(IDLE_PAUSE, self.poll))
                self.runtime.wakeups.wait_for_deliveries(self.poll, seen)
        self._threads.pop((sink_name, slot), None)

    def start(self) -> None:
        """Keep ``senders`` daemon threads per configured outbox sink (new sinks appear after a reload),
        each claiming batches of its own: while one waits for the destination's answer, another sends."""

        def supervise() -> None:
            while not self.stopping.is_set():
                outbox_sinks = [name for name, sink in self.runtime.snapshot.sinks.items()
                                if not isinstance(sink, InlineSinkType)]
                for gone in [name for name in list(self._breakers) if name not in outbox_sinks]:
                    self._breakers.pop(gone).forget()  # removed by a reload: a sink of that name later starts afresh
                for name, slot in ((name, slot) for name in outbox_sinks for slot in range(self.senders)
                                   if (name, slot) not in self._threads):
                    thread = threading.Thread(target=self._sink_loop, args=(name, slot), daemon=True,
                                              name=f"dispatch-{name}-{slot}")
                    self._threads[name, slot] = thread
                    thread.start()
                self.stopping.wait(min(self.poll, 1.0))  # a sink added by a reload starts within 1 s

        self._supervisor = threading.Thread(target=supervise, daemon=True, name="dispatch-supervisor")
        self._supervisor.start()

    def stop(self, timeout: float = 10.0) -> None:
        """Stop claiming, hand back the rows not sent, and let deliveries in flight finish:
        those still running ``timeout`` from now, less a moment to record their outcome, are cut."""
        self._stop_at = time.monotonic() + timeout
        self.stopping.set()
        self.runtime.wakeups.wake_dispatchers()
        if self._supervisor is not None:
            self._supervisor.join(timeout)
        for thread in list(self._threads.values()):
            thread.join(max(0.0, self._stop_at - time.monotonic()))
