"""The raw journal on PostgreSQL: ``raw_requests`` is range-partitioned by ``received_at``, one
partition per UTC day, so retention drops a day at a time (``DROP TABLE``: no row deleted, no
dead tuple to vacuum, no index to thin) instead of deleting millions of rows (migration 0012).

Why daily, not weekly: retention keeps whole partitions, so a partition straddling the cutoff
stays until all of it is past; a day bounds that extra keeping to a day (a week would keep up to
a week of webhook bodies beyond ``global.retention``).  A year of retention is ~370 partitions,
which PostgreSQL prunes at plan time for the queries that name a time, and probes one index per
partition for those that do not (an id, a source's newest requests).

Ingest never waits for a partition: ``AHEAD`` days are created in advance (by the migration, by
every scheduled purge and ``gateway purge``, and when a delivering process starts), and a
``DEFAULT`` partition takes any row no day partition covers (the clock past the last one, an old
row loaded by hand).  Creating a day moves that day's rows out of the default partition first,
so a missed creation costs a move later, never a refused webhook.  The purge deletes old rows
from the default partition in batches.

Only the raw journal is partitioned: it holds the bodies, it is what grows fastest (one row per
webhook), and it is what retention removes.  Refused requests are capped per source
(``global.keep_refused``); alerts, incidents, their timelines and deliveries are kept (retention
does not remove them), so partitioning them would buy retention nothing.

A unique index on a partitioned table must include the partition key, so (source, delivery id)
can no longer be unique across the journal: ``lock_delivery_id`` serializes the transactions that
store one id, and the insert stores it only if no row has it (``gateway.pipeline.transaction``).  An id
made of the request's alerts' ids needs no lock: the alerts' unique index serializes its copies.  For
the same reason no foreign key can point at ``raw_requests.id``; alerts and handshakes keep the
id of their request, which retention may have removed since (readers find none: a 404).
"""
from __future__ import annotations

import logging
import re
import time
from contextlib import contextmanager
from datetime import date, datetime, time as day_start, timedelta, timezone
from typing import Callable, Iterator, Optional

from sqlalchemy import Connection, Engine, Select, case, func, select, text
from sqlalchemy.exc import OperationalError
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.sql.expression import ColumnElement

from gateway.store.db import HotStatement, reading
from gateway.store.lists import count_up_to
from gateway.store.models import RawRequest, UTCDateTime, utcnow

log = logging.getLogger(__name__)

TABLE = "raw_requests"
DEFAULT = f"{TABLE}_default"
AHEAD = 7
"""Days of partitions kept ready past today: a week without any purge or start-up before a
webhook lands in the default partition."""
LOCK_TIMEOUT = "500ms"
"""How long creating or dropping a partition waits for its locks before giving up this time (and
trying again): while it waits, webhooks queue behind it, so a long read must not make it wait long."""
LOCK_TRIES = 5
_NAME = re.compile(rf"^{TABLE}_p(\d{{8}})$")
_MAINTENANCE = 0x6761_7465  # advisory lock class ids ("gate", "gatf"): partition work, delivery ids
_DELIVERY_IDS = _MAINTENANCE + 1
_LOCK_DELIVERY_ID = HotStatement(text(f"SELECT pg_advisory_xact_lock({_DELIVERY_IDS}, hashtext(:key))"))


def is_partitioned(conn: Connection) -> bool:
    """Whether the raw journal is partitioned here: on PostgreSQL (from migration 0012 on)."""
    return conn.dialect.name == "postgresql"


RECENT_SPANS = (timedelta(days=1), timedelta(days=8), timedelta(days=64))
"""The spans a newest-first read of the journal tries, shortest first, before the whole journal: a
statement that names no time plans and starts every day partition (40-55 ms to plan a year's), one
that names a span, only its days."""


def recent_since(conn: Connection, read: Callable[[Optional[datetime]], Select], needed: int) -> Optional[datetime]:
    """Where a newest-first read of the journal can start and still hold its first ``needed`` rows:
    the start of the shortest of ``RECENT_SPANS`` ``read(start)`` (the requests received since
    ``start``) has that many rows in, else None (the whole journal, as always on SQLite).  The span's
    rows are exactly the first of the whole read's.  They are counted in ``read``'s own order, if it
    has one: a read of the whole journal counted in none, PostgreSQL read the span's oldest day from
    its start, filtering; a source's read is a range of its index in any order."""
    if not is_partitioned(conn):
        return None
    for span in RECENT_SPANS:
        start = utcnow() - span
        if count_up_to(conn, read(start), needed, in_order=True) >= needed:
            return start
    return None


_GENERIC_PLANS = text("SET LOCAL plan_cache_mode = force_generic_plan")
_CHOSEN_PLANS = text("SET LOCAL plan_cache_mode TO DEFAULT")


@contextmanager
def planned_once(conn: Connection) -> Iterator[None]:
    """Inside, on PostgreSQL, a statement is prepared at its first run and planned generically: for
    reads whose plan costs more than their run.  Planned for its values, a read that names no time
    plans every day partition each time (25-30 ms over a year of days), and the sources page's
    statements plan a correlated read of each span's days per source; a generic plan is made once
    per connection and each run after it prunes at start-up.  Left alone, psycopg prepares a
    statement at its fifth run and PostgreSQL plans it for its values five times more before it
    settles on a generic plan: ten slow reads per pooled connection.

    Not for every read: the journal's page over a recent span, planned generically (without the
    span's start or the page's size), read the last day in 22 ms where its plan for its values took
    under 1 ms (bench/HISTORY.md, "Session 24").  A connection whose preparing was turned off
    (``prepare_threshold=None``, for a pooler in transaction mode) is left as it is."""
    driver = conn.connection.dbapi_connection if is_partitioned(conn) else None
    threshold = getattr(driver, "prepare_threshold", None)
    if threshold is None:
        yield
        return
    conn.execute(_GENERIC_PLANS)
    driver.prepare_threshold = 0
    try:
        yield
    finally:
        driver.prepare_threshold = threshold
    conn.execute(_CHOSEN_PLANS)  # the rest of the transaction plans as before (a failed read rolls it back)


def received_since(query: Select, start: Optional[datetime], received_at=RawRequest.received_at) -> Select:
    """``query`` narrowed to the requests received from ``start`` on (all of them for None)."""
    return query if start is None else query.where(received_at >= start)


_DAY_OF = text("SELECT raw_requests_day_of(:id)")


def find_request(conn: Connection, model, request_id: int, *columns):
    """The journaled request ``request_id`` of ``model`` (``RawRequest`` or ``RefusedRequest``): its
    ``columns`` (all by default), or None.  A stored request on PostgreSQL is read first in the day
    that ``raw_requests_day_of`` (migration 0023) says its id belongs to and that day's neighbours,
    so that three partitions are planned, not the year's; then, if not there, everywhere."""
    query = select(*(columns or model.__table__.c)).where(model.id == request_id)
    if model is RawRequest and is_partitioned(conn):
        day = conn.execute(_DAY_OF, {"id": request_id}).scalar()
        if day is not None:
            near = query.where(RawRequest.received_at >= _start(day - timedelta(days=1)),
                               RawRequest.received_at < _start(day + timedelta(days=2)))
            row = conn.execute(near).first()
            if row is not None:
                return row
    return conn.execute(query).first()


def lock_delivery_id(conn: Connection, source_key: str, external_id: Optional[str]) -> None:
    """Take, until the transaction ends, the lock of this (source, delivery id) on PostgreSQL.

    Taken before anything else the transaction locks, so it cannot be part of a deadlock; a second
    transaction with the same id waits here, then (READ COMMITTED: a new snapshot per statement)
    sees the first one's row and stores nothing.  SQLite needs none: its writers are serialized."""
    if external_id is not None and is_partitioned(conn):
        _LOCK_DELIVERY_ID.run(conn, {"key": f"{source_key}\n{external_id}"})


def is_partition(table_name: str) -> bool:
    """Whether ``table_name`` is one of the raw journal's partitions (the models know only the parent)."""
    return table_name == DEFAULT or _NAME.match(table_name) is not None


def partition_name(day: date) -> str:
    return f"{TABLE}_p{day:%Y%m%d}"


def _start(day: date) -> datetime:
    return datetime.combine(day, day_start(), timezone.utc)


def _bound(day: date) -> str:
    return _start(day).isoformat()


def days(conn: Connection) -> list[date]:
    """The days that have a partition, oldest first."""
    names = conn.execute(text("SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid"
                              " WHERE i.inhparent = to_regclass(:table)"), {"table": TABLE}).scalars()
    return sorted(datetime.strptime(match[1], "%Y%m%d").date() for match in map(_NAME.match, names) if match)


def create(conn: Connection, day: date) -> None:
    """Add ``day``'s partition, moving its rows out of the default partition first (PostgreSQL
    refuses a partition whose rows the default partition holds).  The default partition is locked
    meanwhile, so no row for that day can land there between the move and the attach."""
    name, low, high = partition_name(day), _bound(day), _bound(day + timedelta(days=1))
    conn.execute(text(f'CREATE TABLE "{name}" (LIKE {TABLE} INCLUDING DEFAULTS)'))
    conn.execute(text(f"LOCK TABLE {DEFAULT} IN SHARE ROW EXCLUSIVE MODE"))
    conn.execute(text(f'WITH moved AS (DELETE FROM {DEFAULT} WHERE received_at >= :low AND received_at < :high'
                      f' RETURNING *) INSERT INTO "{name}" SELECT * FROM moved'), {"low": low, "high": high})
    conn.execute(text(f"ALTER TABLE {TABLE} ATTACH PARTITION \"{name}\" FOR VALUES FROM ('{low}') TO ('{high}')"))


def ensure(engine: Engine, first: date, last: date) -> list[date]:
    """Create every missing day partition from ``first`` to ``last`` inclusive; the days created."""
    with reading(engine) as conn:
        have = set(days(conn))
    created = []
    for day in (first + timedelta(days=n) for n in range((last - first).days + 1)):
        if day not in have and _maintain(engine, lambda conn: _create_missing(conn, day)):
            created.append(day)
    if created:
        log.info("partitions: created %s for %s", ", ".join(map(partition_name, created)), TABLE)
    return created


def _create_missing(conn: Connection, day: date) -> bool:
    """``create``, unless another process just did (looked at again under the maintenance lock)."""
    if day in days(conn):
        return False
    create(conn, day)
    return True


def ensure_ahead(engine: Engine, now: Optional[datetime] = None) -> list[date]:
    """Today's partition and the next ``AHEAD`` days' (PostgreSQL; nothing elsewhere)."""
    if engine.dialect.name != "postgresql":
        return []
    today = (now or utcnow()).astimezone(timezone.utc).date()
    return ensure(engine, today, today + timedelta(days=AHEAD))


def drop_before(engine: Engine, cutoff: datetime) -> list[date]:
    """Drop every day partition wholly before ``cutoff`` (its end at or before it); the days dropped.

    All in one statement: dropping a partition locks the whole table (ACCESS EXCLUSIVE, for a
    moment once the transactions under way have ended; webhooks arriving meanwhile wait), so the
    days go together, under one wait instead of one each."""
    with reading(engine) as conn:
        past = [day for day in days(conn) if _start(day + timedelta(days=1)) <= cutoff]
    if past:
        names = ", ".join(f'"{partition_name(day)}"' for day in past)
        _maintain(engine, lambda conn: conn.execute(text(f"DROP TABLE IF EXISTS {names}")))
        log.info("partitions: dropped %s of %s", ", ".join(map(partition_name, past)), TABLE)
    return past


def _maintain(engine: Engine, work):
    """``work`` in a transaction of its own, one maintainer at a time across processes, giving up
    on a lock after ``LOCK_TIMEOUT`` and trying again up to ``LOCK_TRIES`` times."""
    for attempt in range(1, LOCK_TRIES + 1):
        try:
            with engine.begin() as conn:
                conn.execute(text(f"SET LOCAL lock_timeout = '{LOCK_TIMEOUT}'"))
                conn.execute(text(f"SELECT pg_advisory_xact_lock({_MAINTENANCE}, 0)"))
                return work(conn)
        except OperationalError as exc:
            if getattr(exc.orig, "sqlstate", None) != "55P03" or attempt == LOCK_TRIES:
                raise
            log.info("partitions: a lock was busy; trying again (%d of %d)", attempt, LOCK_TRIES)
            time.sleep(0.1 * attempt)


class OldestKept(ColumnElement):
    """When the oldest request the raw journal keeps was received: on PostgreSQL the function of
    migration 0017 (the day partitions oldest first, not ``min()`` over every day), on SQLite ``min()``."""

    inherit_cache = True
    type = UTCDateTime()


@compiles(OldestKept, "postgresql")
def _oldest_kept_postgresql(element, compiler, **kw) -> str:
    return "(SELECT raw_requests_oldest())"  # a subquery: run once per statement, not once per row


@compiles(OldestKept)
def _oldest_kept(element, compiler, **kw) -> str:
    return compiler.process(select(func.min(RawRequest.__table__.c.received_at)).scalar_subquery(), **kw)


def kept_raw_request_id(row_table):
    """``row_table``'s ``raw_request_id`` while that request is kept, else NULL.

    Retention removes the journal oldest first (whole days on PostgreSQL, batches in received order
    on SQLite) and an alert or a handshake is received when its request is, so its request is kept
    exactly when it was received no earlier than the oldest request kept (``OldestKept``): one look
    per query.  A look-up per row by (id, received_at) made PostgreSQL probe every day partition for
    each row: 2.5 s for an incident of 1,000 alerts over a year of days (bench/scale.py).
    """
    return case((row_table.c.received_at >= OldestKept(), row_table.c.raw_request_id)).label("raw_request_id")
