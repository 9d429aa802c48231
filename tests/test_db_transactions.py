"""SQLite's write lock is taken by writers only, and a lost connection invalidates the pool."""
from __future__ import annotations

import shutil
import sqlite3
import threading
from datetime import datetime, timezone

import pytest
import testkit
from alembic.script import ScriptDirectory
from sqlalchemy import func, insert, select, text
from sqlalchemy.exc import DBAPIError, IntegrityError

from gateway.store.db import HotStatement, alembic_config, is_transient, make_engine, run_in_transaction, upgrade
from gateway.store.models import RawRequest

raw_requests = RawRequest.__table__


def raw(external_id: str = "e-1") -> dict:
    return dict(source_key="src", source_type="testsrc", method="POST", path="/hooks/testsrc/src/", headers={},
                body=b"{}", content_type="application/json", remote_addr="127.0.0.1",
                received_at=datetime(2026, 1, 2, tzinfo=timezone.utc), external_id=external_id, alert_count=1)


@pytest.fixture
def engine(database_url):
    engine = make_engine(database_url)
    yield engine
    engine.dispose()


@pytest.fixture
def sqlite_file(tmp_path, sqlite_template) -> str:
    path = tmp_path / "gateway.db"
    shutil.copy(sqlite_template, path)
    return str(path)


def other_writer_can_begin(path: str) -> bool:
    """Whether a second connection gets SQLite's write lock right now (no waiting)."""
    other = sqlite3.connect(path, timeout=0, isolation_level=None)
    try:
        other.execute("BEGIN IMMEDIATE")
        other.execute("ROLLBACK")
        return True
    except sqlite3.OperationalError as exc:
        assert "locked" in str(exc)
        return False
    finally:
        other.close()


def test_a_read_takes_no_write_lock(sqlite_file):
    """Reads (API pages, outbox reads, the source lookup of a webhook) must not make writers wait."""
    engine = make_engine(f"sqlite:///{sqlite_file}")
    try:
        with engine.connect() as conn:
            assert conn.execute(select(func.count()).select_from(raw_requests)).scalar_one() == 0
            assert conn.in_transaction()
            assert other_writer_can_begin(sqlite_file)
    finally:
        engine.dispose()


def test_run_in_transaction_takes_the_write_lock_up_front(sqlite_file):
    """A writer holds the lock from its first statement on, so it never fails to upgrade half-way."""
    engine = make_engine(f"sqlite:///{sqlite_file}")
    try:
        assert run_in_transaction(engine, lambda conn: other_writer_can_begin(sqlite_file)) is False
    finally:
        engine.dispose()


def test_a_migration_waits_for_a_writer_instead_of_failing(tmp_path):
    """Migrations write outside run_in_transaction, so they mark their connection ``writing``:
    a deferred transaction that read before a writer committed could not upgrade afterwards
    ("database is locked")."""
    url = f"sqlite:///{tmp_path / 'gateway.db'}"
    upgrade(url, "0002")
    engine = make_engine(url)
    wrote, go, failures = threading.Event(), threading.Event(), []

    def write(conn):
        conn.execute(insert(raw_requests), raw())
        wrote.set()
        go.wait(10)

    def migrate():
        try:
            upgrade(url)
        except Exception as exc:  # reported by the assertion below
            failures.append(exc)

    writer = threading.Thread(target=run_in_transaction, args=(engine, write))
    writer.start()
    try:
        assert wrote.wait(10)
        migration = threading.Thread(target=migrate)
        migration.start()
        migration.join(0.5)
        assert migration.is_alive()  # queued behind the writer
    finally:
        go.set()
        writer.join(10)
    migration.join(30)
    assert failures == []
    with engine.connect() as conn:
        head = ScriptDirectory.from_config(alembic_config(url)).get_current_head()
        assert conn.execute(text("SELECT version_num FROM alembic_version")).scalar_one() == head
        assert conn.execute(select(func.count()).select_from(raw_requests)).scalar_one() == 1
    engine.dispose()


def test_a_lost_connection_invalidates_the_pool(engine):
    """As execute does: the connections opened before the failure are as dead, so they reconnect."""
    statement = HotStatement(insert(raw_requests))
    with engine.connect() as pooled, engine.connect() as conn:
        older = pooled.connection.dbapi_connection
        pooled.close()  # back to the pool, opened before the failure
        with conn.begin():
            statement.run(conn, raw("e-1"))
        conn.begin()
        conn.connection.dbapi_connection.close()  # the server went away
        with pytest.raises(DBAPIError) as raised:
            statement.run(conn, raw("e-2"))
        assert raised.value.connection_invalidated and is_transient(raised.value)
        assert conn.invalidated
    with engine.connect() as conn:
        assert conn.connection.dbapi_connection is not older
        assert conn.execute(select(raw_requests.c.external_id)).scalars().all() == ["e-1"]


def test_the_cursor_outlives_a_refused_statement(engine):
    """An error that leaves the connection alive leaves its kept cursor usable."""
    statement = HotStatement(insert(raw_requests))
    with engine.connect() as conn:
        with pytest.raises(IntegrityError), conn.begin():
            statement.run(conn, raw())
            statement.run(conn, dict(raw(), source_key=None))  # NOT NULL
        with conn.begin():
            assert statement.run(conn, raw("e-2")) == 1


@pytest.mark.parametrize("setting, level", [(None, 2), ("FULL", 2), ("normal", 1)])
def test_sqlite_syncs_every_commit_unless_told_normal(tmp_path, write_config, setting, level):
    """FULL (2) by default, so a 202 survives power loss; NORMAL (1) only when the operator
    sets GATEWAY_SQLITE_SYNCHRONOUS for it."""
    from gateway.app import create_app

    overrides = {"SQLITE_SYNCHRONOUS": setting} if setting else {}
    app = create_app({"DATABASE_URL": f"sqlite:///{tmp_path / 'gateway.db'}", "CONFIG": write_config(),
                      **overrides}, extra_plugins=[testkit])
    engine = app.extensions["gateway"].engine
    try:
        with engine.connect() as conn:
            assert conn.exec_driver_sql("PRAGMA synchronous").scalar_one() == level
    finally:
        engine.dispose()


def test_an_unknown_sqlite_synchronous_level_is_refused():
    with pytest.raises(ValueError, match="GATEWAY_SQLITE_SYNCHRONOUS='OFF': use one of FULL, NORMAL"):
        make_engine("sqlite://", sqlite_synchronous="OFF")
