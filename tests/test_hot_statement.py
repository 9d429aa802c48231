"""HotStatement, the ingest fast path, stores exactly what Connection.execute would, on both databases."""
from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest
from sqlalchemy import bindparam, insert, select, update
from sqlalchemy.exc import IntegrityError

from gateway.store.db import HotStatement, make_engine
from gateway.store.models import RawRequest

raw_requests = RawRequest.__table__
KST = timezone(timedelta(hours=9))


def raw(**changes) -> dict:
    values = dict(source_key="src", source_type="testsrc", method="POST", path="/hooks/testsrc/src/",
                  headers={"content-type": "application/json", "x-이름": "값"}, body=b'{"a": 1}',
                  content_type="application/json", remote_addr="127.0.0.1",
                  received_at=datetime(2026, 1, 2, 12, 0, tzinfo=KST), external_id="e-1", alert_count=1)
    return {**values, **changes}


@pytest.fixture
def engine(database_url):
    engine = make_engine(database_url)
    yield engine
    engine.dispose()


def stored(conn, row_id: int) -> tuple:
    row = conn.execute(select(raw_requests).where(raw_requests.c.id == row_id)).one()
    return (row.headers, row.body, row.received_at, row.external_id, row.alert_count)


def test_insert_matches_execute_with_types_applied(engine):
    statement = insert(raw_requests).returning(raw_requests.c.id)
    with engine.begin() as conn:
        fast = HotStatement(statement).scalar(conn, raw())
        slow = conn.execute(statement, raw(external_id="e-2")).scalar_one()
        assert stored(conn, fast)[:3] == stored(conn, slow)[:3] == (
            {"content-type": "application/json", "x-이름": "값"}, b'{"a": 1}',
            datetime(2026, 1, 2, 3, 0, tzinfo=timezone.utc))


def test_literals_in_the_statement_and_repeated_binds(engine):
    """The statement's own values (+ 1) are bound without being passed; one name may appear twice."""
    statement = HotStatement(
        update(raw_requests)
        .where(raw_requests.c.external_id == bindparam("key"))
        .values(alert_count=raw_requests.c.alert_count + 1, source_key=bindparam("key") + "-seen")
        .returning(raw_requests.c.alert_count, raw_requests.c.source_key)
    )
    with engine.begin() as conn:
        conn.execute(insert(raw_requests), raw())
        assert tuple(statement.first(conn, {"key": "e-1"})) == (2, "e-1-seen")
        assert statement.first(conn, {"key": "nope"}) is None
        assert statement.run(conn, {"key": "e-1"}) == 1


def test_a_missing_value_is_named(engine):
    with engine.begin() as conn, pytest.raises(KeyError, match="alert_count"):
        HotStatement(insert(raw_requests).values(alert_count=bindparam("alert_count"))).run(
            conn, {k: v for k, v in raw().items() if k != "alert_count"})


def test_database_errors_are_sqlalchemy_errors(engine):
    """Ingest's retry and 503 handling catch SQLAlchemy's exceptions, so the fast path must raise them too."""
    statement = HotStatement(insert(raw_requests))
    with engine.begin() as conn:
        assert statement.run(conn, raw()) == 1
    with pytest.raises(IntegrityError), engine.begin() as conn:
        statement.run(conn, dict(raw(), source_key=None))  # NOT NULL


def test_run_many_applies_each_mapping_and_counts_the_rows_changed_in_all(engine):
    """The outbox writes a batch's outcomes this way; a row changed by none (its claim lost) is not counted."""
    bump = HotStatement(update(raw_requests).where(raw_requests.c.external_id == bindparam("key"))
                        .values(alert_count=bindparam("count")))
    with engine.begin() as conn:
        conn.execute(insert(raw_requests), [raw(external_id=f"e-{n}") for n in range(3)])
        assert bump.run_many(conn, [{"key": "e-0", "count": 5}, {"key": "gone", "count": 6},
                                    {"key": "e-2", "count": 7}]) == 2
        assert bump.run_many(conn, []) == 0
        counts = dict(conn.execute(select(raw_requests.c.external_id, raw_requests.c.alert_count)).all())
    assert counts == {"e-0": 5, "e-1": 1, "e-2": 7}
