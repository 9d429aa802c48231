"""The ITMS incident store: dedupe by fingerprint, the lifecycle, and the timeline.

Every function works on a connection inside the caller's transaction, so an alert's
incident effect commits (or rolls back) together with the webhook that carried it.
Races between processes are settled by the database: the partial unique index on open
fingerprints, row locks (``FOR UPDATE`` on PostgreSQL, ``BEGIN IMMEDIATE`` on SQLite)
and ``RetryTransaction`` when a conditional update finds the row changed under it.
"""
from __future__ import annotations

from collections import defaultdict, deque
from datetime import datetime, timedelta
from typing import Any, NamedTuple, Optional

from sqlalchemy import Connection, Integer, bindparam, case, insert, literal_column, select, update

from gateway.contracts import Alert
from gateway.fingerprints import group_fingerprint, whole_group
from gateway.store.db import HotStatement, RetryTransaction
from gateway.store.models import (
    SEVERITY_RANK, SEVERITY_RANK_SQL, AlertRow, GroupRecovery, Incident, TimelineEntry, UTCDateTime, group_bounds,
    in_group, is_open, utcnow,
)
from gateway.store.partitions import kept_raw_request_id

incidents = Incident.__table__
timeline_entries = TimelineEntry.__table__
group_recoveries = GroupRecovery.__table__
alerts = AlertRow.__table__
SOURCE_ACTOR = "source:"
"""Prefix of the actor of everything a webhook did: ``source:<key>``."""

TRANSITIONS = {
    "acknowledge": ({"triggered"}, "acknowledged", "acknowledged_at"),
    "resolve": ({"triggered", "acknowledged"}, "resolved", "resolved_at"),
    "close": ({"resolved"}, "closed", "closed_at"),
}
"""action -> (statuses it is allowed from, the status it leads to, the timestamp it sets)."""


class TransitionRefused(Exception):
    def __init__(self, incident_id: int, action: str, status: str):
        allowed = allowed_actions(status)
        super().__init__(
            f"incident {incident_id} is {status}: cannot {action}; "
            + (f"allowed: {', '.join(allowed)}" if allowed else f"{status} is final")
        )


def allowed_actions(status: str) -> list[str]:
    return [action for action, (sources, _, _) in TRANSITIONS.items() if status in sources]


INCIDENT_SEVERITY_RANK = literal_column(SEVERITY_RANK_SQL, Integer())
"""An incident's ``SEVERITY_RANK``, in SQL: the expression the severity sort's index holds."""

# The statements below are built once, at import: building one per webhook cost more CPU than
# running it.  That holds for the rarer outcomes too (new incidents, recoveries, reopenings: about
# one webhook in ten under a realistic mix), not only for the repeats that join an open incident.
_occurred = bindparam("occurred", type_=UTCDateTime())
_BUMP = {"event_count": incidents.c.event_count + 1, "last_event_at": bindparam("now", type_=UTCDateTime())}
"""What every webhook that reaches an incident changes: its count and its last event time."""
_COUNTED = {
    **_BUMP,
    "last_seen_at": case((incidents.c.last_seen_at < _occurred, _occurred), else_=incidents.c.last_seen_at),
}
_OPEN_BY_FP = (incidents.c.fingerprint == bindparam("fp"), is_open(incidents.c.status))
_JOIN_OPEN = HotStatement(
    update(incidents)
    .where(*_OPEN_BY_FP)
    .values(**_COUNTED, severity=case((INCIDENT_SEVERITY_RANK > bindparam("rank"), bindparam("new_severity")),
                                      else_=incidents.c.severity))
    .returning(incidents.c.id)
)
"""A firing alert joins the open incident in one statement; severity only ever rises while open.

That is the whole effect of a repeat: it writes no timeline row, since its alert row (linked
to the incident) already records it; ``timeline()`` lists it from there.
"""
_BY_ID = incidents.c.id == bindparam("incident_id")
_COUNT_BY_ID = HotStatement(update(incidents).where(_BY_ID).values(**_COUNTED))
_RESOLVE = HotStatement(update(incidents).where(_BY_ID).values(
    **_BUMP, status="resolved", resolved_at=bindparam("resolved", type_=UTCDateTime())))
_REOPEN = HotStatement(update(incidents).where(_BY_ID, incidents.c.status == "resolved").values(
    **_BUMP, status="triggered", resolved_at=None, acknowledged_at=None, severity=bindparam("new_severity"),
    last_seen_at=bindparam("seen", type_=UTCDateTime())))
_CREATE = HotStatement(insert(incidents).returning(incidents.c.id))
_OPEN = select(incidents).where(*_OPEN_BY_FP).with_for_update()
_LAST_RESOLVED = (select(incidents).where(incidents.c.fingerprint == bindparam("fp"), incidents.c.resolved_at.is_not(None))
                  .order_by(incidents.c.resolved_at.desc()).limit(1).with_for_update())
_OPEN_IN_GROUP = (select(incidents).where(*in_group(incidents.c.fingerprint), is_open(incidents.c.status))
                  .order_by(incidents.c.id).with_for_update())
_LAST_RESOLVED_IN_GROUP = (select(incidents).where(*in_group(incidents.c.fingerprint), incidents.c.resolved_at.is_not(None))
                           .order_by(incidents.c.resolved_at.desc()).limit(1).with_for_update())
_BY_GROUP = group_recoveries.c.fingerprint == bindparam("fp")
_GROUP_RECOVERY = select(group_recoveries).where(_BY_GROUP).with_for_update()
"""A group's latest recovery that spoke for all of it, by the group's own fingerprint (``group_fingerprint``)."""
_NOTE_GROUP_RECOVERY = HotStatement(insert(group_recoveries))
_MOVE_GROUP_RECOVERY = HotStatement(update(group_recoveries).where(_BY_GROUP))
_ENTRY = HotStatement(insert(timeline_entries))


def _entry(conn: Connection, incident_id: int, kind: str, actor: str, at: datetime, **fields: Any) -> None:
    _ENTRY.run(conn, dict(incident_id=incident_id, kind=kind, actor=actor, at=at, **fields))


def _alert_entry(conn: Connection, incident_id: int, kind: str, alert: Alert, **fields: Any) -> None:
    """An entry for a webhook's alert: by its source and dated when the webhook arrived, as the
    alert row is, which is how ``timeline()`` pairs the entry with the alert and its raw request
    (stored only after this runs)."""
    _entry(conn, incident_id, kind, f"{SOURCE_ACTOR}{alert.source_key}", alert.received_at, **fields)


def _count_event(conn: Connection, incident_id: int, now: datetime, occurred: datetime) -> None:
    _COUNT_BY_ID.run(conn, {"incident_id": incident_id, "now": now, "occurred": occurred})


def apply_alert(
    conn: Connection, alert: Alert, reopen_window: Optional[float]
) -> Optional[int]:
    """Record one alert's effect; returns the incident it joined, or None (stored as an event only)."""
    now = utcnow()
    occurred = alert.occurred_at or now
    if alert.status != "firing":
        return _recover(conn, alert, now, occurred)
    joined = _JOIN_OPEN.scalar(conn, {"fp": alert.fingerprint, "now": now, "occurred": occurred,
                                      "rank": SEVERITY_RANK[alert.severity], "new_severity": alert.severity})
    if joined is not None:
        return joined

    # The group's recovery is locked before the member's incident, in the order a group's recovery locks them.
    group = conn.execute(_GROUP_RECOVERY, {"fp": group_fingerprint(alert.fingerprint)}).first()
    previous = conn.execute(_LAST_RESOLVED, {"fp": alert.fingerprint}).first()
    if previous is not None and occurred <= _ended_by(previous):
        # Late or out-of-order delivery: it happened before the incident was resolved.
        _count_event(conn, previous.id, now, occurred)
        _alert_entry(conn, previous.id, "webhook_received", alert,
                     note="arrived after the incident was resolved; it happened before, so nothing reopens")
        return previous.id
    if group is not None and occurred <= group.recovered_at:
        # It happened before its whole group was resolved: nothing opens, whether or not it ever was open.
        if group.incident_id is not None:
            _count_event(conn, group.incident_id, now, occurred)
            _alert_entry(conn, group.incident_id, "webhook_received", alert,
                         note="arrived after its group was resolved; it happened before, so nothing opens")
        return group.incident_id
    if (
        previous is not None
        and previous.status == "resolved"
        and reopen_window is not None
        and occurred - previous.resolved_at <= timedelta(seconds=reopen_window)
    ):
        reopened = _REOPEN.run(conn, {"incident_id": previous.id, "new_severity": alert.severity,
                                  "seen": max(previous.last_seen_at, occurred), "now": now})
        if reopened != 1:
            raise RetryTransaction("incident changed while reopening")
        _alert_entry(conn, previous.id, "reopened", alert, from_status="resolved", to_status="triggered")
        return previous.id

    incident_id = _create(conn, alert, now, occurred, status="triggered")
    _alert_entry(conn, incident_id, "created", alert)
    return incident_id


def _create(conn: Connection, alert: Alert, now: datetime, occurred: datetime, **state: Any) -> int:
    """A new incident of the alert's problem, in ``state`` (its status, and when resolved, its resolution)."""
    return _CREATE.scalar(conn, dict(
        fingerprint=alert.fingerprint, source_key=alert.source_key, source_type=alert.source_type,
        title=alert.title, description=alert.description, severity=alert.severity,
        resource_id=alert.resource.id, resource_name=alert.resource.name, resource_type=alert.resource.type,
        event_count=1, first_seen_at=occurred, last_seen_at=occurred, created_at=now, last_event_at=now, **state,
    ))


def _recover(conn: Connection, alert: Alert, now: datetime, occurred: datetime) -> Optional[int]:
    """A recovery resolves the open incident it ends (every one of its group, when it speaks for
    the group); returns the incident its alert belongs to, or None."""
    prefix = whole_group(alert.fingerprint)
    if prefix is None:
        current = conn.execute(_OPEN, {"fp": alert.fingerprint}).first()
        return _end(conn, alert, current, now, occurred) if current is not None else _remember_recovery(
            conn, alert, now, occurred)
    group = conn.execute(_GROUP_RECOVERY, {"fp": alert.fingerprint}).first()
    members = conn.execute(_OPEN_IN_GROUP, group_bounds(prefix)).all()
    if members:
        ended = [_end(conn, alert, member, now, occurred) for member in members]
        own = [member.id for member in members if member.fingerprint == alert.fingerprint]
        incident_id = own[0] if own else next(filter(None, ended), None)
    else:
        incident_id = _remember_recovery(conn, alert, now, occurred)
    if group is None:
        _NOTE_GROUP_RECOVERY.run(conn, {"fingerprint": alert.fingerprint, "recovered_at": occurred,
                                        "incident_id": incident_id})
    elif occurred > group.recovered_at:
        _MOVE_GROUP_RECOVERY.run(conn, {"fp": alert.fingerprint, "recovered_at": occurred, "incident_id": incident_id})
    return incident_id


def _remember_recovery(conn: Connection, alert: Alert, now: datetime, occurred: datetime) -> int:
    """A recovery with nothing open to end is kept, so that a firing from before it, delivered
    later, finds the problem ended and opens nothing (``_ended_by``).

    It is counted on the fingerprint's (or group's) last resolved incident, or, for a problem
    never seen, on a new incident created resolved at the recovery's time.
    """
    prefix = whole_group(alert.fingerprint)
    previous = conn.execute(*((_LAST_RESOLVED_IN_GROUP, group_bounds(prefix)) if prefix is not None
                              else (_LAST_RESOLVED, {"fp": alert.fingerprint}))).first()
    if previous is not None:
        _count_event(conn, previous.id, now, occurred)
        if occurred > _ended_by(previous):
            _alert_entry(conn, previous.id, "webhook_received", alert,
                         note="a later recovery with nothing open; a firing from before it will open nothing")
        return previous.id
    incident_id = _create(conn, alert, now, occurred, status="resolved", resolved_at=occurred)
    _alert_entry(conn, incident_id, "created", alert, to_status="resolved",
                 note="a recovery with no incident before it; a firing from before it will open nothing")
    return incident_id


def _ended_by(incident: Any) -> datetime:
    """Until when a resolved incident's problem is known to be over: its resolution, or a later
    recovery counted on it (which moved ``last_seen_at``; firings counted on it are older)."""
    return max(incident.resolved_at, incident.last_seen_at)


def _end(conn: Connection, alert: Alert, current: Any, now: datetime, occurred: datetime) -> Optional[int]:
    """Resolve the open incident ``current`` unless the recovery is older than what it knows."""
    if occurred < current.first_seen_at:
        return None  # the recovery of an earlier, already-ended incident
    if occurred < current.last_seen_at:
        # Out of order: the problem fired again after this recovery, so it is still open.
        _count_event(conn, current.id, now, occurred)
        _alert_entry(conn, current.id, "webhook_received", alert,
                     note="a recovery older than the latest alert; the problem fired again after it, so it stays open")
        return current.id
    # resolved_at is not before last_seen_at: checked above.
    _RESOLVE.run(conn, {"incident_id": current.id, "resolved": occurred, "now": now})
    _alert_entry(conn, current.id, "status_changed", alert, from_status=current.status,
                 to_status="resolved", note=f"recovered: {alert.title}")
    return current.id


def transition(conn: Connection, incident_id: int, action: str, actor: str, note: Optional[str]):
    """Move an incident by a person's action; raises LookupError or TransitionRefused."""
    allowed_from, target, stamp = TRANSITIONS[action]
    row = conn.execute(select(incidents).where(incidents.c.id == incident_id).with_for_update()).first()
    if row is None:
        raise LookupError(f"no incident {incident_id}")
    if row.status not in allowed_from:
        raise TransitionRefused(incident_id, action, row.status)
    now = utcnow()
    conn.execute(update(incidents).where(incidents.c.id == incident_id).values(status=target, **{stamp: now}))
    _entry(conn, incident_id, "status_changed", actor, now, from_status=row.status, to_status=target, note=note)
    return row


def add_comment(conn: Connection, incident_id: int, actor: str, body: str) -> "TimelineItem":
    if conn.execute(select(incidents.c.id).where(incidents.c.id == incident_id)).first() is None:
        raise LookupError(f"no incident {incident_id}")
    return _stored_item(conn.execute(
        insert(timeline_entries)
        .values(incident_id=incident_id, kind="commented", actor=actor, at=utcnow(), note=body)
        .returning(timeline_entries)
    ).one())


class TimelineItem(NamedTuple):
    """One line of an incident's history.

    ``id`` is the stored entry's (None for a listed repeat); ``alert_id``,
    ``raw_request_id``, ``annotations`` and ``links`` are those of the webhook alert the line
    tells of, if any.
    """

    id: Optional[int]
    alert_id: Optional[int]
    kind: str
    at: datetime
    actor: str
    from_status: Optional[str] = None
    to_status: Optional[str] = None
    note: Optional[str] = None
    raw_request_id: Optional[int] = None
    annotations: Optional[dict] = None
    links: Optional[list] = None


def _stored_item(row: Any) -> TimelineItem:
    return TimelineItem(row.id, None, row.kind, row.at, row.actor, row.from_status, row.to_status, row.note)


def timeline(conn: Connection, incident_id: int) -> list[TimelineItem]:
    """The incident's history in time order: its stored entries, and a ``webhook_received`` for
    each of its webhook alerts that no stored entry tells of (a repeat, recorded by its alert row).

    A stored entry a webhook wrote tells of the alert that came in with it: same incident,
    same arrival time; it takes that alert's id and raw request.  Matching on time, not on
    the raw request, survives ``gateway purge``.
    """
    stored = [_stored_item(row) for row in conn.execute(
        select(timeline_entries).where(timeline_entries.c.incident_id == incident_id).order_by(timeline_entries.c.id))]
    unpaired: dict[datetime, deque[int]] = defaultdict(deque)
    for index, item in enumerate(stored):
        if item.actor.startswith(SOURCE_ACTOR):
            unpaired[item.at].append(index)
    listed = []
    for row in conn.execute(
        select(alerts.c.id, alerts.c.received_at, alerts.c.source_key, kept_raw_request_id(alerts),
               alerts.c.annotations, alerts.c.links)
        .where(alerts.c.incident_id == incident_id, alerts.c.origin == "webhook")
        .order_by(alerts.c.id)
    ):
        waiting = unpaired.get(row.received_at)
        if waiting:
            index = waiting.popleft()
            stored[index] = stored[index]._replace(alert_id=row.id, raw_request_id=row.raw_request_id,
                                                   annotations=row.annotations or {}, links=row.links or [])
        else:
            listed.append(TimelineItem(None, row.id, "webhook_received", row.received_at,
                                       f"{SOURCE_ACTOR}{row.source_key}", raw_request_id=row.raw_request_id,
                                       annotations=row.annotations or {}, links=row.links or []))
    # Stable: at one instant, what a webhook changed comes before the repeats that arrived with it.
    return sorted(stored + listed, key=lambda item: item.at)
