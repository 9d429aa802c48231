"""The core's ``Transaction``: what one accepted request writes, and how a plugin hands the pipeline an alert.

``ingest`` walks a webhook to the point where its alerts are checked and routed; from there the writes
are here: inline sinks, the raw journal, the alert rows and their outbox rows, in one transaction that is
retried whole when it loses a race.  ``Transaction.submit`` (a manual resolve, say) takes the same path
without a webhook.  The statements are ``HotStatement``s: compiled once, they are every webhook's cost.
"""
from __future__ import annotations

import logging
from datetime import timedelta
from typing import Any, Callable, Mapping, Optional, TypeVar

from sqlalchemy import Connection, bindparam, insert, select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.exc import SQLAlchemyError

from gateway import metrics
from gateway.contracts import ALERT_STATUSES, SEVERITIES, Alert, InlineSinkType, Link, SinkType, Transaction
from gateway.pipeline import problems
from gateway.pipeline.runtime import Runtime, Snapshot
from gateway.store import partitions
from gateway.store.db import HotStatement, RetryTransaction, commit_together
from gateway.store.lists import one_of
from gateway.store.models import AlertRow, DeliveryRow, RawRequest, utcnow

log = logging.getLogger(__name__)
T = TypeVar("T")


def alert_faults(alert: Alert) -> dict[str, str]:
    """The fields that make an alert unfit to store, each with what is wrong with it."""
    faults = {}
    if alert.status not in ALERT_STATUSES:
        faults["status"] = f"must be one of {', '.join(ALERT_STATUSES)}, got {alert.status!r}"
    if alert.severity not in SEVERITIES:
        faults["severity"] = f"must be one of {', '.join(SEVERITIES)}, got {alert.severity!r}"
    if not isinstance(alert.title, str) or not alert.title:
        faults["title"] = "missing"
    if not isinstance(alert.annotations, Mapping):
        faults["annotations"] = "must be a mapping of names to strings"
    if not isinstance(alert.links, (list, tuple)):
        faults["links"] = "must be a list of Link"
    else:
        for position, link in enumerate(alert.links):
            if not (isinstance(link, Link) and Link.allowed(link.url)):
                faults[f"links[{position}]"] = "must be a Link whose url is an absolute http(s) URL"
    return faults


def route_alert(snapshot: Snapshot, alert: Alert, source_reopen_window: Optional[float]):
    """(alert, inline sinks with their settings, outbox rows to queue as (sink, error)) for one alert.

    A sink whose ``accepts`` raises is a bug in that sink, not in the request: the alert is
    still stored and the other sinks still get it; the failing outbox sink gets a dead row
    carrying the error (re-drivable through the API), and the error is logged and counted.
    """
    decision = snapshot.router.decide_alert(alert)
    settings = {"reopen_window": decision.reopen_window if decision.reopen_window is not None
                else source_reopen_window}
    inline, outbox = [], []
    for name in decision.sinks:
        sink = snapshot.sinks[name]
        try:
            wanted = sink.accepts(alert)
        except Exception as exc:
            log.exception("sink %s raised in accepts on an alert from %s; the alert is stored without it",
                          name, alert.source_key)
            metrics.SINK_ERRORS.labels(name, "accepts").inc()
            if not isinstance(sink, InlineSinkType):
                outbox.append((sink, f"accepts raised {exc.__class__.__name__}: {exc}"))
            continue
        if wanted:
            if isinstance(sink, InlineSinkType):
                inline.append((sink, settings))
            else:
                outbox.append((sink, None))
    return alert, inline, outbox


DUPLICATE_WINDOW = timedelta(days=1)
"""How far back a delivery id (a request's ``external_id``) makes a request a duplicate: twelve
times the longest a sender retries (OCI Notifications, 2 h; PagerDuty's webhooks, ~20 min).  An
alert's own external id dedupes it for ever (a unique index on alerts); a request's is a look
at the raw journal, which on PostgreSQL is one partition a day, so it looks at the window's days
only: over a year's 373 partitions, the unbounded look cost 6-9 ms of PostgreSQL per webhook."""


def _journal_insert(binds: Mapping[str, str]):
    """Store the raw request unless its (source, external id) was accepted in the ``DUPLICATE_WINDOW``
    before it: the columns' values from the bind parameters ``binds`` names.  A check, not ``ON
    CONFLICT``: no unique index spans PostgreSQL's partitions (``partitions.lock_delivery_id``)."""
    raw = RawRequest.__table__
    columns = [c for c in raw.c if c.name in binds]
    value = {c.name: bindparam(binds[c.name], type_=c.type) for c in columns}
    since = bindparam(binds["duplicate_since"], type_=raw.c.received_at.type)
    seen = select(raw.c.id).where(raw.c.source_key == value["source_key"], raw.c.external_id == value["external_id"],
                                  raw.c.received_at >= since)
    return (insert(raw).from_select([c.name for c in columns], select(*value.values()).where(~seen.exists()))
            .returning(raw.c.id))


def _journal_binds(prefix: str) -> dict[str, str]:
    """Raw request column (and ``duplicate_since``) -> its bind name in a statement of ``_journal_insert``."""
    return {name: prefix + name for name in [c.name for c in RawRequest.__table__.c if c.name != "id"] + ["duplicate_since"]}


def _with_window(raw: dict) -> dict:
    """The raw row's values and the start of its ``DUPLICATE_WINDOW`` (unless the row names its own)."""
    return {"duplicate_since": raw["received_at"] - DUPLICATE_WINDOW, **raw}


_RAW_INSERT = HotStatement(_journal_insert(_journal_binds("")))


def insert_raw(conn: Connection, raw: dict) -> Optional[int]:
    """Store the raw request; its id, or None when its (source, external id) came within the window."""
    return _RAW_INSERT.scalar(conn, _with_window(raw))
_ALERT_INSERT = {
    name: HotStatement(dialect.insert(AlertRow.__table__)
                       .on_conflict_do_nothing(index_elements=["source_key", "external_id"])
                       .returning(AlertRow.id))
    for name, dialect in (("postgresql", postgresql), ("sqlite", sqlite))
}
"""Per dialect: store an alert unless its (source, external id) is stored already."""
_DELIVERY_INSERT = HotStatement(insert(DeliveryRow.__table__))


_RAW_BINDS = _journal_binds("raw_")
"""Raw request column -> its bind name in ``_RAW_WITH_FIRST_ALERT`` (alerts share column names)."""


def _raw_with_first_alert():
    """PostgreSQL: the raw request and the request's first alert in one statement.

    Data-modifying CTEs store the raw request unless it is a duplicate, and the alert only
    if the raw request was stored and the alert is not: one round trip instead of two on
    every webhook.  No row: the request is a duplicate; a NULL alert id: the alert is.
    """
    alerts = AlertRow.__table__
    stored = _journal_insert(_RAW_BINDS).cte("stored_raw")
    columns = [c for c in alerts.c if c.name not in ("id", "raw_request_id")]
    alert = (postgresql.insert(alerts)
             .from_select(["raw_request_id", *(c.name for c in columns)],
                          select(stored.c.id, *(bindparam(c.name, type_=c.type) for c in columns)))
             .on_conflict_do_nothing(index_elements=["source_key", "external_id"])
             .returning(alerts.c.id)
             .cte("stored_alert"))
    return HotStatement(select(stored.c.id, select(alert.c.id).scalar_subquery()))


_RAW_WITH_FIRST_ALERT = _raw_with_first_alert()


class Duplicate(Exception):
    """The request's (source, external id) was accepted before, or every alert of it was: its
    transaction rolls back."""


class AlertsSeen(Exception):
    """An alert's (source, external id) was stored before, by a transaction this one did not see
    when it began: it rolls back (undoing what inline sinks did for that alert), and is run
    again looking first for what is stored.

    Looking only then keeps the query off the path of every new alert; a duplicate costs a
    second transaction, and the unique index keeps concurrent ones right on both databases.
    """


def store_alerts(tx: CoreTransaction, raw: dict, routed, repeated: set[int], look: bool, *,
                 lock_delivery_id: bool) -> list[Optional[int]]:
    """Inline sinks first, then the raw request, then the alert rows and their outbox rows;
    the stored alert's id for each of ``routed``, None for a duplicate.

    The raw insert is the request's duplicate check, each alert's insert the alert's (the
    alerts at the ``repeated`` positions are duplicates of earlier ones of the request; with
    ``look``, those stored already are looked up first).  Coming after the inline sinks, they
    let PostgreSQL store the raw request with the first alert in one statement; a duplicate
    raises ``Duplicate`` or ``AlertsSeen``, and the rollback undoes what the sinks wrote.

    Concurrent copies of a request queue on its delivery id's lock, unless ``lock_delivery_id``
    is false: the caller made the raw request's id from its alerts' ids, so a copy's first alert
    insert already waits on the alerts' unique index for the first copy, then stores nothing
    (``AlertsSeen``, then ``Duplicate``).  That spares every such webhook a round trip.
    """
    conn = tx.connection
    if lock_delivery_id:
        partitions.lock_delivery_id(conn, raw["source_key"], raw["external_id"])
    stored = _stored_external_ids(conn, raw["source_key"], [alert for alert, _, _ in routed]) if look else set()
    fresh = [index for index, (alert, _, _) in enumerate(routed)
             if index not in repeated and alert.external_id not in stored]
    if routed and not fresh:
        raise Duplicate
    rows = [(_alert_row(routed[index][0], _apply_inline(tx, index, routed[index][0], routed[index][1])),
             routed[index][2]) for index in fresh]
    raw = dict(raw, alert_count=len(rows))
    if rows and conn.dialect.name == "postgresql":
        params = {_RAW_BINDS[column]: value for column, value in _with_window(raw).items()}
        params.update(rows[0][0])
        first = _RAW_WITH_FIRST_ALERT.first(conn, params)
        if first is None:
            raise Duplicate
        raw_id, alert_id = first
        ids = [alert_id]
    else:
        raw_id, ids = insert_raw(conn, raw), []
        if raw_id is None:
            raise Duplicate
    insert_alert = _ALERT_INSERT[conn.dialect.name]
    ids += [insert_alert.scalar(conn, dict(row, raw_request_id=raw_id)) for row, _ in rows[len(ids):]]
    if None in ids:
        raise AlertsSeen
    for alert_id, (row, outbox) in zip(ids, rows):
        tx.queue(alert_id, row, outbox)
    by_position = dict(zip(fresh, ids))
    return [by_position.get(index) for index in range(len(routed))]


_STORED_EXTERNAL_IDS = select(AlertRow.external_id).where(AlertRow.source_key == bindparam("source_key"),
                                                         one_of(AlertRow.external_id, "ids"))


def _stored_external_ids(conn: Connection, source_key: str, alerts: list[Alert]) -> set[str]:
    """Which of the alerts' external ids this source has stored alerts with."""
    wanted = {alert.external_id for alert in alerts if alert.external_id is not None}
    if not wanted:
        return set()
    return set(conn.execute(_STORED_EXTERNAL_IDS, {"source_key": source_key, "ids": sorted(wanted)}).scalars())


class InlineSinkFailed(Exception):
    """An inline sink raised on the ``index``-th alert (its bug, not the request's): the
    transaction rolls back and is run again without it, so the alert is still stored."""

    def __init__(self, index: int, sink: Any):
        super().__init__(f"inline sink {sink.name} failed")
        self.index, self.sink = index, sink


def _apply_inline(tx: Transaction, index: int, alert: Alert, inline) -> Optional[int]:
    incident_id = None
    for sink, settings in inline:
        try:
            incident_id = sink.apply(tx, alert, settings) or incident_id
        except (SQLAlchemyError, RetryTransaction):
            raise  # the database's doing: the transaction's retry and error handling apply
        except Exception as exc:
            log.exception("inline sink %s raised on an alert from %s; the alert is stored without it",
                          sink.name, alert.source_key)
            metrics.SINK_ERRORS.labels(sink.name, "apply").inc()
            raise InlineSinkFailed(index, sink) from exc
    return incident_id


def _alert_row(alert: Alert, incident_id: Optional[int]) -> dict:
    return dict(
        source_key=alert.source_key, source_type=alert.source_type,
        fingerprint=alert.fingerprint, external_id=alert.external_id, status=alert.status,
        severity=alert.severity, title=alert.title, description=alert.description,
        resource_id=alert.resource.id, resource_name=alert.resource.name,
        resource_type=alert.resource.type, occurred_at=alert.occurred_at, labels=alert.labels,
        annotations=alert.annotations, links=[{"title": link.title, "url": link.url} for link in alert.links],
        origin=alert.origin, incident_id=incident_id, received_at=alert.received_at,
    )


class CoreTransaction(Transaction):
    """The core's ``Transaction``: it remembers whether it queued deliveries, to wake the
    dispatchers once it commits."""

    def __init__(self, snapshot: Snapshot):
        self.snapshot = snapshot
        self.queued = False

    def begin(self, connection: Connection) -> "CoreTransaction":
        """Start an attempt afresh on ``connection`` (a retry forgets what the last one queued)."""
        self.connection, self.queued = connection, False
        return self

    def queue(self, alert_id: int, row: dict, outbox: list[tuple[SinkType, Optional[str]]]) -> None:
        """One outbox row per external sink, ordered per fingerprint.  A sink that failed on the
        ingest path gets its row dead at once, with the error, for an operator to re-drive; a
        sink that tracks problems gets one only if the alert opens, continues or ends a problem
        period (``problems``)."""
        now = utcnow()
        for sink, error in outbox:
            if error is None and sink.tracks_problems:
                problems.queue(self.connection, sink.name, alert_id, row, now)
            else:
                _DELIVERY_INSERT.run(self.connection, dict(
                    alert_id=alert_id, sink_name=sink.name, ordering_key=row["fingerprint"], attempts=0,
                    next_attempt_at=now, created_at=now, status="dead" if error else "pending", last_error=error,
                    finished_at=now if error else None))
            self.queued = self.queued or error is None

    def submit(self, alert: Alert, *, incident_id: Optional[int] = None) -> int:
        faults = alert_faults(alert)
        if alert.origin == "webhook":
            faults["origin"] = "must say who made the alert (e.g. 'manual'): 'webhook' is for what sources parse"
        if faults:
            raise ValueError("cannot submit this alert: " + "; ".join(f"{k} {v}" for k, v in faults.items()))
        received = alert.received_at or utcnow()
        alert = alert.replace(received_at=received, occurred_at=alert.occurred_at or received)
        _, _, outbox = route_alert(self.snapshot, alert, None)
        row = _alert_row(alert, incident_id)
        alert_id = _ALERT_INSERT[self.connection.dialect.name].scalar(self.connection, dict(row, raw_request_id=None))
        if alert_id is None:
            raise ValueError(f"cannot submit this alert: external_id {alert.external_id!r} is stored already")
        self.queue(alert_id, row, outbox)
        return alert_id


def in_transaction(runtime: Runtime, work: Callable[[Transaction], T]) -> T:
    """Run ``work`` with a ``Transaction``, retried whole when it loses a race, and committed with
    other threads' when the engine commits in groups (``commit_together``); once it has
    committed, wake the dispatchers if it queued deliveries."""
    tx = CoreTransaction(runtime.snapshot)
    result = commit_together(runtime.engine, lambda conn: work(tx.begin(conn)))
    if tx.queued:
        runtime.notify_deliveries()
    return result
