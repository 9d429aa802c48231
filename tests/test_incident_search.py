"""The incident search (``q``): on SQLite read from FTS5 trigram tables (migration 0015), it must
find exactly what the plain ILIKE found, on text made to trip it: LIKE wildcards and the escape
character, FTS5 query syntax and quotes, Korean, non-ASCII case, fewer than three characters.
On PostgreSQL (pg_trgm, no FTS5) the search is the plain ILIKE, and the same comparison holds.
"""
from __future__ import annotations

from datetime import datetime, timezone

import pytest
from alembic import command
from sqlalchemy import Update, create_engine, insert, or_, select, text, union

from gateway.incidents import service
from gateway.store.db import HotStatement, alembic_config, upgrade
from gateway.store.models import Incident, TimelineEntry
from testkit.support import database_at

CONFIG = """
sources:
  - {key: whatap-prod, type: whatap, token: s3cret}
sinks:
  - {name: itms, type: itms}
route: {sinks: [itms]}
"""
INCIDENTS = {
    # name: (title, description, resource name, comment or None)
    "cpu": ("CPU 100% reached", "", "host-1", None),
    "disk": ("disk_usage high", "path /data/app", "db_01", "Looked at it: 50%_done"),
    "korean": ("디스크 사용량 경고", "서버 CPU 사용률이 90%를 초과했습니다", "웹서버-01", "담당자 확인, 원인 분석 중"),
    "umlaut": ("ÄÖÜ große Störung", "", "Köln", None),
    "syntax": ('quote "double" and \'single\'', "NEAR(a b) AND c* OR ^d : {x} -y +z", "back\\slash", None),
    "host": ("hOsT-4242 down", "", "HOST-42420", "host-4242 again"),
    "repeats": ("aaaa", "", "", None),
    "lines": ("line1\nline2", "tab\there", "", "split 50/50"),
    "emoji": ("🔥 fire 🔥🔥", "", "", None),
    "plain": ("100 percent", "", "", "nothing to see"),
}
QUERIES = [
    "cpu", "CPU", "100%", "0%", "%", "%%", "_", "%_", "/", "//", "/%", "50/50", "/data", "_u", "disk_", "sk_us",
    "디스크", "용량 경", "웹서버", "확인,", "äöü", "ÄÖÜ", "öln", "KÖLN", "köln", "große", "GROSSE",
    '"double"', '"', '""', "'single'", "'", "NEAR(a", "NEAR(a b)", "c* OR", "^d", ": {x}", "-y +z", "AND", "OR",
    "back\\slash", "\\", "host-4242", "HOST-4242", "4242 again", "aaa", "aaaa", "aaaaa", "ne1\nli", "\t", "tab\th",
    "🔥", "🔥🔥", "fire 🔥", "a", "ab", "없는 장애", "Looked at it: 50%_done", "xyz", " ", "   ", "nothing", "see",
]


@pytest.fixture
def searched(make_app):
    """(the API client, the app, name -> incident id): INCIDENTS stored, their comments posted
    through the API."""
    from gateway.testing import admin_client

    app = make_app(CONFIG)
    engine = app.extensions["gateway"].engine
    now = datetime(2026, 12, 1, 12, 0, tzinfo=timezone.utc)
    ids = {}
    with engine.begin() as conn:
        for n, (name, (title, description, resource, _)) in enumerate(INCIDENTS.items()):
            ids[name] = conn.execute(insert(Incident.__table__).returning(Incident.id), dict(
                fingerprint=f"fp-{n}", source_key="whatap-prod", source_type="whatap", title=title,
                description=description, severity="error", status="triggered", resource_id=f"r-{n}",
                resource_name=resource, resource_type="server", event_count=1, first_seen_at=now,
                last_seen_at=now, created_at=now, last_event_at=now)).scalar_one()
    api = admin_client(app)
    for name, (*_, comment) in INCIDENTS.items():
        if comment:
            assert api.post(f"/api/incidents/{ids[name]}/comments", json={"body": comment}).status_code == 201
    return api, app, ids


def plain_ilike(q: str):
    """The search as it was before FTS5, on every database: an escaped ILIKE of each column."""
    pattern = "%" + q.replace("/", "//").replace("%", "/%").replace("_", "/_") + "%"
    return union(
        select(Incident.id).where(or_(*(column.ilike(pattern, escape="/") for column in (
            Incident.title, Incident.description, Incident.resource_name)))),
        select(TimelineEntry.incident_id).where(TimelineEntry.kind == "commented",
                                                TimelineEntry.note.ilike(pattern, escape="/")))


def test_the_search_finds_what_the_plain_ilike_finds(searched):
    api, app, ids = searched
    engine = app.extensions["gateway"].engine
    names = {v: k for k, v in ids.items()}
    differences, found_any = {}, set()
    with engine.connect() as conn:
        for q in QUERIES:
            answer = api.get("/api/incidents", query_string={"q": q, "per_page": 100})
            assert answer.status_code == 200, (q, answer.json)
            got = {names[item["id"]] for item in answer.json["items"]}
            expected = {names[i] for i in conn.execute(plain_ilike(q)).scalars()}
            if got != expected or answer.json["total"] != len(expected):
                differences[q] = (got, expected)
            found_any |= got
    assert differences == {}
    assert found_any == set(INCIDENTS)  # every incident is found by some query: the comparison is not of empties


@pytest.mark.parametrize("q, expected", [
    ("100%", {"cpu"}),  # a LIKE wildcard is a character to find
    ("_u", {"disk"}),
    ("50/50", {"lines"}),  # the escape character too
    ("host-4242", {"host"}),  # title and resource name, case aside, and a comment
    ("4242 again", {"host"}),  # a comment alone
    ("용량 경", {"korean"}),
    ('"double"', {"syntax"}),  # FTS5 syntax is text
    ("NEAR(a b)", {"syntax"}),
    ("c* OR", {"syntax"}),
    ("aaaa", {"repeats"}),
    ("aaaaa", set()),
    ("fire 🔥", {"emoji"}),
    ("ab", {"lines"}),  # fewer than three characters: no trigram, the plain search
    ("a", {"cpu", "disk", "syntax", "host", "repeats", "lines"}),
    ("nothing", {"plain"}),
])
def test_the_search_finds(searched, q, expected):
    api, _, ids = searched
    names = {v: k for k, v in ids.items()}
    assert {names[item["id"]] for item in api.get("/api/incidents", query_string={"q": q}).json["items"]} == expected


def test_sqlite_case_folds_ascii_only_as_its_ilike_did(searched):
    """SQLite's lower() and LIKE fold ASCII alone; FTS5's trigrams fold ``Ä`` too, so its candidates
    for "äöü" hold the umlaut incident, and the ILIKE over them must drop it."""
    api, app, ids = searched
    engine = app.extensions["gateway"].engine
    if engine.dialect.name != "sqlite":
        pytest.skip("PostgreSQL's ILIKE folds by its locale")
    found = lambda q: {item["id"] for item in api.get("/api/incidents", query_string={"q": q}).json["items"]}  # noqa: E731
    with engine.connect() as conn:
        candidates = conn.execute(text("SELECT rowid FROM incidents_search WHERE incidents_search MATCH :q"),
                                  {"q": '"äöü"'}).scalars().all()
    assert candidates == [ids["umlaut"]]
    assert (found("äöü"), found("ÄÖÜ"), found("KÖLN")) == (set(), {ids["umlaut"]}, set())


def test_repeats_run_no_trigger_and_the_index_stays_whole(searched):
    """The webhooks' UPDATEs of an incident (a repeat's counts, times and severity; a recovery, a
    reopening) change no indexed column: SQLite's program for each holds no trigger (``Program``
    opcode), where a new incident's INSERT does.  After webhooks and comments, FTS5's
    integrity-check finds each index equal to the rows it indexes."""
    api, app, ids = searched
    engine = app.extensions["gateway"].engine
    if engine.dialect.name != "sqlite":
        pytest.skip("the FTS5 tables and their triggers are SQLite's")
    hot = {name: value.statement for name, value in vars(service).items() if isinstance(value, HotStatement)}
    updates = {name: statement for name, statement in hot.items()
               if isinstance(statement, Update) and statement.table.name == "incidents"}
    assert set(updates) >= {"_JOIN_OPEN", "_COUNT_BY_ID", "_RESOLVE", "_REOPEN"}

    def runs_a_trigger(conn, statement) -> bool:
        compiled = statement.compile(dialect=engine.dialect)
        cursor = conn.connection.dbapi_connection.cursor()
        program = cursor.execute("EXPLAIN " + compiled.string, [None] * len(compiled.positiontup))
        return any(row[1] == "Program" for row in program)

    with engine.connect() as conn:
        assert [name for name, statement in updates.items() if runs_a_trigger(conn, statement)] == []
        assert runs_a_trigger(conn, hot["_CREATE"])
    payload = {"pcode": 5512, "projectName": "prod", "time": 1_700_000_000_000, "oid": 1, "oname": "web-01",
               "title": "CPU busy", "message": "95%", "level": "Warning", "status": "on", "metricName": "cpu",
               "metricValue": "95", "metricThreshold": "90"}
    for n in range(3):  # a new incident, then two repeats of it
        answer = app.test_client().post("/hooks/whatap/whatap-prod/", json={**payload, "uuid": f"u-{n}"},
                                        headers={"X-Webhook-Token": "s3cret"})
        assert answer.status_code == 202, answer.json
    assert api.post(f"/api/incidents/{ids['cpu']}/comments", json={"body": "checked twice"}).status_code == 201
    with engine.begin() as conn:
        for table in ("incidents_search", "comments_search"):
            conn.execute(text(f"INSERT INTO {table} ({table}) VALUES ('integrity-check')"))
    found = lambda q: [(i["id"], i["event_count"]) for i in api.get("/api/incidents", query_string={"q": q}).json["items"]]  # noqa: E731
    assert found("CPU busy")[0][1] == 3
    assert found("checked twice") == [(ids["cpu"], 1)]


def test_the_migration_indexes_the_rows_already_stored_and_goes_back(database_url, tmp_path):
    """0015 on a database with incidents and comments: they are found through the index; its
    downgrade leaves 0014's schema (no FTS5 table, trigger or view)."""
    if not database_url.startswith("sqlite"):
        pytest.skip("0015 changes nothing on PostgreSQL")
    with database_at(database_url, tmp_path, "0014") as url:
        engine = create_engine(url)
        at = "2026-12-01 12:00:00.000000"
        with engine.begin() as conn:
            before = {row[0] for row in conn.execute(text("SELECT type || ' ' || name FROM sqlite_master"))}
            conn.execute(text(
                "INSERT INTO incidents (id, fingerprint, source_key, source_type, title, description, severity, status,"
                " resource_id, resource_name, resource_type, event_count, first_seen_at, last_seen_at, created_at,"
                " last_event_at) VALUES (7, 'fp', 'src', 'whatap', 'Disk full', '', 'error', 'triggered', 'r', 'db-01',"
                " 'server', 1, :at, :at, :at, :at)"), {"at": at})
            conn.execute(text("INSERT INTO timeline_entries (id, incident_id, kind, actor, at, note) VALUES"
                              " (1, 7, 'commented', 'kim', :at, 'rotated the logs'),"
                              " (2, 7, 'status_changed', 'kim', :at, 'a note, not a comment')"), {"at": at})
        upgrade(url, "0015")
        match = "SELECT rowid FROM {0} WHERE {0} MATCH :q"
        with engine.connect() as conn:
            assert conn.execute(text(match.format("incidents_search")), {"q": '"DISK"'}).scalars().all() == [7]
            assert conn.execute(text(match.format("comments_search")), {"q": '"the log"'}).scalars().all() == [1]
            assert conn.execute(text(match.format("comments_search")), {"q": '"a note"'}).scalars().all() == []
        command.downgrade(alembic_config(url), "0014")
        with engine.connect() as conn:
            after = {row[0] for row in conn.execute(text("SELECT type || ' ' || name FROM sqlite_master"))}
        engine.dispose()
    assert after == before


def test_the_search_triggers_are_all_there_after_every_migration(database_url):
    """On SQLite a migration that rebuilds ``incidents`` or ``timeline_entries`` (alembic's batch
    mode copies the table) drops their triggers without a word, and the search would miss every
    change after it.  At the head migration each of 0015's triggers is still there."""
    if not database_url.startswith("sqlite"):
        pytest.skip("the FTS5 tables and their triggers are SQLite's")
    engine = create_engine(database_url)  # the fixture's database went through `gateway db upgrade`
    try:
        with engine.connect() as conn:
            triggers = set(conn.execute(text("SELECT name FROM sqlite_master WHERE type = 'trigger'")).scalars())
    finally:
        engine.dispose()
    assert triggers >= {f"{table}_search_{change}" for table in ("incidents", "comments")
                        for change in ("insert", "update", "delete")}
