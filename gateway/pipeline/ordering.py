"""Per-key order in the outbox: within a sink, a row waits while an earlier row of its ordering
key (the problem's fingerprint) is still pending, so a recovery never overtakes its alert.

The claim decides it for each row it looks at (``first_pending_of_key``); that alone is always
right.  What makes it cheap is ``blocked``: rows the dispatcher has found waiting are marked so
(``block_followers``) and the claim does not look at them again, so its cost follows the rows
that can go, not the backlog behind an outage.  Whoever ends a pending row (delivered, dead,
or an untried refresh dropped) unblocks the next pending row of its key (``UNBLOCK_NEXT``), so
a chain of blocked rows moves on one row at a time.

A row is blocked only while the row it waits for is locked against ending (``FOR SHARE`` on
PostgreSQL; SQLite's one writer), so the row that unblocks it always sees the mark: no row is
left blocked with nothing ahead of it.  Rows queued after a pass wait unblocked (the claim
checks them) until the next pass.
"""
from __future__ import annotations

from datetime import datetime

from sqlalchemy import Connection, bindparam, func, literal_column, select, update
from sqlalchemy.orm import aliased

from gateway.store.db import HotStatement
from gateway.store.lists import one_of
from gateway.store.models import DeliveryRow

deliveries = DeliveryRow.__table__
PENDING = literal_column("'pending'")
"""The status as literal SQL: the partial indexes of pending rows are defined by it, and a
prepared statement's generic plan can use them only if the query names it the same way."""
UNBLOCKED = literal_column("false")
"""``blocked``'s value in the claimable rows' index predicate, named the same way for the same reason."""
BLOCK_BATCH = 2000
"""Rows blocked per pass at most: one short transaction, however deep the backlog."""


def first_pending(sink, key):
    """The id of the earliest pending row of (``sink``, ``key``): one descent of the partial index.

    A correlated MIN, not NOT EXISTS: the planner may turn an anti-join into a scan of every
    pending row per candidate (on a table without statistics it did: 4,000 pending rows cost
    2 s), while a MIN under a correlated subquery is always one descent of the partial index.
    """
    earlier = aliased(DeliveryRow)
    return (select(func.min(earlier.id))
            .where(earlier.sink_name == sink, earlier.ordering_key == key, earlier.status == PENDING)
            .scalar_subquery())


def first_pending_of_key(sink_name: str):
    """The id of the earliest pending row of the outer query's row's ordering key in this sink."""
    return first_pending(sink_name, DeliveryRow.ordering_key)


UNBLOCK_NEXT = HotStatement(update(deliveries)
                            .where(deliveries.c.id == first_pending(bindparam("sink"), bindparam("key")),
                                   deliveries.c.blocked)
                            .values(blocked=False))
"""Unblock the earliest pending row of (``sink``, ``key``); run after a pending row of it ended."""


def due_rows(sink, due, *conditions):
    """The ids of a sink's pending, unblocked rows due by ``due`` that meet ``conditions``, the
    longest due first: the walk of the claimable rows' index that the claim and the pass share."""
    return (select(DeliveryRow.id)
            .where(DeliveryRow.sink_name == sink, DeliveryRow.status == PENDING,
                   DeliveryRow.blocked == UNBLOCKED, DeliveryRow.next_attempt_at <= due, *conditions)
            .order_by(DeliveryRow.next_attempt_at, DeliveryRow.id))


def _waiting(sink_name, now):
    """The ids of up to ``BLOCK_BATCH`` due rows of the sink behind an earlier pending row of their key."""
    return due_rows(sink_name, now, DeliveryRow.id > first_pending_of_key(sink_name)).limit(BLOCK_BATCH)


_BLOCK_WAITING_SQLITE = HotStatement(
    update(deliveries)
    .where(deliveries.c.id.in_(_waiting(bindparam("sink"), bindparam("now"))))
    .values(blocked=True))
"""SQLite's pass in one statement of fixed text: a transaction there holds the one writer lock, so no
row ends meanwhile and none needs locking.  Marking by a list of ids instead made every pass a
statement of its own length (up to 2,000 parameters), and the sqlite3 module keeps the last 128
prepared per connection: SQLite's memory grew by 20 MiB while 90,000 rows queued behind an outage
(bench/HISTORY.md, "Session 12")."""


_PENDING_AMONG = (one_of(DeliveryRow.id, "ids"), DeliveryRow.status == PENDING)
_LOCK_HEADS = select(DeliveryRow.id).where(*_PENDING_AMONG).with_for_update(read=True, skip_locked=True)
"""PostgreSQL: lock the rows others wait for against ending, those still pending and not being ended."""
_BLOCK = (update(deliveries)
          .where(deliveries.c.id.in_(select(DeliveryRow.id).where(*_PENDING_AMONG)
                                     .with_for_update(skip_locked=True)  # a row another pass is marking is that pass's
                                     .scalar_subquery()))
          .values(blocked=True))
"""PostgreSQL: mark the listed rows blocked."""


def block_followers(conn: Connection, sink_name: str, now: datetime) -> int:
    """Mark up to ``BLOCK_BATCH`` due rows of a sink that wait behind an earlier pending row of
    their key; how many were marked.

    The rows they wait for are locked first and only rows behind a locked, still pending one
    are marked: one ended meanwhile is not locked (``SKIP LOCKED``, or no longer pending), and
    one that ends later sees the mark when it unblocks its next.
    """
    if conn.dialect.name == "sqlite":
        return _BLOCK_WAITING_SQLITE.run(conn, {"sink": sink_name, "now": now})
    waiting = conn.execute(_waiting(sink_name, now).add_columns(first_pending_of_key(sink_name).label("head"))).all()
    if not waiting:
        return 0
    locked = conn.execute(_LOCK_HEADS, {"ids": sorted({row.head for row in waiting})}).scalars().all()
    held = set(locked)
    ids = [row.id for row in waiting if row.head in held]
    if not ids:
        return 0
    return conn.execute(_BLOCK, {"ids": ids}).rowcount
