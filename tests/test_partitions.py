"""The raw journal partitioned by day on PostgreSQL (migration 0012, ``gateway.store.partitions``):
the migration moves existing rows into their days, the coming days are made ready, retention
drops whole days and keeps the rest, a webhook lands in its day, and a delivery id stays stored
once across days and concurrent transactions.  SQLite keeps one table; what both share is tested
on both."""
from __future__ import annotations

import threading
from datetime import datetime, timedelta, timezone

import pytest
from psycopg.types.json import Json
from sqlalchemy import create_engine, event, func, insert, select, text

from gateway.pipeline.transaction import DUPLICATE_WINDOW, _RAW_INSERT, insert_raw
from gateway.pipeline.retention import Purged, purge
from gateway.store import partitions
from gateway.store.db import make_engine, run_in_transaction, upgrade
from gateway.store.models import AlertRow, RawRequest, utcnow
from testkit.support import admin_client, database_at, sign_in

raw_requests = RawRequest.__table__


@pytest.fixture
def today() -> datetime:
    """Noon UTC of the day the test runs (not of the day the module was imported: a run may pass midnight)."""
    return datetime.now(timezone.utc).replace(hour=12, minute=0, second=0, microsecond=0)


def raw(external_id, received_at) -> dict:
    return dict(source_key="src", source_type="testsrc", method="POST", path="/hooks/testsrc/src/", headers={},
                body=b"{}", content_type="application/json", remote_addr="127.0.0.1", received_at=received_at,
                external_id=external_id, alert_count=1)


def where_rows_are(engine) -> dict[str, str]:
    """external_id -> the partition holding the row."""
    with engine.connect() as conn:
        return dict(conn.execute(text("SELECT external_id, tableoid::regclass::text FROM raw_requests")).all())


def partitioned_days(engine) -> list:
    with engine.connect() as conn:
        return partitions.days(conn)


@pytest.fixture
def pg_engine(database_url):
    if not database_url.startswith("postgresql"):
        pytest.skip("the raw journal is partitioned on PostgreSQL only")
    engine = make_engine(database_url)
    yield engine
    engine.dispose()


@pytest.fixture
def at_0011(tmp_path, database_url):
    """A database at migration 0011 (before partitioning), of the kind ``database_url`` is."""
    with database_at(database_url, tmp_path, "0011") as url:
        yield url


def test_the_migration_moves_every_row_into_its_day(at_0011, today):
    engine = create_engine(at_0011)
    days = [today - timedelta(days=n) for n in (40, 3, 0)]
    with engine.begin() as conn:
        conn.execute(insert(raw_requests), [raw(f"e{n}", at) for n, at in enumerate(days)])
        conn.execute(insert(AlertRow.__table__).values(
            raw_request_id=1, source_key="src", source_type="testsrc", fingerprint="fp", external_id="a1",
            status="firing", severity="error", title="t", occurred_at=days[0], labels={}, received_at=days[0]))
    upgrade(at_0011)

    with engine.connect() as conn:
        assert conn.execute(select(RawRequest.id, RawRequest.external_id).order_by(RawRequest.id)).all() == [
            (1, "e0"), (2, "e1"), (3, "e2")]
        assert conn.execute(text("SELECT raw_request_id FROM alerts")).scalar_one() == 1
    now = utcnow()
    added = run_in_transaction(engine, lambda conn: insert_raw(conn, raw("e3", now)))
    assert added == 4  # the id sequence carried over
    if engine.dialect.name == "postgresql":
        assert partitioned_days(engine) == [days[0].date(), days[1].date()] + [
            today.date() + timedelta(days=n) for n in range(partitions.AHEAD + 1)]
        assert where_rows_are(engine) == {f"e{n}": partitions.partition_name(at.date()) for n, at in enumerate(days)} | {
            "e3": partitions.partition_name(now.date())}
    engine.dispose()


def test_a_webhook_lands_in_its_day(app, pg_engine):
    assert app.test_client().post("/hooks/testsrc/src/", json={"id": "w1", "title": "t"}).status_code == 202
    assert where_rows_are(pg_engine) == {"w1": partitions.partition_name(utcnow().date())}


def test_days_are_made_ready_ahead_and_take_their_rows_out_of_the_default_partition(pg_engine, today):
    later = today + timedelta(days=partitions.AHEAD + 3)
    run_in_transaction(pg_engine, lambda conn: insert_raw(conn, raw("future", later)))
    assert where_rows_are(pg_engine) == {"future": partitions.DEFAULT}  # no day for it yet: accepted all the same

    created = partitions.ensure_ahead(pg_engine, later)

    assert created[0] == later.date() and len(created) == partitions.AHEAD + 1
    assert where_rows_are(pg_engine) == {"future": partitions.partition_name(later.date())}
    assert partitions.ensure_ahead(pg_engine, later) == []


@pytest.fixture
def past_days(pg_engine, today):
    """The session's schema is shared: the past days a test makes are dropped after it."""
    yield
    partitions.drop_before(pg_engine, today.replace(hour=0))


def test_purge_drops_whole_days_before_the_cutoff_and_keeps_the_rest(pg_engine, past_days, today):
    first = (today - timedelta(days=5)).date()
    partitions.ensure(pg_engine, first, today.date())
    rows = [raw(f"d{n}", today - timedelta(days=n)) for n in range(6)] + [raw("default", today - timedelta(days=9))]
    with pg_engine.begin() as conn:
        conn.execute(insert(raw_requests), rows)
    cutoff = today - timedelta(days=3, hours=6)  # in day -3, at 06:00

    # Days -5 and -4 are wholly past: dropped.  Day -3 straddles the cutoff: kept whole.  The
    # default partition's old row is deleted.
    assert purge(pg_engine, cutoff) == Purged(raw=1, refused=0, partitions=2)

    assert partitioned_days(pg_engine)[:3] == [first + timedelta(days=n) for n in (2, 3, 4)]
    with pg_engine.connect() as conn:
        assert sorted(conn.execute(select(RawRequest.external_id)).scalars()) == ["d0", "d1", "d2", "d3"]
    assert purge(pg_engine, cutoff) == Purged(0, 0, 0)


def test_a_delivery_id_is_stored_once_across_midnight_and_again_past_the_window(engine_url_both, today):
    """A sender's retry lands in the next day's partition and is still a duplicate; a copy from
    longer ago than ``DUPLICATE_WINDOW`` is a request of its own."""
    engine = engine_url_both
    midnight = today.replace(hour=0)
    store = lambda received_at: run_in_transaction(engine, lambda conn: insert_raw(conn, raw("d-1", received_at)))  # noqa: E731
    assert store(midnight - timedelta(minutes=5)) is not None
    assert store(midnight + timedelta(minutes=5)) is None
    assert store(midnight - timedelta(minutes=5) + DUPLICATE_WINDOW) is None  # the window's last moment
    assert store(midnight + timedelta(minutes=6) + DUPLICATE_WINDOW) is not None
    with engine.connect() as conn:
        assert conn.execute(select(func.count()).select_from(raw_requests)).scalar_one() == 2


def test_the_delivery_id_check_reads_only_the_days_of_its_window(pg_engine, past_days, today):
    """A year of days must not cost a year of index probes per webhook: PostgreSQL prunes the
    days before the window from the check (at plan or at executor start)."""
    partitions.ensure(pg_engine, (today - timedelta(days=10)).date(), today.date())
    sql = str(_RAW_INSERT.statement.compile(dialect=pg_engine.dialect))
    params = {**raw("d-9", today), "headers": Json({}), "duplicate_since": today - DUPLICATE_WINDOW}
    with pg_engine.connect() as conn:
        cursor = conn.connection.dbapi_connection.cursor()
        plan = "\n".join(row[0] for row in cursor.execute("EXPLAIN (ANALYZE) " + sql, params))
        conn.rollback()
    read = {day for day in range(11) if partitions.partition_name((today - timedelta(days=day)).date()) in plan}
    assert read == {0, 1}, plan


@pytest.fixture
def engine_url_both(database_url):
    engine = make_engine(database_url)
    yield engine
    engine.dispose()


def test_a_second_transaction_with_the_same_delivery_id_waits_then_stores_nothing(pg_engine, today):
    """No unique index spans the partitions: the lock makes the second copy see the first."""
    answers = []

    def second_copy():
        with pg_engine.connect() as conn, conn.begin():
            partitions.lock_delivery_id(conn, "src", "d-1")
            answers.append(insert_raw(conn, raw("d-1", today - timedelta(days=3))))

    with pg_engine.connect() as conn:
        with conn.begin():
            partitions.lock_delivery_id(conn, "src", "d-1")
            assert insert_raw(conn, raw("d-1", today)) is not None
            other = threading.Thread(target=second_copy)
            other.start()
            other.join(0.5)
            assert other.is_alive() and answers == []  # waiting for this transaction
        other.join(10)
    assert answers == [None]
    with pg_engine.connect() as conn:
        assert conn.execute(select(func.count()).select_from(raw_requests)).scalar_one() == 1


def test_the_oldest_kept_request_is_found_past_empty_days_and_in_the_default_partition(pg_engine, past_days,
                                                                                       today):
    """``raw_requests_oldest()`` (0017) answers what ``min(received_at)`` over the whole journal does."""
    def both() -> tuple:
        with pg_engine.connect() as conn:
            return tuple(conn.execute(text("SELECT raw_requests_oldest(), min(received_at) FROM raw_requests")).one())

    with pg_engine.begin() as conn:
        conn.execute(text("DELETE FROM raw_requests"))
    assert both() == (None, None)
    partitions.ensure(pg_engine, (today - timedelta(days=6)).date(), today.date())  # days -6..-3 stay empty
    with pg_engine.begin() as conn:
        conn.execute(insert(raw_requests), [raw("d2", today - timedelta(days=2)), raw("d0", today)])
    assert both() == (today - timedelta(days=2),) * 2
    with pg_engine.begin() as conn:  # older than every day partition: the default partition holds it
        conn.execute(insert(raw_requests), [raw("old", today - timedelta(days=30))])
    assert both() == (today - timedelta(days=30),) * 2


@pytest.mark.parametrize("path, per_page, page, span", [
    ("/api/events", 10, 1, 1), ("/api/events", 10, 6, 8), ("/api/events", 10, 9, 64), ("/api/events", 10, 14, None),
    ("/api/events?source=src", 10, 6, 8), ("/api/sources/src/requests", 10, 1, 1),
    ("/api/sources/src/requests", 10, 9, 64), ("/api/sources/src/requests", 20, 7, None),
])
def test_a_journal_list_reads_the_newest_span_that_holds_its_page(make_app, monkeypatch, path, per_page, page, span):
    """A newest-first list of the journal reads, on PostgreSQL, the shortest recent span of days that
    holds its page and more than COUNT_CAP (a statement naming no time plans every day partition);
    its page and total are the whole journal's all the same, on both databases."""
    from gateway.web import common

    monkeypatch.setattr(common, "COUNT_CAP", 30)  # so that 40 requests a span fill one
    app = make_app()
    engine = app.extensions["gateway"].engine
    ages = [timedelta(days=100), timedelta(days=30), timedelta(days=3), timedelta(hours=1)]
    with engine.begin() as conn:  # the oldest stored last: ids are not the order received
        for n, age in enumerate(reversed(ages)):
            conn.execute(insert(raw_requests), [raw(f"e{n}-{i}", utcnow() - age - timedelta(seconds=i // 2))
                                                for i in range(40)])
    with engine.connect() as conn:
        whole = conn.execute(select(raw_requests.c.id).order_by(raw_requests.c.received_at.desc(),
                                                                raw_requests.c.id.desc())).scalars().all()
    sent = []
    listen = lambda conn, cursor, statement, parameters, *rest: sent.append((statement, parameters))  # noqa: E731
    event.listen(engine, "before_cursor_execute", listen)
    answer = admin_client(app).get(f"{path}{'&' if '?' in path else '?'}per_page={per_page}&page={page}")
    event.remove(engine, "before_cursor_execute", listen)

    assert answer.status_code == 200, answer.json
    assert [item["id"] for item in answer.json["items"]] == whole[(page - 1) * per_page:page * per_page]
    assert answer.json["total"] is None  # 160 requests, counted up to 30
    statement, parameters = sent[-1]  # the page's read
    if span is None or engine.dialect.name != "postgresql":
        assert "received_at >=" not in statement, statement
    else:
        parameters = parameters.values() if isinstance(parameters, dict) else parameters
        starts = [value.replace(tzinfo=timezone.utc) for value in parameters if isinstance(value, datetime)]
        assert starts and all(abs(start - (utcnow() - timedelta(days=span))) < timedelta(minutes=1) for start in starts)


def test_a_stored_request_is_found_by_id_in_its_day_and_its_neighbours(pg_engine, past_days, today):
    """``find_request`` reads the days around the one ``raw_requests_day_of`` (0023) names: a year of
    days planned for one id costs tens of ms.  It still finds a request stored out of its day's id
    order, and one in the default partition, by reading everywhere when the days around miss."""
    with pg_engine.begin() as conn:
        conn.execute(text("DELETE FROM raw_requests"))
    partitions.ensure(pg_engine, (today - timedelta(days=12)).date(), today.date())  # -12..-9, -5, -4, -1: empty
    stored = [("d8", 8), ("d7", 7), ("d6", 6), ("d3", 3), ("d2", 2), ("d0", 0), ("late", 3), ("old", 40)]
    with pg_engine.begin() as conn:  # stored in this order: "late" gets an id past day 0's, "old" lands in default
        ids = {name: conn.execute(insert(raw_requests).values(raw(name, today - timedelta(days=ago)))
                                  .returning(raw_requests.c.id)).scalar_one() for name, ago in stored}
    sent = []
    listen = lambda conn, cursor, statement, parameters, *rest: sent.append((statement, parameters))  # noqa: E731
    event.listen(pg_engine, "before_cursor_execute", listen)
    with pg_engine.connect() as conn:
        named = {name: conn.execute(text("SELECT raw_requests_day_of(:id)"), {"id": ids[name]}).scalar()
                 for name in ids}
        assert conn.execute(text("SELECT raw_requests_day_of(0)")).scalar() is None  # before every day's first id
        for name, ago in stored:
            sent.clear()
            row = partitions.find_request(conn, RawRequest, ids[name])
            assert (row.external_id, row.received_at) == (name, today - timedelta(days=ago))
            reads = [(statement, parameters) for statement, parameters in sent if "FROM raw_requests" in statement]
            if name in ("late", "old"):  # not near the day its id names: the whole journal after the days around
                assert len(reads) == 2 and "received_at >=" not in reads[1][0]
                continue
            assert len(reads) == 1, reads
            plan = "\n".join(conn.exec_driver_sql("EXPLAIN " + reads[0][0], reads[0][1]).scalars())
            planned = {day for day in range(-partitions.AHEAD, 13)
                       if partitions.partition_name((today - timedelta(days=day)).date()) in plan}
            assert planned <= {ago - 1, ago, ago + 1} and ago in planned, plan
        assert partitions.find_request(conn, RawRequest, max(ids.values()) + 1) is None
    event.remove(pg_engine, "before_cursor_execute", listen)
    assert named == {name: (today - timedelta(days=0 if name in ("late", "old") else ago)).date()
                     for name, ago in stored}


def prepared_plans(conn, fragment: str) -> list[tuple]:
    """(generic plans, custom plans) of the statements prepared on this connection that hold ``fragment``."""
    return [tuple(row) for row in conn.execute(text(
        "SELECT generic_plans, custom_plans FROM pg_prepared_statements WHERE strpos(statement, :fragment) > 0"),
        {"fragment": fragment})]


def pooled_plans(engine, fragment: str) -> list[tuple]:
    """``prepared_plans`` on every idle pooled connection of ``engine``: those the requests used."""
    idle = [engine.connect() for _ in range(engine.pool.checkedin())]
    try:
        return [plan for conn in idle for plan in prepared_plans(conn, fragment)]
    finally:
        for conn in idle:
            conn.close()


def test_a_read_of_every_day_is_prepared_at_once_and_planned_generically(pg_engine):
    """Inside ``planned_once`` a statement is prepared at its first run and never planned for its
    values (that plans every day partition each time); outside, nothing changes: psycopg still
    prepares at the fifth run, and PostgreSQL plans as configured."""
    outside = text("SELECT id FROM raw_requests WHERE external_id = :id ORDER BY id LIMIT 3")
    inside = text("SELECT id FROM raw_requests WHERE external_id = :id ORDER BY received_at DESC LIMIT 3")
    with pg_engine.connect() as conn:
        driver = conn.connection.dbapi_connection
        threshold = driver.prepare_threshold
        for n in range(3):
            conn.execute(outside, {"id": f"x{n}"})
        with partitions.planned_once(conn):
            assert conn.execute(text("SHOW plan_cache_mode")).scalar() == "force_generic_plan"
            for n in range(3):
                conn.execute(inside, {"id": f"x{n}"})
        assert prepared_plans(conn, "ORDER BY received_at DESC") == [(3, 0)]
        assert conn.execute(text("SHOW plan_cache_mode")).scalar() == "auto"
        assert driver.prepare_threshold == threshold
        conn.execute(outside, {"id": "x3"})  # its fourth run: prepared at the fifth, as before
        assert prepared_plans(conn, "ORDER BY id LIMIT") == []
        conn.commit()

        with pytest.raises(ZeroDivisionError), partitions.planned_once(conn):
            1 / 0
        assert driver.prepare_threshold == threshold
        conn.rollback()

        driver.prepare_threshold = None  # preparing turned off (a pooler in transaction mode): left so
        try:
            with partitions.planned_once(conn):
                assert conn.execute(text("SHOW plan_cache_mode")).scalar() == "auto"
                conn.execute(text("SELECT id FROM raw_requests WHERE source_key = :key LIMIT 1"), {"key": "x"})
            assert prepared_plans(conn, "WHERE source_key = $1") == []
        finally:
            driver.prepare_threshold = threshold
            conn.rollback()


@pytest.mark.parametrize("query", ["external_id=e1", "source=src"])
def test_the_api_plans_a_read_of_every_day_once_per_connection(make_app, query):
    """By delivery id, or by a source no recent span holds a page of, ``/api/events`` reads every day:
    on PostgreSQL its page is prepared at the first request and planned generically from then on."""
    app = make_app()
    engine = app.extensions["gateway"].engine
    if engine.dialect.name != "postgresql":
        pytest.skip("the raw journal is partitioned on PostgreSQL only")
    with engine.begin() as conn:
        conn.execute(insert(raw_requests), [raw(f"e{i}", utcnow() - timedelta(days=i)) for i in range(3)])
    client = admin_client(app)
    for _ in range(2):
        answer = client.get(f"/api/events?{query}")
        assert answer.status_code == 200 and answer.json["items"], answer.json
    plans = pooled_plans(engine, "OFFSET")  # the page (a span's probe has none)
    assert sum(generic for generic, _ in plans) == 2 and all(custom == 0 for _, custom in plans), plans


def test_the_sources_page_plans_its_statements_once_per_connection(make_app):
    """The sources page's statements read each source's days of a span: on PostgreSQL they are
    prepared at the first request and planned generically from then on (``planned_once``)."""
    app = make_app()
    engine = app.extensions["gateway"].engine
    if engine.dialect.name != "postgresql":
        pytest.skip("the raw journal is partitioned on PostgreSQL only")
    with engine.begin() as conn:
        conn.execute(insert(raw_requests), [raw("e1", utcnow()), raw("e2", utcnow() - timedelta(days=3))])
    browser = sign_in(app, engine, "kim", "viewer")
    for _ in range(2):
        assert browser.get("/sources").status_code == 200
    plans = pooled_plans(engine, "AS listed")
    assert sum(generic for generic, _ in plans) >= 4 and all(custom == 0 for _, custom in plans), plans
