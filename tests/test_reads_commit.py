"""Reads end in COMMIT, not ROLLBACK, so a PostgreSQL connection keeps the statements psycopg
prepared on it (``gateway.store.db.reading``)."""
from __future__ import annotations

import pytest
from sqlalchemy import event, text
from sqlalchemy.exc import OperationalError, ProgrammingError

from gateway.store.db import make_engine, reading
from testkit.outbox import gateway_maker
from testkit.support import sign_in

PREPARED = "SELECT name, statement FROM pg_prepared_statements WHERE statement LIKE 'SELECT count(*) FROM alerts%'"


@pytest.fixture
def engine(database_url):
    engine = make_engine(database_url, group_commit=False)
    yield engine
    engine.dispose()


def _prepare_a_count(engine) -> None:
    """Run one statement past psycopg's threshold (5 runs) so it is prepared, committing each time."""
    for _ in range(6):
        with engine.begin() as conn:
            conn.execute(text("SELECT count(*) FROM alerts"))


def test_a_read_keeps_the_statements_prepared_on_its_connection(engine, database_url):
    if not database_url.startswith("postgresql"):
        pytest.skip("prepared statements: psycopg on PostgreSQL")
    _prepare_a_count(engine)  # one thread, one at a time: the pool's one connection throughout
    with reading(engine) as conn:
        assert len(conn.execute(text(PREPARED)).all()) == 1
    with reading(engine) as conn:
        assert len(conn.execute(text(PREPARED)).all()) == 1, "the read before forgot the prepared statement"
    with engine.connect() as conn:  # closed with its transaction open: ROLLBACK, and psycopg forgets
        conn.execute(text("SELECT 1"))
    with reading(engine) as conn:
        assert conn.execute(text(PREPARED)).all() == []


def test_a_read_that_fails_rolls_back_and_leaves_the_connection_usable(engine):
    with pytest.raises((ProgrammingError, OperationalError)):
        with reading(engine) as conn:
            conn.execute(text("SELECT no_such_column FROM alerts"))
    with reading(engine) as conn:
        assert conn.execute(text("SELECT count(*) FROM alerts")).scalar_one() == 0


def test_ingest_delivery_the_api_and_the_console_roll_nothing_back(make_app, receiver):
    """The paths that run all day (webhooks, the dispatcher's batches, API and console pages, health
    checks) end every transaction with a commit; a rollback among them would wipe a PostgreSQL
    connection's prepared statements, and ingest's after them."""
    gw = gateway_maker(make_app, receiver)()
    console = sign_in(gw.client.application, gw.runtime.engine, "kim", "operator")
    rollbacks = []
    event.listen(gw.runtime.engine, "rollback", lambda conn: rollbacks.append(conn))
    alert = [gw.post(f"p{n}") for n in range(3)][0]
    gw.drive("hook", lambda: len(receiver.requests) == 3)
    incident = gw.api.get("/api/incidents").json["items"][0]["id"]
    raw = gw.api.get("/api/events").json["items"][0]["id"]
    for path in (f"/api/incidents/{incident}", f"/api/alerts/{alert}", f"/api/events/{raw}/raw", "/api/sources",
                 "/api/sources/src/requests", "/health", "/health/ready", "/metrics"):
        response = gw.api.get(path)
        assert response.status_code == 200, (path, response.data[:200])
    for path in ("/incidents", f"/incidents/{incident}", f"/events/{raw}", "/sources", "/sources/src",
                 "/deliveries", "/settings"):
        response = console.get(path)
        assert response.status_code == 200, (path, response.data[:200])
    gw.delivery(gw.deliveries()[0]["id"])
    assert [row["status"] for row in gw.deliveries(sink="hook")] == ["delivered"] * 3
    assert rollbacks == []
