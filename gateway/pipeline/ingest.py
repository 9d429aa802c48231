"""POST /hooks/<type>/<key>/: verify, parse, fingerprint, route and store in ONE transaction.

Nothing is acknowledged before the commit, and nothing external is called on this
path except a source's own handshake.  Errors are ``Rejected`` (a client error with a
JSON body); a database failure is ``Unavailable`` (503, nothing stored).
"""
from __future__ import annotations

import hashlib
import logging
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import Any, Callable, Iterator, Mapping, Optional, TypeVar

from sqlalchemy import Connection, bindparam, insert, select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.exc import DataError, SQLAlchemyError

from gateway import metrics
from gateway.bodies import MAY_HOLD_UNSTORABLE, clean_text, cleaned, parse_json
from gateway.contracts import (
    ALERT_STATUSES, SEVERITIES, Alert, ApiError, Headers, InboundRequest, InlineSinkType, Rejected, Reply, Resource,
    SinkType, Transaction, namespaced_fingerprint,
)
from gateway.pipeline import problems
from gateway.pipeline.runtime import ActiveSource, Runtime, Snapshot
from gateway.store.db import HotStatement, RetryTransaction, refusal_reason, run_in_transaction
from gateway.store.models import UNSTORABLE_TEXT, AlertRow, DeliveryRow, Handshake, RawRequest, RefusedRequest, utcnow

log = logging.getLogger(__name__)
T = TypeVar("T")

SECRET_HEADERS = frozenset({"authorization", "x-webhook-token", "cookie"})
"""Stored as "[redacted]": the raw journal must not become a second copy of credentials."""


class Unavailable(Exception):
    """The database could not take the request; the sender should retry."""


@dataclass
class Outcome:
    status: int
    body: Mapping[str, Any]
    headers: Mapping[str, str] = field(default_factory=dict)


BodyReader = Callable[[int], bytes]
"""Reads the request body up to a byte limit, raising ApiError(413) past it."""


def receive(runtime: Runtime, source_type: str, source_key: str, method: str, path: str,
            headers: Mapping[str, str], read_body: BodyReader, remote_addr: str) -> Outcome:
    """Handle one webhook; raises Rejected or Unavailable, counted in metrics either way."""
    started = time.perf_counter()
    try:
        source = runtime.sources.find(source_key)
    except SQLAlchemyError as exc:  # an API-created source is looked up in the database
        metrics.WEBHOOKS_RECEIVED.labels("unknown").inc()
        metrics.WEBHOOKS_REJECTED.labels("unknown", "database_unavailable").inc()
        log.error("could not look up source %r: %s", source_key, exc)
        raise Unavailable("the database is unavailable; nothing was stored, retry later") from exc
    label = source.name if source is not None else "unknown"  # not the key: it may be the secret
    metrics.WEBHOOKS_RECEIVED.labels(label).inc()
    try:
        outcome = _receive(runtime, source, source_type, source_key, method, path, headers, read_body, remote_addr)
    except ApiError as exc:  # the source's or the core's refusal, or a body the core cannot read
        metrics.WEBHOOKS_REJECTED.labels(label, exc.code).inc()
        if source is not None:
            _journal_refusal(runtime, source.key, exc, remote_addr)
        raise
    except Unavailable:
        metrics.WEBHOOKS_REJECTED.labels(label, "database_unavailable").inc()
        raise
    metrics.WEBHOOKS_ACCEPTED.labels(label, outcome.body.get("status", "reply")).inc()
    metrics.INGEST_SECONDS.observe(time.perf_counter() - started)
    return outcome


def _journal_refusal(runtime: Runtime, source_key: str, exc: Rejected, remote_addr: str) -> None:
    """Keep why a known source refused a request, for its console page.  Best effort: the
    refusal is answered the same whether or not this row could be written."""
    try:
        run_in_transaction(runtime.engine, lambda conn: conn.execute(insert(RefusedRequest.__table__).values(
            source_key=source_key, received_at=utcnow(), status=exc.status, code=exc.code[:64],
            message=UNSTORABLE_TEXT.sub("\ufffd", exc.message), remote_addr=remote_addr[:64] or None)))
    except SQLAlchemyError as error:
        log.warning("could not record a refused request of %r: %s", source_key, error)


def _receive(runtime: Runtime, source: Optional[ActiveSource], source_type: str, source_key: str,
             method: str, path: str, headers: Mapping[str, str], read_body: BodyReader,
             remote_addr: str) -> Outcome:
    if source is None or source.type != source_type:
        raise Rejected(404, "unknown_source", f"no {source_type} source with key {source_key!r}")
    if not source.enabled:
        raise Rejected(403, "source_disabled", f"source {source_key!r} is disabled")
    if method != "POST":
        raise Rejected(405, "method_not_allowed", f"webhooks are POSTed, not sent with {method}",
                       headers={"Allow": "POST"})
    snapshot = runtime.snapshot
    body = read_body(snapshot.config.max_body_size)
    payload = _decode(body)
    request = InboundRequest(method, path, Headers(headers), body, payload, remote_addr, utcnow())
    with _plugin_guard(source):
        source.plugin.verify(request)
        raw = _raw_values(source, request)
        reply = source.plugin.handshake(request)
    if reply is not None:
        _store_handshake(runtime, source, request, raw, reply)
        return Outcome(reply.status, reply.body, reply.headers)

    with _plugin_guard(source):
        alerts = [_complete(source, alert, request.received_at) for alert in source.plugin.parse(request)]
        routed = [_route(snapshot, alert, source.reopen_window) for alert in alerts]
    external_ids = [alert.external_id for alert in alerts]
    if raw["external_id"] is None and external_ids and all(external_ids):
        raw["external_id"] = _storable_id("|".join(external_ids))
    raw["alert_count"] = len(alerts)
    while True:
        try:
            with _storing(source, "nothing was stored"):
                ids = in_transaction(runtime, lambda tx: _store(tx, raw, routed))
            break
        except Duplicate:
            return Outcome(200, {"status": "duplicate"})
        except InlineSinkFailed as failed:  # rolled back: store it again without that sink for that alert
            alert, inline, outbox = routed[failed.index]
            routed[failed.index] = (alert, [(sink, settings) for sink, settings in inline if sink is not failed.sink],
                                    outbox)
    return Outcome(202, {"status": "accepted", "alerts": ids})


def _decode(body: bytes) -> Any:
    """The JSON payload, cleaned of text no column can hold when the body may carry some,
    so that plugins, the incident store and the database all see text they can keep."""
    payload = parse_json(body)
    return cleaned(payload) if MAY_HOLD_UNSTORABLE.search(body) else payload


def _storable(text: str, limit: Optional[int]) -> str:
    """``text`` as a column of length ``limit`` can keep it: cleaned, and cut to fit."""
    text = clean_text(text)
    return text[:limit - 1] + "\u2026" if limit is not None and len(text) > limit else text


_RESOURCE_LENGTHS = tuple(AlertRow.__table__.c[f"resource_{part}"].type.length for part in ("id", "name", "type"))
_CONTENT_TYPE_LENGTH = RawRequest.__table__.c.content_type.type.length
_EXTERNAL_ID_LENGTH = RawRequest.__table__.c.external_id.type.length


def _storable_id(external_id: Optional[str]) -> Optional[str]:
    """An idempotency key its column can keep: one too long or unstorable is replaced by its
    digest, which keeps distinct keys distinct (cutting them would not)."""
    if external_id is None or (len(external_id) <= _EXTERNAL_ID_LENGTH
                               and not UNSTORABLE_TEXT.search(external_id)):
        return external_id
    return "sha256:" + hashlib.sha256(external_id.encode("utf-8", "surrogatepass")).hexdigest()


@contextmanager
def _storing(source: ActiveSource, lost: str) -> Iterator[None]:
    """Database errors as answers: a value the database refuses is the payload's fault (422;
    retrying cannot help), anything else is the database's (503; the sender retries)."""
    try:
        yield
    except DataError as exc:
        reason = refusal_reason(exc)
        log.warning("could not store a request for %s: %s", source.key, reason)
        raise Rejected(422, "unstorable_payload",
                       f"a value in this payload cannot be stored ({lost}): {reason}") from exc
    except SQLAlchemyError as exc:
        log.error("could not store a request for %s: %s", source.key, exc)
        raise Unavailable(f"the database is unavailable; {lost}, retry later") from exc


@contextmanager
def _plugin_guard(source: ActiveSource) -> Iterator[None]:
    """A plugin that crashes on a request answers 422, not 500: the sender learns it was refused."""
    try:
        yield
    except Rejected:
        raise
    except Exception as exc:
        log.exception("source plugin %s failed on a request to %s", source.type, source.key)
        raise Rejected(422, "unprocessable_payload",
                       f"the {source.type} plugin could not process this payload ({exc.__class__.__name__})") from exc


def _faults(alert: Alert) -> dict[str, str]:
    """The fields that make an alert unfit to store, each with what is wrong with it."""
    faults = {}
    if alert.status not in ALERT_STATUSES:
        faults["status"] = f"must be one of {', '.join(ALERT_STATUSES)}, got {alert.status!r}"
    if alert.severity not in SEVERITIES:
        faults["severity"] = f"must be one of {', '.join(SEVERITIES)}, got {alert.severity!r}"
    if not isinstance(alert.title, str) or not alert.title:
        faults["title"] = "missing"
    return faults


MAX_CLOCK_SKEW = timedelta(minutes=5)
"""How far in the future a vendor's alert time may be; a skewed clock must not pin an incident's times ahead."""


def _complete(source: ActiveSource, alert: Alert, received_at: datetime) -> Alert:
    """Check what the plugin produced and add what only the core knows."""
    faults = _faults(alert)
    if faults:
        raise Rejected.invalid(faults)
    occurred = alert.occurred_at or received_at
    if occurred.tzinfo is None:
        occurred = occurred.replace(tzinfo=timezone.utc)
    occurred = min(occurred, received_at + MAX_CLOCK_SKEW)
    labels = {clean_text(str(k)): clean_text(str(v)) for k, v in alert.labels.items() if v is not None}
    resource = (alert.resource.id, alert.resource.name, alert.resource.type)
    return alert.replace(
        source_key=source.key, source_type=source.type, occurred_at=occurred, labels=labels, received_at=received_at,
        fingerprint=namespaced_fingerprint(source.key, source.plugin.fingerprint(alert), source.plugin.group(alert)),
        title=clean_text(alert.title), description=clean_text(alert.description or ""),
        resource=Resource(*(_storable(text or "", limit) for text, limit in zip(resource, _RESOURCE_LENGTHS))),
        external_id=_storable_id(alert.external_id),
    )


def _route(snapshot: Snapshot, alert: Alert, source_reopen_window: Optional[float]):
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


_RAW_INSERT = {
    name: HotStatement(dialect.insert(RawRequest.__table__)
                       .on_conflict_do_nothing(index_elements=["source_key", "external_id"])
                       .returning(RawRequest.id))
    for name, dialect in (("postgresql", postgresql), ("sqlite", sqlite))
}
"""Per dialect: store the raw request unless its (source, external id) was accepted before."""
_ALERT_INSERT = HotStatement(insert(AlertRow.__table__).returning(AlertRow.id))
_DELIVERY_INSERT = HotStatement(insert(DeliveryRow.__table__))


_RAW_BINDS = {c.name: f"raw_{c.name}" for c in RawRequest.__table__.c if c.name != "id"}
"""Raw request column -> its bind name in ``_RAW_WITH_FIRST_ALERT`` (alerts share column names)."""


def _raw_with_first_alert():
    """PostgreSQL: the raw request and the request's first alert in one statement.

    A data-modifying CTE stores the raw request unless it is a duplicate, and the alert
    only if the raw request was stored: one round trip instead of two on every webhook.
    """
    raw, alerts = RawRequest.__table__, AlertRow.__table__
    stored = (postgresql.insert(raw)
              .values({c.name: bindparam(_RAW_BINDS[c.name], type_=c.type) for c in raw.c if c.name in _RAW_BINDS})
              .on_conflict_do_nothing(index_elements=["source_key", "external_id"])
              .returning(raw.c.id)
              .cte("stored_raw"))
    columns = [c for c in alerts.c if c.name not in ("id", "raw_request_id")]
    return HotStatement(
        insert(alerts)
        .from_select(["raw_request_id", *(c.name for c in columns)],
                     select(stored.c.id, *(bindparam(c.name, type_=c.type) for c in columns)))
        .returning(alerts.c.id, alerts.c.raw_request_id)
    )


_RAW_WITH_FIRST_ALERT = _raw_with_first_alert()


class Duplicate(Exception):
    """The request's (source, external id) was accepted before: its transaction rolls back."""


def _raw_values(source: ActiveSource, request: InboundRequest) -> dict:
    """The raw journal's row, as the source's scrub leaves it and without credentials."""
    headers, body = source.plugin.scrub(request)
    content_type = request.headers.get("content-type")
    return dict(
        source_key=source.key, source_type=source.type, method=request.method, path=request.path,
        headers={k: ("[redacted]" if k.lower() in SECRET_HEADERS else v) for k, v in headers.items()},
        body=body, content_type=content_type and _storable(content_type, _CONTENT_TYPE_LENGTH),
        remote_addr=request.remote_addr, received_at=request.received_at,
        external_id=_storable_id(source.plugin.delivery_id(request)), alert_count=0,
    )


def _store(tx: _Transaction, raw: dict, routed) -> list[int]:
    """Inline sinks first, then the raw request, then the alert rows and their outbox rows.

    The raw insert is the duplicate check.  Coming after the inline sinks, it lets
    PostgreSQL store the raw request with the first alert in one statement; a duplicate
    raises ``Duplicate``, and the rollback undoes what the sinks wrote.
    """
    conn = tx.connection
    rows = [(_alert_row(alert, _apply_inline(tx, index, alert, inline)), outbox)
            for index, (alert, inline, outbox) in enumerate(routed)]
    if rows and conn.dialect.name == "postgresql":
        params = {_RAW_BINDS[column]: value for column, value in raw.items()}
        params.update(rows[0][0])
        stored = _RAW_WITH_FIRST_ALERT.first(conn, params)
        if stored is None:
            raise Duplicate
        alert_id, raw_id = stored
        ids = [alert_id]
    else:
        raw_id, ids = _RAW_INSERT[conn.dialect.name].scalar(conn, raw), []
        if raw_id is None:
            raise Duplicate
    ids += [_ALERT_INSERT.scalar(conn, dict(row, raw_request_id=raw_id)) for row, _ in rows[len(ids):]]
    for alert_id, (row, outbox) in zip(ids, rows):
        tx.queue(alert_id, row, outbox)
    return ids


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
        origin=alert.origin, incident_id=incident_id, received_at=alert.received_at,
    )


class _Transaction(Transaction):
    """The core's ``Transaction``: it remembers whether it queued deliveries, to wake the
    dispatchers once it commits."""

    def __init__(self, snapshot: Snapshot):
        self.snapshot = snapshot
        self.queued = False

    def begin(self, connection: Connection) -> "_Transaction":
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
        faults = _faults(alert)
        if alert.origin == "webhook":
            faults["origin"] = "must say who made the alert (e.g. 'manual'): 'webhook' is for what sources parse"
        if faults:
            raise ValueError("cannot submit this alert: " + "; ".join(f"{k} {v}" for k, v in faults.items()))
        received = alert.received_at or utcnow()
        alert = alert.replace(received_at=received, occurred_at=alert.occurred_at or received)
        _, _, outbox = _route(self.snapshot, alert, None)
        row = _alert_row(alert, incident_id)
        alert_id = _ALERT_INSERT.scalar(self.connection, dict(row, raw_request_id=None))
        self.queue(alert_id, row, outbox)
        return alert_id


def in_transaction(runtime: Runtime, work: Callable[[Transaction], T]) -> T:
    """Run ``work`` with a ``Transaction``, retried whole when it loses a race; once it has
    committed, wake the dispatchers if it queued deliveries."""
    tx = _Transaction(runtime.snapshot)
    result = run_in_transaction(runtime.engine, lambda conn: work(tx.begin(conn)))
    if tx.queued:
        runtime.notify_deliveries()
    return result


def _store_handshake(runtime: Runtime, source: ActiveSource, request: InboundRequest, raw: dict,
                     reply: Reply) -> None:
    def work(conn: Connection) -> None:
        # A handshake is answered anew each time, so each one is journaled: no idempotency key.
        raw_id = _RAW_INSERT[conn.dialect.name].scalar(conn, dict(raw, external_id=None))
        conn.execute(insert(Handshake.__table__).values(
            source_key=source.key, raw_request_id=raw_id, received_at=request.received_at,
            status=reply.status, record=dict(reply.record or {}),
        ))

    with _storing(source, "the handshake was not recorded"):
        run_in_transaction(runtime.engine, work)
