"""The incident list's text search (``q``), read one of two ways, chosen per request.

A narrow search (few matches) is read from the trigram indexes: the incidents that hold ``q``,
sorted, then their page.  A broad one (a word most incidents hold) is not: the indexes give hundreds of
thousands of ids, all fetched and sorted for one page (3.6 s at a million incidents).  Its page
is found sooner by walking the list's sort order and testing each incident's text, as the list
without ``q`` walks it.  Which one a search is, the walk itself tells: it reads at most
``WALK_PROBE`` incidents, and if it has not filled the page by then, the indexes serve it.
Both ways find the same incidents in the same order (tests/test_search_paths.py).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Sequence

from sqlalchemy import ColumnElement, Connection, Select, String, func, literal_column, not_, or_, select, text, union_all
from sqlalchemy.sql.util import ClauseAdapter

from gateway.store.models import COMMENTS_SQL, INCIDENT_TEXT, Incident, TimelineEntry, comments_search, incidents_search
from gateway.views import capped_count, counted_page

WALK_PROBE = 2_000
"""The most incidents a walk reads before it hands the search to the indexes.  A page of 50 in
2,000 is a search that one incident in 40 holds: the walk then reads ~40 rows a page match, far
fewer than the indexes give.  A narrower one reads a tenth of it (``read``) before its index read."""


def _pattern(q: str) -> str:
    """``q`` as an ILIKE pattern, escaped: "100%" finds that text rather than acting as a wildcard."""
    return "%" + q.replace("/", "//").replace("%", "/%").replace("_", "/_") + "%"


def holds(q: str, incident) -> object:
    """Whether the row ``incident`` (the table's columns, or a subquery's) holds ``q``, case aside,
    in its title, description, resource name or a comment: the search's one definition, which
    the indexes of ``matching`` only narrow down to."""
    pattern = _pattern(q)
    # OFFSET 0: PostgreSQL would otherwise hash every comment that holds q, once, before the first
    # row (a million comments for a word they all hold); a walk asks only about its own incidents.
    comment = select(literal_column("1")).where(
        TimelineEntry.incident_id == incident.id, text(COMMENTS_SQL),
        TimelineEntry.note.ilike(pattern, escape="/")).offset(0).exists()
    return or_(*(column.ilike(pattern, escape="/") for column in (
        incident.title, incident.description, incident.resource_name)), comment)


def matching(q: str, dialect: str, query: Select):
    """``query``'s incidents that hold ``q`` (``holds``), read from the trigram indexes, as a subquery
    in no order: two disjoint parts, UNION ALL.  Those whose own text holds ``q`` are read from the
    incidents' index with their columns; those only a comment holds, from the comments' index, by id.
    Not the ids of both united and the incidents then read by them: PostgreSQL joined those ids
    with a whole index of the incidents (a third of a second for 111,112 of a million).

    On PostgreSQL, pg_trgm's serve an ILIKE: for the incidents, the one on their three columns
    joined (``INCIDENT_TEXT``, 0016), a superset again.  On SQLite, the FTS5 trigram tables (0015)
    give the rows that hold ``q``'s every three characters in a row, case folded, a superset of the
    ILIKE's; the ILIKE then keeps exactly the rows it always found.  The index cannot serve fewer
    than three characters: such a search reads every row, as before.
    """
    pattern = _pattern(q)
    own = or_(*(column.ilike(pattern, escape="/") for column in (
        Incident.title, Incident.description, Incident.resource_name)))
    found = [own]
    comments = [TimelineEntry.kind == "commented", TimelineEntry.note.ilike(pattern, escape="/")]
    if dialect == "postgresql":
        found.append(literal_column(f"({INCIDENT_TEXT})", String()).ilike(pattern, escape="/"))
    elif dialect == "sqlite" and len(q) >= 3:
        # One FTS5 string: its text is taken whole, quotes doubled, never as query syntax.
        phrase = '"' + q.replace('"', '""') + '"'
        found.append(Incident.id.in_(select(incidents_search.c.rowid).where(
            literal_column(incidents_search.name).match(phrase))))
        comments.append(TimelineEntry.id.in_(select(comments_search.c.rowid).where(
            literal_column(comments_search.name).match(phrase))))
    commented = select(TimelineEntry.incident_id).where(*comments)
    # The three columns are never NULL (models), so NOT own is exactly the rows the first part left.
    return union_all(query.where(*found), query.where(Incident.id.in_(commented), not_(own))).subquery("matched")


@dataclass(frozen=True)
class Part:
    """One walk of a merged read (``ordered``): the incidents ``where`` holds, read in ``order`` where
    the condition fixes the sort's leading term (SQLite sorts the rows an index expression fixed by ==
    gives, rather than see that the expression orders nothing), else in the read's own."""

    where: ColumnElement
    order: tuple = ()


def ordered(query: Select, order: Sequence, *, limit: int, offset: int = 0, parts: Sequence[Part] = ()) -> Select:
    """``limit`` rows from ``offset`` of ``query`` in ``order``.  With ``parts`` (each a ``Part``; together
    they split ``query``'s incidents, none left out), each part's first ``offset + limit``
    are read on their own and merged: an index serves each part's walk (one that leads with the
    status, for a part per status; a range of it, for each side of a cursor), and none the whole."""
    if not parts:
        return query.order_by(*order).limit(limit).offset(offset)
    walks = (select(query.where(part.where).order_by(*(part.order or order)).limit(offset + limit).subquery())
             for part in parts)
    merged = union_all(*walks).subquery("merged")
    return select(merged).order_by(*(ClauseAdapter(merged).traverse(term) for term in order)).limit(limit).offset(offset)


def read(conn: Connection, query: Select, order: Sequence, q: Optional[str], dialect: str, *, limit: int,
         offset: int = 0, count: bool = False, parts: Sequence = ()) -> tuple[list, Optional[int]]:
    """(``limit`` rows from ``offset`` of ``query``'s incidents that hold ``q``, in ``order``;
    with ``count``, how many hold it: up to ``COUNT_CAP``, None past it or when not counted).

    ``query`` is the list's filters and cursor without an order; ``parts``, as ``ordered`` reads
    them (a narrow search's few matches are sorted whole).  A walk that fills the page
    within WALK_PROBE incidents serves it; so does one that read every incident the filters
    leave.  Otherwise the indexes (``matching``) do, and at once when the window's first tenth
    held too few matches to promise the page.  A broad search's
    matches are not counted (None) unless the filters leave fewer than WALK_PROBE incidents:
    counting them would read every match, what the walk is there to avoid.
    """
    if not q:
        rows = conn.execute(ordered(query, order, limit=limit, offset=offset, parts=parts)).all()
        return rows, capped_count(conn, query) if count else None
    # A tenth of the window first: a narrow search stops there (no match, or too few to promise the
    # page within the window) and pays a tenth of the walk before the indexes serve it.
    needed = offset + limit
    for size in (WALK_PROBE // 10, WALK_PROBE):
        rows, whole = _walk(conn, query, order, parts, q, dialect, size, limit, offset)
        if len(rows) == limit or whole:
            total = None
            if count and (whole or _fewer(conn, query, order, parts, WALK_PROBE)):
                window = ordered(query, order, limit=WALK_PROBE, parts=parts).subquery("walked")
                total = conn.execute(select(func.count()).select_from(window).where(holds(q, window.c))).scalar_one()
            return rows, total
        if (offset + len(rows) if rows else 0) * WALK_PROBE < needed * size:
            break  # the density seen would not fill the page within the window
    matched = matching(q, dialect, query)
    narrow = select(matched).order_by(*(ClauseAdapter(matched).traverse(term) for term in order))
    if count:  # the matches found once for both (each read would find them all)
        return counted_page(conn, narrow, matched.c.id, limit=limit, offset=offset, rows_from=Incident.__table__)
    return conn.execute(narrow.limit(limit).offset(offset)).all(), None


def _fewer(conn: Connection, query: Select, order: Sequence, parts: Sequence, size: int) -> bool:
    """Whether ``query`` selects fewer than ``size`` incidents: its walk's window, counted.  In the
    sort's order, so the planner reads it as the walk does (an index, up to the LIMIT)."""
    # The ids alone, unless parts' walks are merged: the merge sorts on the sort's columns.
    columns = query if parts else query.with_only_columns(Incident.id)
    counted = ordered(columns, order, limit=size, parts=parts).subquery("walked")
    return conn.execute(select(func.count()).select_from(counted)).scalar_one() < size


def _walk(conn: Connection, query: Select, order: Sequence, parts: Sequence, q: str, dialect: str, size: int,
          limit: int, offset: int) -> tuple[list, bool]:
    """(the page of ``query``'s first ``size`` incidents in ``order`` that hold ``q``, whether
    those were all of them).  The window's LIMIT keeps the planner on the sort's index (the
    trigram indexes cannot serve it) and bounds the walk, which stops once the page is full."""
    window = ordered(query, order, limit=size, parts=parts).subquery("walked")
    walked = select(window).where(holds(q, window.c))
    if dialect != "sqlite":
        # PostgreSQL knows the window's rows come in this order, and sorts nothing.  SQLite does
        # not: it would test all of them and sort the matches.  Without the ORDER BY, it reads
        # the window's rows in the window's order (a co-routine) and stops at the page.
        walked = walked.order_by(*(ClauseAdapter(window).traverse(term) for term in order))
    rows = conn.execute(walked.limit(limit).offset(offset)).all()
    return rows, len(rows) < limit and _fewer(conn, query, order, parts, size)
