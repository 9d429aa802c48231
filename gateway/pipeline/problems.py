"""Problem periods, for outbox sinks that track them (``SinkType.tracks_problems``).

Some destinations know a problem only from the events they were sent: SpaceONE matches
an event to the open alert of its key only if an event of that key came in the last ten
minutes.  For such a sink the core keeps, per (sink, fingerprint), the problem's open
*period* (``SinkProblem``) and decides in the ingest transaction what the sink gets:

- a firing opens a period (the next number) when none is open, or joins the open one;
  one that happened at or before the problem's last resolution is stale and not queued;
- a recovery ends the open period; one with no open period, or older than the period's
  latest firing (the problem fired again after it), is not queued.  With no period open
  it still counts as a resolution, so a firing that happened before it, arriving after
  it, is stale.  A person's resolve (``origin: manual``) ends the open period whatever
  its time;
- a recovery that speaks for its whole group (``whole_group``: an OCI alarm's recovery
  naming no metric stream) also ends the open period of every member of the group, each
  with a row of its own: ordered and keyed by the member's fingerprint (the row's
  ``ordering_key``, handed to the sink as ``Delivery.fingerprint``) and tagged with the
  member's period.  It is remembered as the group's resolution too, on the group's own
  state, so that a member's firing from before it, arriving after it, is stale even for a
  member that was never open.

Each queued row is tagged with its period (``ProblemDelivery``), which the sink gets as
``Delivery.period``.  A sink with a ``refresh_interval`` also gets a *refresh*: when a
firing row is delivered and its period is still open with nothing queued after it, the
same transaction queues a row re-delivering that firing ``refresh_interval`` later.  It
is an outbox row like any other (ordered by fingerprint, retried, dead-lettered, kept
across restarts) and costs nothing until it is due.  A row queued for the problem
before then replaces it: an untried refresh is deleted, and the new row (a repeat or
the recovery) goes out at once instead of waiting behind it.
"""
from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any, Iterable, Mapping, NamedTuple, Optional

from sqlalchemy import Connection, Engine, bindparam, delete, exists, insert, or_, select, update

from gateway.contracts import Delivery, SinkType
from gateway.fingerprints import group_fingerprint, whole_group
from gateway.pipeline import ordering
from gateway.store.db import HotStatement, reading
from gateway.store.lists import one_of
from gateway.store.models import DeliveryRow, ProblemDelivery, SinkProblem, UTCDateTime, group_bounds, in_group

sink_problems = SinkProblem.__table__
problem_deliveries = ProblemDelivery.__table__
deliveries = DeliveryRow.__table__


class Period(NamedTuple):
    """What an outbox row of a tracking sink knows of its problem."""

    number: int
    refresh: bool


class Step(NamedTuple):
    """What one alert does to a problem: its new state values (None: unchanged), and the
    period whose row the sink gets (None: the sink does not get the alert)."""

    changes: Optional[dict]
    period: Optional[int]


def advance(state: Any, status: str, occurred: datetime, origin: str,
            group_resolved_at: Optional[datetime] = None) -> Step:
    """``state`` is the stored ``SinkProblem`` row (None before the problem was first seen);
    ``group_resolved_at``: when a recovery of the problem's whole group last ended it, if one did."""
    if status == "firing":
        ended = max((t for t in (state and state.resolved_at, group_resolved_at) if t is not None), default=None)
        if ended is not None and occurred <= ended:
            return Step(None, None)  # it happened before the problem last ended: a late or repeated delivery
        if state is not None and state.open:
            return Step({"last_seen_at": max(state.last_seen_at, occurred)}, state.period)
        period = (state.period if state is not None else 0) + 1
        return Step({"period": period, "open": True, "first_seen_at": occurred, "last_seen_at": occurred}, period)
    if state is None:  # a recovery before any firing: remembered, so that a firing from before it is stale
        return Step({"period": 0, "open": False, "first_seen_at": occurred, "last_seen_at": occurred,
                     "resolved_at": occurred}, None)
    if not state.open:
        return Step({"resolved_at": max(state.resolved_at, occurred)}, None)
    if origin != "manual" and occurred < state.last_seen_at:
        return Step(None, None)  # the problem fired after this recovery (or it ends an earlier period)
    return Step({"open": False, "resolved_at": max(occurred, state.last_seen_at)}, state.period)


# Built once, and the writes run as HotStatements: they run on the ingest path, for every
# alert routed to a tracking sink, where building each statement cost more than running it.
_SINK, _FP = bindparam("sink"), bindparam("fp")
_BY_KEY = (sink_problems.c.sink_name == _SINK, sink_problems.c.fingerprint == _FP)
_STATES = (select(sink_problems)
           .where(sink_problems.c.sink_name == _SINK, sink_problems.c.fingerprint.in_([_FP, bindparam("group_fp")]))
           .order_by(sink_problems.c.fingerprint).with_for_update())
"""A problem's state and its group's, locked in fingerprint order as ``_GROUP_STATES`` locks them."""
_GROUP_STATES = (select(sink_problems)
                 .where(sink_problems.c.sink_name == _SINK, *in_group(sink_problems.c.fingerprint),
                        or_(sink_problems.c.open, sink_problems.c.fingerprint == _FP))
                 .order_by(sink_problems.c.fingerprint).with_for_update())
"""The group's own state and its members' open periods."""
_NEW_STATE = HotStatement(insert(sink_problems))
_CHANGE_STATE = HotStatement(update(sink_problems).where(*_BY_KEY))
_DROP_UNTRIED_REFRESH = HotStatement(delete(deliveries).where(
    deliveries.c.id == ordering.first_pending(_SINK, _FP), deliveries.c.attempts == 0,
    or_(deliveries.c.claimed_until.is_(None), deliveries.c.claimed_until < bindparam("now", type_=UTCDateTime())),
    exists().where(problem_deliveries.c.delivery_id == deliveries.c.id, problem_deliveries.c.refresh),
))
"""A new row for the problem makes its pending refresh needless; one that was tried, or is
held by a dispatcher right now, stays and goes out first.  Only the problem's first pending row
is looked at: a refresh is queued when nothing else of the problem is pending, and every later
row comes after it (looking at them all cost a read of each per webhook: behind a 100,000-row
backlog, most of PostgreSQL's time).  A dead row re-driven meanwhile can come before it; then
the refresh stays and goes out in its turn, one more ALERT of a period still open."""
_QUEUE = HotStatement(insert(deliveries).returning(deliveries.c.id))
_TAG = HotStatement(insert(problem_deliveries))


def queue(conn: Connection, sink_name: str, alert_id: int, alert: Mapping[str, Any], now: datetime) -> None:
    """Queue a stored alert (``alert`` is its row's values) for a tracking sink, if it should get it.

    A recovery that speaks for its whole group (``whole_group``), unless a person's, also ends
    the open period of every member of the group, each with a row under the member's fingerprint.
    """
    fingerprint = alert["fingerprint"]
    prefix = whole_group(fingerprint) if alert["status"] != "firing" and alert["origin"] != "manual" else None
    if prefix is None:
        group = group_fingerprint(fingerprint)
        states = {row.fingerprint: row for row in conn.execute(
            _STATES, {"sink": sink_name, "fp": fingerprint, "group_fp": group})}
        group_state = states.get(group) if group != fingerprint else None
        _take(conn, sink_name, alert_id, alert, fingerprint, states.get(fingerprint), now,
              group_state.resolved_at if group_state is not None else None)
        return
    states = conn.execute(_GROUP_STATES, {"sink": sink_name, "fp": fingerprint, **group_bounds(prefix)}).all()
    _take(conn, sink_name, alert_id, alert, fingerprint,
          next((row for row in states if row.fingerprint == fingerprint), None), now)
    for member in states:
        if member.fingerprint != fingerprint:
            _take(conn, sink_name, alert_id, alert, member.fingerprint, member, now)


def _take(conn: Connection, sink_name: str, alert_id: int, alert: Mapping[str, Any], fingerprint: str,
          state: Any, now: datetime, group_resolved_at: Optional[datetime] = None) -> None:
    """Apply the alert to the problem ``fingerprint`` (its stored ``state``), and queue a row of it,
    keyed and ordered by that fingerprint, if the sink gets it."""
    key = {"sink": sink_name, "fp": fingerprint}
    step = advance(state, alert["status"], alert["occurred_at"], alert["origin"], group_resolved_at)
    if step.changes is not None and state is None:
        _NEW_STATE.run(conn, {"sink_name": sink_name, "fingerprint": fingerprint, **step.changes})
    elif step.changes is not None:
        _CHANGE_STATE.run(conn, {**key, **step.changes})
    if step.period is not None:
        if _DROP_UNTRIED_REFRESH.run(conn, {**key, "now": now}):
            ordering.UNBLOCK_NEXT.run(conn, {"sink": sink_name, "key": fingerprint})
        _insert(conn, alert_id, sink_name, fingerprint, Period(step.period, False), now)


def _insert(conn: Connection, alert_id: int, sink_name: str, fingerprint: str, period: Period,
            due: datetime, now: Optional[datetime] = None) -> None:
    delivery_id = _QUEUE.scalar(conn, dict(
        alert_id=alert_id, sink_name=sink_name, ordering_key=fingerprint, status="pending", attempts=0,
        next_attempt_at=due, created_at=now or due,
    ))
    _TAG.run(conn, {"delivery_id": delivery_id, "period": period.number, "refresh": period.refresh})


_PERIODS = select(problem_deliveries).where(one_of(problem_deliveries.c.delivery_id, "ids"))


def periods(engine: Engine, delivery_ids: Iterable[int]) -> dict[int, Period]:
    """The periods of a claimed batch's rows, in one query (rows queued before tracking have none)."""
    with reading(engine) as conn:
        found = conn.execute(_PERIODS, {"ids": sorted(set(delivery_ids))})
        return {row.delivery_id: Period(row.period, row.refresh) for row in found}


_BATCH_PROBLEMS = (sink_problems.c.sink_name == _SINK, one_of(sink_problems.c.fingerprint, "fps"))
_LOCK_FOLLOWED_UP = (select(sink_problems.c.fingerprint).where(*_BATCH_PROBLEMS)
                     .order_by(sink_problems.c.fingerprint).with_for_update())
"""A delivered batch's problems locked in fingerprint order, as ingest locks them.  PostgreSQL only:
SQLite's one writer already keeps ingest out."""
_FOLLOWED_UP = (select(sink_problems.c.fingerprint, sink_problems.c.open, sink_problems.c.period,
                       ordering.first_pending(sink_problems.c.sink_name, sink_problems.c.fingerprint).label("queued"))
                .where(*_BATCH_PROBLEMS))
"""The states of a batch's problems, each with its first pending row (``queued``; the batch's own rows
have just ended).  Read in a statement after the lock, not in the locking one: PostgreSQL's READ
COMMITTED reads other tables as of the statement's start, so a locking read that waited for an
ingest to commit saw the problem's state but not the row that ingest queued, and queued a refresh
after it.  The next webhook's row then waited behind that refresh for ``refresh_interval``
(bench/outbox.py found one 5 minutes late)."""


def follow_up(conn: Connection, sink: SinkType, delivered: list[tuple[Delivery, datetime]]) -> None:
    """After a batch's firing rows were delivered (each with when): queue each one's refresh, if the
    sink refreshes and its period is still open with nothing queued after it (a later row refreshes
    in its turn).  A batch holds one row per problem; its problems are read in one query."""
    interval = sink.refresh_interval()
    firing = [(delivery, now) for delivery, now in delivered if delivery.alert.status == "firing"]
    if interval is None or not firing:
        return
    params = {"sink": sink.name, "fps": [delivery.fingerprint for delivery, _ in firing]}
    if conn.dialect.name == "postgresql":
        conn.execute(_LOCK_FOLLOWED_UP, params)
    states = {row.fingerprint: row for row in conn.execute(_FOLLOWED_UP, params)}
    for delivery, now in firing:
        state = states.get(delivery.fingerprint)
        if state is None or not state.open or state.period != delivery.period or state.queued is not None:
            continue
        _insert(conn, delivery.alert.id, sink.name, delivery.fingerprint, Period(delivery.period, True),
                now + timedelta(seconds=interval), now)
