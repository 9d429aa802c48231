"""Every query the incident list (each filter, a search, a deep page), the incident detail and
its timeline, the deliveries and raw requests (events) listings, an alert and the outbox claim run, EXPLAINed on a database large
enough that a scan costs: a full scan of a large table fails the test.

The queries are the ones the app really sends (caught on the engine while the API, the console
and the dispatcher do their work), EXPLAINed with the same parameters.  A full pass over an
index is not a table scan, nor is a scan of an empty or small partition (the raw journal's coming days, on
PostgreSQL, and a day the fill barely reaches: the planner rightly reads a small table whole), nor is a count of a whole table (any plan reads all of it: the list's
``total`` and the console's tabs; those counts grow with the table).  A text search is read
from trigram indexes on both (pg_trgm on PostgreSQL, FTS5 tables on SQLite; an FTS5 table's own
SCAN is its index, not a table); a broad search walks the sort's index instead (see
``table_scans`` for the one rule relaxed for it).  SQLite's plain SCAN of a query with a LIMIT and no sort is a
walk of the primary key in order that stops at the limit, not a table scan.
"""
from __future__ import annotations

import html
import json
import re

import pytest
from sqlalchemy import create_engine, event, text

from gateway.incidents import search
from gateway.pipeline.outbox import Dispatcher
from gateway.pipeline.transaction import insert_raw
from gateway.store import partitions
from gateway.store.db import HotStatement
from gateway.store.models import utcnow
from testkit.support import admin_client, sign_in

INCIDENTS = 20_000
LARGE_TABLES = {"incidents", "alerts", "raw_requests", "timeline_entries", "deliveries"}
CONFIG = """
sources:
  - {key: src-7, type: testsrc}
sinks:
  - {name: itms, type: itms}
route: {sinks: [itms]}
"""
SERIES = f"WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < {2 * INCIDENTS}) "
STATUS = "CASE i % 4 WHEN 0 THEN 'triggered' WHEN 1 THEN 'acknowledged' WHEN 2 THEN 'resolved' ELSE 'closed' END"
SEVERITY = "CASE (i / 4) % 4 WHEN 0 THEN 'critical' WHEN 1 THEN 'error' WHEN 2 THEN 'warning' ELSE 'info' END"


def fill(url: str) -> None:
    """INCIDENTS incidents, twice as many raw requests, alerts and deliveries, a created entry per
    incident and a comment on every tenth, in a few INSERT ... SELECTs; then statistics."""
    engine = create_engine(url)
    postgres = engine.dialect.name == "postgresql"
    at = "now() - make_interval(secs => i)" if postgres else "strftime('%Y-%m-%d %H:%M:%f', 'now', -i || ' seconds')"
    body = "convert_to('{}', 'UTF8')" if postgres else "x'7b7d'"
    half = f"WHERE i <= {INCIDENTS}"
    with engine.begin() as conn:
        conn.execute(text(
            "INSERT INTO raw_requests (id, source_key, source_type, method, path, headers, body, content_type,"
            " remote_addr, received_at, external_id, alert_count) " + SERIES +
            f"SELECT i, 'src-' || (i % 50), 'testsrc', 'POST', '/hooks', '{{}}', {body}, 'application/json',"
            f" '127.0.0.1', {at}, 'e' || i, 1 FROM n"))
        conn.execute(text(
            "INSERT INTO incidents (id, fingerprint, source_key, source_type, title, description, severity, status,"
            " resource_id, resource_name, resource_type, event_count, first_seen_at, last_seen_at, created_at,"
            " last_event_at) " + SERIES +
            f"SELECT i, 'fp-' || i, 'src-' || (i % 50), 'testsrc', 'CPU high on host-' || i, '', {SEVERITY},"
            f" {STATUS}, 'host-' || i, 'host-' || i, 'server', 2, {at}, {at}, {at}, {at} FROM n {half}"))
        conn.execute(text(
            "INSERT INTO alerts (id, raw_request_id, source_key, source_type, fingerprint, external_id, status,"
            " severity, title, description, resource_id, resource_name, resource_type, occurred_at, labels,"
            " origin, incident_id, received_at) " + SERIES +
            f"SELECT i, i, 'src-' || (i % 50), 'testsrc', 'fp-' || (i % {INCIDENTS} + 1), 'e' || i, 'firing',"
            f" 'error', 'CPU high', '', '', '', '', {at}, '{{}}', 'webhook', i % {INCIDENTS} + 1, {at} FROM n"))
        conn.execute(text(
            "INSERT INTO timeline_entries (incident_id, kind, actor, at, note) " + SERIES +
            f"SELECT i, 'created', 'source:src', {at}, NULL FROM n {half}"
            f" UNION ALL SELECT i, 'commented', 'kim', {at}, 'looked at host-' || i FROM n {half} AND i % 10 = 0"))
        conn.execute(text(
            "INSERT INTO deliveries (id, alert_id, sink_name, ordering_key, status, attempts, next_attempt_at,"
            " created_at, finished_at) " + SERIES +
            f"SELECT i, i, 'sink-' || (i % 10), 'fp-' || (i % {INCIDENTS} + 1), CASE i % 100 WHEN 0 THEN 'dead' WHEN 1 THEN"
            f" 'pending' ELSE 'delivered' END, 1, {at}, {at}, {at} FROM n"))
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        # What autovacuum keeps up on a live database: statistics and the visibility map.
        conn.execute(text("VACUUM ANALYZE" if postgres else "ANALYZE"))
    engine.dispose()


FILTERED_AWAY = 1_000
"""More rows than this read and thrown away by one step, ten for each it kept: a walk of a whole
index in its order, filtered down to a few rows (PostgreSQL's backward walk of alerts' primary key
for an incident's latest alert was one).  The list's filters walk the sort's index and keep one row
in four, which passes."""


def table_scans(conn, statement: str, parameters) -> list[str]:
    """The large tables ``statement``'s plan reads whole, by the database's own EXPLAIN; on
    PostgreSQL, run (and rolled back), also those it reads most of only to throw it away."""
    cursor = conn.connection.dbapi_connection.cursor()
    # Relaxed for a broad search's walk alone (its window, and that window counted, both named
    # "walked" in the SQL): the window walks the sort's index with the filters
    # the index does not serve, as the list without q does, but for as many rows as the page needs
    # matches (one in ten for a comment's word), so it throws away the filters' share of up to
    # WALK_PROBE kept rows: 3,750 for the console's triggered tab with severity=critical here
    # (fifteen for each row kept, as its page without q throws for its 51).  That is bounded and
    # test_a_broad_search_walks_the_sort_and_stops_at_its_page checks it stops at the page.
    walk = ") AS walked" in statement
    if conn.dialect.name == "postgresql":
        cursor.execute("SAVEPOINT explained")
        cursor.execute("EXPLAIN (ANALYZE, FORMAT JSON) " + statement, parameters)
        plan = cursor.fetchone()[0]
        cursor.execute("ROLLBACK TO SAVEPOINT explained")
        plan = json.loads(plan) if isinstance(plan, str) else plan
        nodes, found = [(plan[0]["Plan"], False)], []
        while nodes:
            node, counting = nodes.pop()
            relation = node.get("Relation Name", "")
            if partitions.is_partition(relation):
                # A day of the raw journal counts only if large: the fill's 11 hours straddle midnight
                # when the suite runs before 11:07 UTC, and the planner rightly reads a day of a few
                # dozen rows whole.  The other day then holds the rest, so one always counts.
                cursor.execute("SELECT reltuples FROM pg_class WHERE oid = to_regclass(%s)", (relation,))
                relation = partitions.TABLE if cursor.fetchone()[0] >= FILTERED_AWAY else "(a small partition)"
            if (node["Node Type"] == "Seq Scan" and relation in LARGE_TABLES
                    and not (counting and "Filter" not in node)):
                found.append(relation)
            thrown = node.get("Rows Removed by Filter", 0) * node["Actual Loops"]
            if relation in LARGE_TABLES and thrown > max(FILTERED_AWAY, 10 * node["Actual Rows"] * node["Actual Loops"]) \
                    and not (walk and relation == "incidents"):
                found.append(f"{relation} ({thrown:,} rows filtered away by {node['Node Type']})")
            counting = counting or node["Node Type"] == "Aggregate"
            nodes.extend((child, counting) for child in node.get("Plans", ()))
        return found
    cursor.execute("EXPLAIN QUERY PLAN " + statement, parameters)
    details = [detail for _, _, _, detail in cursor.fetchall()]
    if " LIMIT " in statement and not any("TEMP B-TREE" in detail for detail in details):
        return []  # SQLite's plain SCAN is in rowid order here: it walks the primary key and stops at the limit
    return [detail.split()[1] for detail in details
            if detail.startswith("SCAN ") and "INDEX" not in detail and detail.split()[1] in LARGE_TABLES]


def incidents_plan(engine, statement: str, parameters, table: str = "incidents") -> tuple[bool, list]:
    """(whether on SQLite, the plan): SQLite's EXPLAIN QUERY PLAN lines, or the nodes of PostgreSQL's
    EXPLAIN ANALYZE (run) that read ``table`` (the incidents, or one of the raw journal's days)."""
    with engine.connect() as conn:
        cursor = conn.connection.dbapi_connection.cursor()
        if conn.dialect.name == "sqlite":
            cursor.execute("EXPLAIN QUERY PLAN " + statement, parameters)
            return True, [detail for *_, detail in cursor.fetchall()]
        cursor.execute("EXPLAIN (ANALYZE, FORMAT JSON) " + statement, parameters)
        plan = cursor.fetchone()[0]
    nodes, scans = [(plan if isinstance(plan, list) else json.loads(plan))[0]["Plan"]], []
    while nodes:
        node = nodes.pop()
        relation = node.get("Relation Name")
        scans += [node] if relation == table or (relation and partitions.is_partition(relation)) else []
        nodes.extend(node.get("Plans", ()))
    return False, scans


@pytest.fixture
def statements(make_app, database_url):
    """(app, the list every SELECT/UPDATE the app sends is appended to as (statement, parameters))."""
    fill(database_url)
    app = make_app(CONFIG)
    sent = []

    def catch(conn, cursor, statement, parameters, context, executemany):
        if statement.lstrip().upper().startswith(("SELECT", "WITH", "UPDATE")):
            sent.append((statement, parameters))

    engine = app.extensions["gateway"].engine
    event.listen(engine, "before_cursor_execute", catch)
    yield app, sent
    event.remove(engine, "before_cursor_execute", catch)


def test_no_list_detail_timeline_deliveries_or_claim_query_scans_a_large_table(statements):
    app, sent = statements
    engine = app.extensions["gateway"].engine
    api = admin_client(app)
    browser = sign_in(app, engine, "kim", "admin")
    middle = INCIDENTS // 2
    deep = api.get("/api/incidents?page=200").json["next_cursor"]
    deep_resolved = api.get("/api/incidents?page=50&status=resolved&sort=created_at").json["next_cursor"]
    # The console's Next and Previous links from a deep page: cursors, in every sort.
    console_links = [html.unescape(href) for sort in ("-created_at", "-last_event_at", "severity", "-event_count")
                     for href in re.findall(r'<a rel="(?:prev|next)" href="([^"]+)"',
                                            browser.get(f"/incidents?page=50&sort={sort}").text)]
    assert len(console_links) == 8 and all("cursor=" in link or "before=" in link for link in console_links)
    sent.clear()  # signing in reads small tables only
    for client, path in [
        (api, f"/api/incidents?cursor={deep}"), (api, f"/api/incidents?cursor={deep_resolved}&status=resolved&sort=created_at"),
        (api, "/api/incidents"), (api, "/api/incidents?status=resolved"), (api, "/api/incidents?severity=critical"),
        (api, "/api/incidents?source=src-7"), (api, "/api/incidents?page=200"),
        (api, "/api/incidents?sort=created_at"), (api, "/api/incidents?sort=last_event_at&status=triggered"),
        (api, f"/api/incidents/{middle}"), (api, "/api/deliveries"), (api, "/api/deliveries?status=dead"),
        (api, "/api/deliveries?sink=sink-3"), (api, "/api/events"), (api, "/api/events?source=src-7"),
        (api, f"/api/events?external_id=e{middle}"), (api, f"/api/alerts/{middle}"),
        (api, "/api/sources/src-7/requests"), (api, "/api/sources/src-7/requests?page=4&per_page=20"),
        (browser, "/sources"), (browser, "/sources/src-7"), (browser, f"/events/{middle}"),
        (browser, "/incidents"), (browser, "/incidents?status=resolved&page=20"),
        (browser, "/incidents?severity=critical&source=src-7"), (browser, "/incidents?severity=critical"),
        (browser, "/incidents?source=src-7"), (browser, "/incidents?page=200"), (browser, f"/incidents/{middle}"),
        (browser, "/incidents?sort=severity"), (browser, "/incidents?sort=severity&status=closed&page=20"),
        (api, "/api/incidents?status=triggered&sort=severity"),
        # Without a status, each status's walk of the sort's index, merged.
        (api, "/api/incidents?sort=severity"), (api, "/api/incidents?sort=-event_count&page=40"),
        (api, "/api/incidents?sort=-event_count&severity=critical"), (api, "/api/incidents?sort=severity&source=src-7"),
        (api, "/api/incidents?sort=severity&q=CPU"),
        (browser, "/deliveries"), *((browser, link) for link in console_links),
        (api, "/api/incidents?q=host-4242"), (browser, "/incidents?q=host-4242"),
        # Broad searches, every incident holding the word: walked along the sort (test below).
        (api, "/api/incidents?q=CPU"), (api, "/api/incidents?q=cpu&status=resolved&page=3"),
        (api, f"/api/incidents?q=CPU&cursor={deep}"), (api, "/api/incidents?q=looked&sort=-created_at"),
        (browser, "/incidents?q=CPU"), (browser, "/incidents?q=looked&severity=critical"),
    ]:
        answer = client.get(path)
        assert answer.status_code == 200, (path, answer.status_code)
    assert Dispatcher(app.extensions["gateway"].runtime).claim("sink-1", "worker-1")  # a backlog to claim from

    assert len(sent) > 20
    scans = []
    with engine.connect() as conn:
        for statement, parameters in sent:
            found = table_scans(conn, statement, parameters)
            if found:
                scans.append((found, statement))
    assert not scans, "\n\n".join(f"{tables}: {statement}" for tables, statement in scans)


@pytest.mark.parametrize("query", ["", "?status=resolved", "?severity=critical", "?source=src-7"])
def test_each_filter_reads_its_page_in_the_default_sort_from_an_index(statements, query):
    """A page of a filter is read in index order and stops at the page: sorting every match costs
    as much as the filter matches (185 ms for a source's 20,000 incidents at a million, on SQLite).

    SQLite only: PostgreSQL's planner sorts a filter's matches when it thinks that cheaper (a
    top-N heap over a bitmap scan), and measured so (bench/scale.py); SQLite reads them row by row."""
    app, sent = statements
    engine = app.extensions["gateway"].engine
    if engine.dialect.name != "sqlite":
        pytest.skip("PostgreSQL sorts a bitmap scan's matches cheaply; the scale bench measures it")
    sent.clear()
    assert admin_client(app).get(f"/api/incidents{query}").status_code == 200
    pages = [(statement, parameters) for statement, parameters in sent if "ORDER BY" in statement]
    assert len(pages) == 1
    _, plan = incidents_plan(engine, *pages[0])
    assert not any("TEMP B-TREE FOR ORDER BY" in detail for detail in plan), plan


@pytest.mark.parametrize("path, order, index", [
    ("/incidents?sort=severity", "ORDER BY (CASE severity", "ix_incidents_status_severity_rank_id"),
    ("/incidents?sort=severity&status=closed&page=20", "ORDER BY (CASE severity", "ix_incidents_status_severity_rank_id"),
    ("/incidents?sort=severity&q=CPU", "ORDER BY (CASE severity", "ix_incidents_status_severity_rank_id"),
    ("/incidents?sort=-event_count", "ORDER BY incidents.event_count DESC", "ix_incidents_status_event_count_id"),
    ("/incidents?sort=-event_count&status=closed&page=20", "ORDER BY incidents.event_count DESC",
     "ix_incidents_status_event_count_id"),
])
def test_the_console_walks_a_tab_in_its_sort_along_an_index(statements, path, order, index):
    """The console's severity and event-count sorts read their tab along (status, the sort, id), up to
    the page, on both databases: sorting the whole tab took 429 ms at a million incidents (SQLite)."""
    app, sent = statements
    engine = app.extensions["gateway"].engine
    browser = sign_in(app, engine, "kim", "admin")
    sent.clear()
    assert browser.get(path).status_code == 200
    pages = [(statement, parameters) for statement, parameters in sent if order in statement]
    assert pages, sent
    sqlite, plan = incidents_plan(engine, *pages[-1])
    if sqlite:
        assert any(f"USING INDEX {index}" in detail for detail in plan), plan
        assert not any("TEMP B-TREE" in detail for detail in plan), plan
        return
    assert [(n["Node Type"], n.get("Index Name")) for n in plan] == [("Index Scan", index)], plan
    assert plan[0]["Actual Rows"] <= 19 * 50 + 51, plan[0]  # page 20's rows at most, of the tab's 5,000


@pytest.mark.parametrize("path, index", [
    ("/api/incidents?sort=severity", "ix_incidents_status_severity_rank_id"),
    ("/api/incidents?sort=-event_count&page=20", "ix_incidents_status_event_count_id"),
    ("/api/incidents?sort=-event_count&severity=critical", "ix_incidents_status_event_count_id"),
])
def test_the_api_merges_each_status_walk_when_no_status_is_asked_for(statements, path, index):
    """Without ``status``, the API's severity and event-count sorts read each status along its
    (status, the sort, id) index, as far as the page, and merge them: the whole table was sorted."""
    app, sent = statements
    engine = app.extensions["gateway"].engine
    sent.clear()
    assert admin_client(app).get(path).status_code == 200
    pages = [(statement, parameters) for statement, parameters in sent if "UNION ALL" in statement]
    assert len(pages) == 1, sent
    sqlite, plan = incidents_plan(engine, *pages[0])
    if sqlite:
        assert sum(f"USING INDEX {index} (status=?)" in detail for detail in plan) == 4, plan
        return
    assert [(n["Node Type"], n.get("Index Name")) for n in plan] == [("Index Scan", index)] * 4, plan
    assert all(node["Actual Rows"] <= 20 * 25 for node in plan), plan


@pytest.mark.parametrize("sort, index, walks", [
    # Each status, and each side of the cursor's rank: its own incidents older than the cursor's, then the lower ranks.
    ("severity", "ix_incidents_status_severity_rank_id", 8),
    ("-event_count", "ix_incidents_status_event_count_id", 4),
])
def test_a_cursor_starts_each_merged_walk_at_the_cursor(statements, sort, index, walks):
    """A page by cursor of the API's severity and event-count sorts, without ``status``, reads about
    what page 1 does: every walk of the merge starts at the cursor.  Page 201 by offset reads 201
    pages of each status; at a million incidents, page 1,000 reads 50,000 of each."""
    app, sent = statements
    engine = app.extensions["gateway"].engine
    api = admin_client(app)
    cursor = api.get(f"/api/incidents?sort={sort}&page=200").json["next_cursor"]  # half the incidents ahead
    sent.clear()
    answer = api.get(f"/api/incidents?sort={sort}&cursor={cursor}")
    assert answer.status_code == 200 and len(answer.json["items"]) == 50
    pages = [(statement, parameters) for statement, parameters in sent if "UNION ALL" in statement]
    assert len(pages) == 1, sent
    if engine.dialect.name == "sqlite":
        with engine.connect() as conn:  # the plan's steps by id, each with its parent's id
            steps = {node: (parent, detail) for node, parent, _, detail in conn.connection.dbapi_connection.execute(
                "EXPLAIN QUERY PLAN " + pages[0][0], pages[0][1]).fetchall()}
        assert sum(f"USING INDEX {index} (status=? AND " in detail for _, detail in steps.values()) == walks, steps
        # No walk sorts what it read (the merge sorts each walk's page, at most 50 rows, on its own).
        sorted_walks = [detail for parent, detail in steps.values()
                        if detail.startswith("USE TEMP B-TREE") and steps.get(parent, (0, ""))[1].startswith("CO-ROUTINE")]
        assert sorted_walks == [], steps
        return
    _, plan = incidents_plan(engine, *pages[0])
    # The cursor's own rank may be walked along the primary key from the cursor's id, its status and
    # rank filtered: a few rows thrown away for each kept, however deep the page.
    assert [n["Node Type"] for n in plan] == ["Index Scan"] * walks, plan
    assert all(n.get("Index Name") in (index, "pk_incidents") for n in plan), plan
    assert all(n["Actual Rows"] <= 50 and n.get("Rows Removed by Filter", 0) <= FILTERED_AWAY for n in plan), plan


@pytest.mark.parametrize("path, sqlite_walk, postgres_index", [
    ("/api/incidents?q=CPU", "SCAN incidents USING INDEX ix_incidents_last_event_at_id", "ix_incidents_last_event_at_id"),
    # The status index holds the rowid: SQLite walks a status's incidents in id order from it.
    ("/api/incidents?q=cpu&status=resolved&sort=-created_at", "SEARCH incidents USING INDEX ix_incidents_status (status=?)",
     "pk_incidents"),
    # In comments alone, one incident in ten: ~500 of the console's default tab walked for its page.
    ("/incidents?q=looked", "SEARCH incidents USING INDEX ix_incidents_status (status=?)", "pk_incidents"),
])
def test_a_broad_search_walks_the_sort_and_stops_at_its_page(statements, path, sqlite_walk, postgres_index):
    """A word most incidents hold is not read from the trigram indexes (every match fetched and
    sorted: 3.6 s at a million) but by walking the page's sort, each row tested, up to the page.
    ``sqlite_walk`` and ``postgres_index`` say how each database walks the sort."""
    app, sent = statements
    engine = app.extensions["gateway"].engine
    client = admin_client(app) if path.startswith("/api") else sign_in(app, engine, "kim", "admin")
    sent.clear()
    assert client.get(path).status_code == 200
    # A first look at a tenth of the window, and for a sparse word the window: the last served the page.
    walks = [(statement, parameters) for statement, parameters in sent if "walked.title" in statement]
    assert len(walks) in (1, 2) and not any("_trgm" in s or "_search" in s or " UNION " in s for s, _ in sent), sent
    sqlite, plan = incidents_plan(engine, *walks[-1])
    if sqlite:
        assert sqlite_walk in plan and not any("TEMP B-TREE" in detail for detail in plan), plan
        return
    assert [(n["Node Type"], n.get("Index Name"), n["Scan Direction"]) for n in plan] == [
        ("Index Scan", postgres_index, "Backward")], plan
    assert plan[0]["Actual Rows"] < search.WALK_PROBE / 2, plan[0]  # stopped at the page, not the window's end


@pytest.mark.parametrize("path, window", [
    ("/api/sources/src-7/requests", 50), ("/api/sources/src-7/requests?page=4&per_page=20", 80),
])
def test_a_sources_requests_are_walked_newest_first_as_far_as_the_page(statements, path, window):
    """A page of a source's requests reads the source's newest along (source_key, received_at, id),
    as far as the page, and merges them with its refusals: it read and sorted the source's whole
    journal (at ten million requests, 340 ms on SQLite and 1.8 s on PostgreSQL)."""
    app, sent = statements
    engine = app.extensions["gateway"].engine
    sent.clear()
    assert admin_client(app).get(path).status_code == 200
    page = next((statement, parameters) for statement, parameters in reversed(sent)
                if "UNION ALL" in statement and not statement.startswith("SELECT count"))
    sqlite, plan = incidents_plan(engine, *page, table=partitions.TABLE)
    index = "ix_raw_requests_source_key_received_at_id"
    if sqlite:
        with engine.connect() as conn:
            cursor = conn.connection.dbapi_connection.cursor()
            cursor.execute("EXPLAIN QUERY PLAN " + page[0], page[1])
            nodes = {node: (parent, detail) for node, parent, _, detail in cursor.fetchall()}
        walk = next(node for node, (_, detail) in nodes.items() if detail == "CO-ROUTINE newest_raw_requests")
        steps = [detail for parent, detail in nodes.values() if parent == walk]
        assert steps == [f"SEARCH raw_requests USING INDEX {index} (source_key=?)"], nodes
        return
    assert {(node["Node Type"], node.get("Index Name", "").removeprefix(node["Relation Name"] + "_"))
            for node in plan} == {("Index Scan", "source_key_received_at_id_idx")}, plan
    # The merge of the days reads one row past the page from each day it stops in.
    assert sum(node["Actual Rows"] for node in plan) <= window + len(plan), plan


def test_ingests_duplicate_check_reads_its_delivery_ids_entry(statements, monkeypatch):
    """Each webhook's raw request is stored unless its (source, delivery id) came within the last day:
    that check reads the id's entry of (external_id, source_key, received_at).  With the time left out
    of that index, SQLite (no statistics on a new database) read the source's whole day instead."""
    app, _ = statements
    engine = app.extensions["gateway"].engine
    sent, call = [], HotStatement._call
    monkeypatch.setattr(HotStatement, "_call", staticmethod(
        lambda conn, method, sql, args: sent.append((sql, args)) or call(conn, method, sql, args)))
    with engine.connect() as conn:  # rolled back
        insert_raw(conn, dict(source_key="src-7", source_type="testsrc", method="POST", path="/hooks/testsrc/src-7/",
                              headers={}, body=b"{}", content_type="application/json", remote_addr="127.0.0.1",
                              received_at=utcnow(), external_id="e-new", alert_count=1))
    index = "ix_raw_requests_external_id_source_key_received_at"
    sqlite, plan = incidents_plan(engine, *sent[0], table=partitions.TABLE)  # on PostgreSQL run, and rolled back
    if sqlite:
        assert [detail for detail in plan if "raw_requests" in detail] == [
            f"SEARCH raw_requests USING COVERING INDEX {index} (external_id=? AND source_key=? AND received_at>?)"]
        return
    scans = [node for node in plan if node["Node Type"].endswith("Scan")]
    # Each day the window spans: the id's entry looked up, no row of the day read and thrown away.
    assert any(node.get("Index Name", "").endswith("external_id_source_key_received_at_idx") for node in scans), plan
    assert sum(node["Actual Rows"] + node.get("Rows Removed by Filter", 0) for node in scans) == 0, plan
