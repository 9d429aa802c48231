"""GroupCommit: concurrent transactions committed together, each answered only after the commit that holds it."""
from __future__ import annotations

import threading

import pytest
from sqlalchemy import select, text
from sqlalchemy.exc import DBAPIError, IntegrityError

from gateway.settings import Settings
from gateway.store.db import (
    _GROUP_COMMITS, GroupCommit, HotStatement, RetryTransaction, commit_together, groups_commits, is_transient,
    make_engine,
)
from gateway.web.gunicorn_conf import default_threads
from gateway.store.models import RawRequest
from test_db_transactions import raw

raw_requests = RawRequest.__table__
INSERT = HotStatement(raw_requests.insert().returning(raw_requests.c.id))


@pytest.fixture
def engine(database_url):
    engine = make_engine(database_url)
    yield engine
    engine.dispose()


def stored(engine) -> set[str]:
    with engine.connect() as conn:
        return set(conn.execute(select(raw_requests.c.external_id)).scalars())


def insert(external_id: str):
    return lambda conn: INSERT.scalar(conn, raw(external_id))


def run_batch(committer: GroupCommit, works: dict, outcomes: dict | None = None) -> dict:
    """Run ``works`` (name -> work) as ONE batch: a first transaction holds the leader's turn until
    all of them wait behind it, so the next leader takes them together.  name -> result or error,
    in ``outcomes`` as each caller gets its answer."""
    release, outcomes = threading.Event(), {} if outcomes is None else outcomes

    def call(name, work):
        try:
            outcomes[name] = committer.run(work)
        except Exception as exc:
            outcomes[name] = exc

    first = threading.Thread(target=call, args=("first", lambda conn: release.wait(10)))
    first.start()
    threads = [threading.Thread(target=call, args=item) for item in works.items()]
    for thread in threads:
        thread.start()
        while committer.queued < threads.index(thread) + 1:  # each waits, in order, for the next batch
            threading.Event().wait(0.001)
    release.set()
    for thread in [first, *threads]:
        thread.join(10)
    return outcomes


def test_a_failing_transaction_in_a_batch_loses_only_its_own(engine):
    def failing(conn):
        INSERT.scalar(conn, raw("e-3"))
        raise ValueError("this request's work failed")

    outcomes = run_batch(GroupCommit(engine), {"e-2": insert("e-2"), "e-3": failing, "e-4": insert("e-4")})
    assert isinstance(outcomes["e-3"], ValueError)
    assert isinstance(outcomes["e-2"], int) and isinstance(outcomes["e-4"], int)
    assert stored(engine) == {"e-2", "e-4"}  # e-3's insert rolled back with its savepoint only


def test_a_batch_takes_savepoints_only_once_a_work_of_it_has_raised(engine, monkeypatch):
    """Savepoints cost two statements a work (round trips on PostgreSQL): a batch runs without
    them, and again with one for each work only when a work raised."""
    from gateway.store import db

    savepoints = []

    class Counted:
        def run(self, conn, params):
            savepoints.append(conn)
            return statement.run(conn, params)

    statement = db._SAVEPOINT
    monkeypatch.setattr(db, "_SAVEPOINT", Counted())
    calls = []

    def failing(conn):
        calls.append(conn)
        INSERT.scalar(conn, raw("e-6"))
        raise ValueError("this request's work failed")

    outcomes = run_batch(GroupCommit(engine), {"e-2": insert("e-2"), "e-3": insert("e-3")})
    assert isinstance(outcomes["e-2"], int) and isinstance(outcomes["e-3"], int) and savepoints == []
    outcomes = run_batch(GroupCommit(engine), {"e-4": insert("e-4"), "e-6": failing, "e-5": insert("e-5")})
    assert isinstance(outcomes["e-6"], ValueError) and len(calls) == 2
    assert len(savepoints) == 3  # the second run: one for each work of the batch
    assert stored(engine) == {"e-2", "e-3", "e-4", "e-5"}


def test_a_transaction_the_database_refuses_loses_only_its_own(engine):
    """A statement the database refuses (on PostgreSQL the transaction then refuses every statement
    until it is rolled back to the savepoint): the others of the batch are stored all the same."""
    def refused(conn):
        INSERT.scalar(conn, raw("e-3"))
        conn.execute(text("INSERT INTO no_such_table VALUES (1)"))

    outcomes = run_batch(GroupCommit(engine), {"e-2": insert("e-2"), "e-3": refused, "e-4": insert("e-4")})
    assert isinstance(outcomes["e-3"], DBAPIError) and not is_transient(outcomes["e-3"])
    assert isinstance(outcomes["e-2"], int) and isinstance(outcomes["e-4"], int)
    assert stored(engine) == {"e-2", "e-4"}


def poison(conn) -> None:
    """Work that succeeds but makes the COMMIT fail: a foreign key checked only at commit."""
    if conn.dialect.name == "sqlite":
        conn.exec_driver_sql("PRAGMA defer_foreign_keys = ON")
        conn.exec_driver_sql("INSERT INTO alerts (source_key, source_type, fingerprint, status, severity, title, "
                             "description, resource_id, resource_name, resource_type, occurred_at, received_at, "
                             "labels, annotations, links, origin, incident_id) VALUES ('src', 't', 'f', 'firing', "
                             "'info', 't', '', '', '', '', '2026-01-01', '2026-01-01', '{}', '{}', '[]', 'webhook', "
                             "999999)")
    else:
        conn.execute(text("CREATE TEMP TABLE parent (id int PRIMARY KEY) ON COMMIT DROP"))
        conn.execute(text("CREATE TEMP TABLE child (p int REFERENCES parent DEFERRABLE INITIALLY DEFERRED) "
                          "ON COMMIT DROP"))
        conn.execute(text("INSERT INTO child VALUES (1)"))


def test_a_failed_commit_fails_every_transaction_in_it(engine):
    outcomes = run_batch(GroupCommit(engine), {"e-2": insert("e-2"), "poison": poison, "e-4": insert("e-4")})
    assert all(isinstance(outcomes[name], IntegrityError) for name in ("e-2", "poison", "e-4")), outcomes
    assert stored(engine) == set()


def test_nothing_is_answered_before_the_commit_that_holds_it(engine):
    outcomes, seen_by_last = {}, {}

    def last_of_batch(conn):
        # e-2's work is done, but its batch has not committed: its caller must still be waiting.
        threading.Event().wait(0.2)
        seen_by_last.update(answered=set(outcomes) - {"first"}, stored=stored(engine))
        return INSERT.scalar(conn, raw("e-3"))

    run_batch(GroupCommit(engine), {"e-2": insert("e-2"), "e-3": last_of_batch}, outcomes)
    assert seen_by_last == {"answered": set(), "stored": set()}
    assert isinstance(outcomes["e-2"], int) and isinstance(outcomes["e-3"], int)
    assert stored(engine) == {"e-2", "e-3"}


def test_a_transient_error_is_retried_alone(engine):
    """A work that lost a race runs again by itself, in a transaction of its own; the others commit."""
    attempts = []

    def racing(conn):
        attempts.append(conn)
        INSERT.scalar(conn, raw(f"e-{4 + len(attempts)}"))
        if len(attempts) == 1:
            raise RetryTransaction("the row changed under it")

    outcomes = run_batch(GroupCommit(engine), {"e-2": insert("e-2"), "racing": racing})
    assert outcomes["racing"] is None and len(attempts) == 2
    assert stored(engine) == {"e-2", "e-6"}  # e-5, of the attempt that lost, rolled back


def test_commit_together_uses_the_engines_group_commit(database_url):
    engine = make_engine(database_url, group_commit=True)
    try:
        assert _GROUP_COMMITS.get(engine) is not None
        assert commit_together(engine, insert("e-7")) > 0
        assert stored(engine) == {"e-7"}
    finally:
        engine.dispose()


def test_group_commit_is_on_by_default_on_sqlite_only_and_brings_threads_to_share_it():
    sqlite, postgres = "sqlite:////tmp/x.db", "postgresql+psycopg://u@h/d"
    assert (groups_commits(sqlite), groups_commits(postgres)) == (True, False)
    assert (groups_commits(sqlite, False), groups_commits(postgres, True)) == (False, True)
    assert [Settings.from_environ(env).group_commit for env in ({}, {"GATEWAY_GROUP_COMMIT": "0"},
                                                                {"GATEWAY_GROUP_COMMIT": "1"})] == [None, False, True]
    assert [Settings.from_environ({"GATEWAY_GROUP_COMMIT": value}).group_commit
            for value in ("FALSE", "No", "true", "")] == [False, False, True, None]
    assert (default_threads(sqlite), default_threads(sqlite, False), default_threads(postgres),
            default_threads(postgres, True)) == (6, 1, 2, 2)
