"""A text search is served by a walk of the sort order (a broad ``q``) or by the trigram indexes
(a narrow one), chosen per request (``gateway.incidents.search``).  Both must give exactly what the
indexes alone gave before the walk existed: the same incidents, in the same order, on every page,
for every sort, filter, cursor and page size.  ``WALK_PROBE`` is lowered so that on a few dozen
incidents some pages are walked and some are not; at 0 no walk ever fills a page, which is the
search as it was.
"""
from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest
from sqlalchemy import event, insert

from gateway.incidents import search
from gateway.incidents.api import SORTS, after, beyond, cursor_after, incident_order, incident_query, sort_order
from gateway.store.models import Incident, TimelineEntry
from gateway.testing import admin_client
from gateway.views import capped_count

CONFIG = """
sources:
  - {key: src-a, type: testsrc}
  - {key: src-b, type: testsrc}
sinks:
  - {name: itms, type: itms}
route: {sinks: [itms]}
"""
COUNT = 48
QUERIES = ["cpu", "CPU high", "host-1", "looked", "db-", "50%_", "o", "zzz"]
"""Broad (most incidents), a title's words, a narrower one, a comment's word alone, another
title, LIKE's wildcards as text, fewer than three characters (no trigram), none at all."""
FILTERS = [{}, {"status": "triggered"}, {"severity": "critical", "source": "src-b"}]


def incident_text(n: int) -> tuple[str, str, str]:
    """(title, description, resource name) of incident ``n``: two in three about CPU, some with
    the word only in their description, the rest about disks."""
    if n % 3 == 2:
        return f"Disk full on db-{n}", "cpu fine" if n % 9 == 2 else "", f"db-{n}"
    return (f"CPU high on host-{n}", "", f"host-{n}") if n % 5 else ("Load high", f"cpu at 50%_{n}", f"host-{n}")


@pytest.fixture
def listed(make_app):
    """(the app, the API client): COUNT incidents with ties in every sort's column (times, counts,
    severities), a comment on every fourth ("looked at ..."), stored as the webhooks would."""
    app = make_app(CONFIG)
    start = datetime(2026, 11, 1, tzinfo=timezone.utc)
    with app.extensions["gateway"].engine.begin() as conn:
        for n in range(1, COUNT + 1):
            title, description, resource = incident_text(n)
            at = start + timedelta(minutes=n // 3)  # three incidents share each time
            conn.execute(insert(Incident.__table__), dict(
                id=n, fingerprint=f"fp-{n}", source_key=("src-a", "src-b")[n % 2], source_type="testsrc",
                title=title, description=description, severity=("critical", "error", "warning")[n % 3],
                status=("triggered", "acknowledged")[n % 7 == 0], resource_id=f"r-{n}", resource_name=resource,
                resource_type="server", event_count=n % 4 + 1, first_seen_at=at, last_seen_at=at,
                created_at=start + timedelta(minutes=n), last_event_at=at))
            if n % 4 == 0:
                conn.execute(insert(TimelineEntry.__table__), dict(
                    incident_id=n, kind="commented", actor="kim", at=at, note=f"looked at it, {n}"))
            conn.execute(insert(TimelineEntry.__table__), dict(
                incident_id=n, kind="status_changed", actor="kim", at=at, note="looked cpu"))  # not a comment
    return app, admin_client(app)


def every_page(api, args: dict) -> list[tuple]:
    """Every page of ``args``'s list, by ``page`` and by ``cursor``: (how, ids, total)."""
    pages, page = [], 1
    while True:
        answer = api.get("/api/incidents", query_string={**args, "page": page})
        assert answer.status_code == 200, answer.json
        pages.append((f"page {page}", [item["id"] for item in answer.json["items"]], answer.json["total"]))
        if not answer.json["items"]:
            break
        page += 1
    first = api.get("/api/incidents", query_string=args).json
    cursor, n = first["next_cursor"], 1
    while cursor:
        answer = api.get("/api/incidents", query_string={**args, "cursor": cursor}).json
        pages.append((f"cursor {n}", [item["id"] for item in answer["items"]], answer["total"]))
        cursor, n = answer["next_cursor"], n + 1
    return pages


def test_the_walk_and_the_indexes_give_the_same_pages(listed, monkeypatch):
    app, api = listed
    sent = []
    event.listen(app.extensions["gateway"].engine, "before_cursor_execute",
                 lambda conn, cursor, statement, *_: sent.append(statement))
    cases = [{"q": q, "sort": sort, "per_page": per_page, **filters}
             for q in QUERIES for sort in SORTS for filters in FILTERS for per_page in (5,)]
    monkeypatch.setattr(search, "WALK_PROBE", 0)  # never walked: the search as it was
    before = {i: every_page(api, case) for i, case in enumerate(cases)}
    assert sum(len(ids) for pages in before.values() for _, ids, _ in pages) > 2_000  # not a comparison of empties
    walked = 0
    for probe in (20, 40, 10_000):  # a first look at 2 and 4 incidents, then the window
        monkeypatch.setattr(search, "WALK_PROBE", probe)
        sent.clear()
        differences = {}
        for i, case in enumerate(cases):
            now = every_page(api, case)
            ids = lambda pages: [(how, ids) for how, ids, _ in pages]  # noqa: E731
            if ids(now) != ids(before[i]):
                differences[str(case)] = (ids(now), ids(before[i]))
            for (how, _, total), (_, _, expected) in zip(now, before[i]):
                # A broad search is not counted (None) unless the filters leave fewer than WALK_PROBE.
                if total != expected and total is not None:
                    differences[f"{case}, {how}: total"] = (total, expected)
        assert differences == {}, (probe, differences)
        walked += sum("walked" in statement for statement in sent)
        narrowed = sum(") AS matched" in statement for statement in sent)  # search.matching's subquery
        assert narrowed > 0 if probe < 10_000 else narrowed == 0, probe
    assert walked > 1_000


def test_a_broad_search_is_counted_only_where_the_walk_saw_every_incident(listed, monkeypatch):
    """More incidents than WALK_PROBE and a page found among the first: not counted.  Filters that
    leave fewer: every match counted.  A narrow search: counted from the indexes, as always."""
    _, api = listed
    monkeypatch.setattr(search, "WALK_PROBE", 20)
    total = lambda **args: api.get("/api/incidents", query_string={"per_page": 5, **args}).json["total"]  # noqa: E731
    holding = lambda q, **only: [n for n in range(1, COUNT + 1) if holds(n, q) and all(  # noqa: E731
        ("triggered", "acknowledged")[n % 7 == 0] == only[name] for name in only)]
    assert len(holding("cpu")) > 20 and len(holding("cpu", status="acknowledged")) < 20
    assert (total(q="cpu"), total(q="cpu", status="acknowledged"), total(q="host-1")) == (
        None, len(holding("cpu", status="acknowledged")), len(holding("host-1")))
    monkeypatch.setattr(search, "WALK_PROBE", COUNT + 1)
    assert total(q="cpu") == len(holding("cpu"))


@pytest.mark.parametrize("cap", [3, 7, 10_000])
def test_the_indexes_page_and_count_from_one_read_as_from_two(listed, monkeypatch, cap):
    """The indexes' page and total come from one read of the matches' ids (``counted_page``): the
    same rows and total as the page's own read and ``capped_count``, on every page, past the cap too."""
    app, _ = listed
    monkeypatch.setattr(search, "WALK_PROBE", 0)
    monkeypatch.setattr("gateway.web.common.COUNT_CAP", cap)
    engine = app.extensions["gateway"].engine
    dialect, compared = engine.dialect.name, 0
    with engine.connect() as conn:
        for q in QUERIES:
            for sort in SORTS:
                plain = incident_query({}).where(search.holds(q, Incident)).order_by(*incident_order({"sort": sort}))
                total = capped_count(conn, plain)
                for offset in range(0, COUNT + 5, 5):
                    rows, counted = search.read(conn, incident_query({}), incident_order({"sort": sort}), q, dialect, limit=5,
                                                offset=offset, count=True)
                    expected = conn.execute(plain.limit(5).offset(offset)).all()
                    assert ([tuple(r) for r in rows], counted) == ([tuple(r) for r in expected], total), (q, sort)
                    compared += len(rows)
    assert compared > 500


def holds(n: int, q: str) -> bool:
    """Whether incident ``n`` holds ``q`` in one of its columns or its comment, case aside."""
    texts = [*incident_text(n), f"looked at it, {n}" if n % 4 == 0 else ""]
    return any(q.lower() in t.lower() for t in texts)


def test_the_console_pages_back_and_forth_alike_both_ways(listed, monkeypatch):
    """The console's reads (PER_PAGE + 1 rows, Previous read backward from a cursor) through both ways."""
    app, _ = listed
    engine = app.extensions["gateway"].engine

    def pages(sort: str, q: str) -> list:
        found, order = [], sort_order(sort)
        with engine.connect() as conn:
            everything, _ = search.read(conn, incident_query({}), order, q, engine.dialect.name, limit=COUNT)
            ids = [row.id for row in everything]
            for at, row in enumerate(everything):
                ahead, ahead_parts = beyond(incident_query({}), (), after(sort, cursor_after(sort, row)))
                behind, behind_parts = beyond(incident_query({}), (), after(sort, cursor_after(sort, row), before=True))
                found.append([r.id for r in search.read(conn, ahead, order, q, engine.dialect.name, limit=5,
                                                        parts=ahead_parts)[0]])
                found.append([r.id for r in search.read(conn, behind, sort_order(sort, backward=True), q,
                                                        engine.dialect.name, limit=5, parts=behind_parts)[0]])
                assert found[-2:] == [ids[at + 1:at + 6], ids[max(at - 5, 0):at][::-1]], (sort, q, at)
        return found

    for sort in SORTS:
        for q in ("cpu", "looked", "host-1"):
            monkeypatch.setattr(search, "WALK_PROBE", 0)
            before = pages(sort, q)
            monkeypatch.setattr(search, "WALK_PROBE", 8)
            assert pages(sort, q) == before and any(before), (sort, q)


@pytest.mark.parametrize("path", ["/api/incidents?q=cpu&cursor=bm90IGEgY3Vyc29y",
                                  "/api/incidents?q=cpu&sort=severity&cursor=WzcsIDJd"])
def test_a_bad_cursor_is_refused_before_any_read(listed, path):
    app, api = listed
    sent = []
    engine = app.extensions["gateway"].engine
    catch = lambda conn, cursor, statement, *_: sent.append(statement)  # noqa: E731
    event.listen(engine, "before_cursor_execute", catch)
    try:
        answer = api.get(path)
    finally:
        event.remove(engine, "before_cursor_execute", catch)
    assert (answer.status_code, answer.json["error"]["code"]) == (400, "bad_cursor")
    assert [s for s in sent if "incidents" in s] == []
    assert api.get("/api/incidents?q=cpu").status_code == 200  # the same catch sees a good request's reads
