"""Refused webhook requests: kept per source, the newest ``global.keep_refused``, and listed with
the accepted ones as a source's requests, and counted with them for the sources page's last day."""
from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any, Mapping, Optional

from sqlalchemy import Connection, Engine, Select, String, delete, func, insert, literal, null, select, union_all

from gateway.store import partitions
from gateway.store.db import run_in_transaction
from gateway.store.models import Handshake, RawRequest, RefusedRequest, utcnow

refused = RefusedRequest.__table__
OUTCOMES = ("accepted", "refused")


def keep(engine: Engine, limit: int, values: Mapping[str, Any]) -> None:
    """Store one refused request, and drop its source's oldest beyond ``limit``, in one transaction."""
    if limit <= 0:
        return

    def work(conn) -> None:
        conn.execute(insert(refused).values(values))
        oldest_kept = (select(refused.c.id).where(refused.c.source_key == values["source_key"])
                       .order_by(refused.c.id.desc()).limit(1).offset(limit - 1).scalar_subquery())
        conn.execute(delete(refused).where(refused.c.source_key == values["source_key"],
                                           refused.c.id < oldest_kept))

    run_in_transaction(engine, work)


def newest_first(columns) -> tuple:
    """The order of the journal's lists (``columns``: a table's, a model's or a subquery's), newest
    first: a source's walks its (source, received_at, id) index, the whole journal its received_at
    one (with SQLite's rowid, or PostgreSQL's per-day partitions)."""
    return columns.received_at.desc(), columns.id.desc()


def requests_of(source_key: str, outcome: Optional[str], *, newest: Optional[int] = None,
                since: Optional[datetime] = None) -> Select:
    """A source's stored requests, newest first, with who sent them: ``outcome`` "accepted" (the raw
    journal; a handshake with the status it was answered), "refused", or None for both; those
    received from ``since`` on, if given.  With ``newest``, only the newest that many of each
    outcome, walked along its source's index: all a page within them needs, where the merge of
    both would otherwise sort the source's every request."""
    def newest_of(table, *columns: str) -> Select:
        query = select(*(table.c[name] for name in ("id", "received_at", "remote_addr", *columns)))
        query = partitions.received_since(query.where(table.c.source_key == source_key), since, table.c.received_at)
        if newest is not None:
            query = query.order_by(*newest_first(table.c)).limit(newest)
        return query.subquery(f"newest_{table.name}")

    raw = newest_of(RawRequest.__table__, "alert_count")
    accepted = (select(literal("accepted").label("outcome"), raw.c.id,
                       func.coalesce(Handshake.status, 202).label("status"), null().label("code"),
                       null().label("message"), raw.c.alert_count, raw.c.received_at, raw.c.remote_addr)
                .select_from(raw.outerjoin(Handshake.__table__, Handshake.raw_request_id == raw.c.id)))
    kept = newest_of(refused, "status", "code", "message")
    rejected = select(literal("refused").label("outcome"), kept.c.id, kept.c.status, kept.c.code,
                      kept.c.message, literal(0).label("alert_count"), kept.c.received_at, kept.c.remote_addr)
    chosen = {"accepted": [accepted], "refused": [rejected], None: [accepted, rejected]}[outcome]
    both = union_all(*chosen).subquery()
    return select(both).order_by(*newest_first(both.c))


def counted_requests(source_key: str, outcome: Optional[str], since: Optional[datetime]) -> Select:
    """``requests_of``'s requests in no order, to count: each outcome's part is a range of its
    source's index already, where in order the union's every row in the span would be sorted."""
    return requests_of(source_key, outcome, since=since).order_by(None)


def last_day(conn: Connection, keys: list[str], cap: int) -> dict[str, dict]:
    """Per source key: its "accepted" and "refused" requests of the last 24 h, each counted up to
    ``cap`` (None past it), and when its "last" request came (None if it never sent one).

    One statement a table for every source, each source's part a range of its (source_key,
    received_at) index: on PostgreSQL, in the day partitions the day spans.  Only the sources
    silent all day look further back, in one more (on PostgreSQL, in the longer recent spans
    first, then through every day: about 5 ms a silent source over a year of days here)."""
    now = utcnow()
    day = now - timedelta(hours=24)
    further = [now - span for span in partitions.RECENT_SPANS[1:]] if partitions.is_partitioned(conn) else []
    stats: dict[str, dict] = {key: {"last": None} for key in keys}
    for table, kind in ((RawRequest.__table__, "accepted"), (refused, "refused")):
        def newest(listed, since: Optional[datetime]) -> Select:
            received = select(table.c.received_at).where(table.c.source_key == listed.c.key)
            received = partitions.received_since(received, since, table.c.received_at)
            return received.order_by(table.c.received_at.desc()).correlate(listed)

        def counted(listed):
            return select(func.count()).select_from(newest(listed, day).limit(cap + 1).subquery()).scalar_subquery()

        def last_since(since: Optional[datetime]):
            return lambda listed: newest(listed, since).limit(1).scalar_subquery()

        lasts = {}
        for key, count, last in _per_source(conn, keys, counted, last_since(day)):
            stats[key][kind], lasts[key] = (count if count <= cap else None), last
        for since in (*further, None):
            silent = [key for key, last in lasts.items() if last is None]
            lasts.update(_per_source(conn, silent, last_since(since)))
        for key, last in lasts.items():
            stats[key]["last"] = max(filter(None, (stats[key]["last"], last)), default=None)
    return stats


def _per_source(conn: Connection, keys: list[str], *columns) -> list[tuple]:
    """A row per key: the key, then each of ``columns`` made for the listed key (a correlated subquery)."""
    if not keys:
        return []
    # Each key a SELECT: SQLite cannot name a VALUES list's columns.
    listed = union_all(*(select(literal(key, String).label("key")) for key in keys)).subquery("listed")
    return [tuple(row) for row in conn.execute(select(listed.c.key, *(column(listed) for column in columns)))]


def raw_url(outcome: str, request_id: int) -> str:
    return f"/api/events/{request_id}/raw" if outcome == "accepted" else f"/api/refused/{request_id}/raw"
