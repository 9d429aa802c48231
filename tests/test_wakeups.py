"""The outbox listener wakes dispatchers on NOTIFY and survives losing its connection; the
announcer turns a burst of queued rows into a few notifications; on SQLite, the watcher wakes
them on another process's commit."""
from __future__ import annotations

import subprocess
import sys
import threading
from types import SimpleNamespace

import pytest
from sqlalchemy import text

from gateway.pipeline import wakeups
from gateway.store.db import make_engine


@pytest.fixture
def engine(request, database_url):
    """The app's engine on PostgreSQL; on SQLite the test is skipped before an app is built."""
    if not database_url.startswith("postgresql"):
        pytest.skip("LISTEN/NOTIFY is PostgreSQL's")
    return request.getfixturevalue("app").extensions["gateway"].engine


def listening(engine) -> tuple[wakeups.Listener, threading.Semaphore]:
    """A started listener whose dispatcher wake-ups are counted by the semaphore."""
    wakes = threading.Semaphore(0)
    listener = wakeups.Listener(SimpleNamespace(engine=engine, wake_dispatchers=wakes.release))
    listener.start()
    assert listener.listening.wait(10)
    return listener, wakes


def listener_pids(engine) -> set[int]:
    """Backends of outbox listeners on this database: other runs' and other tests' too, so a
    test tells its own listener's apart by comparing these before and after starting it."""
    with engine.connect() as conn:
        return set(conn.execute(text("SELECT pid FROM pg_stat_activity WHERE application_name = :name "
                                     "AND datname = current_database()"),
                                {"name": wakeups.APPLICATION_NAME}).scalars())


def notify(engine) -> None:
    with engine.begin() as conn:
        conn.execute(text("SELECT pg_notify(:channel, '')"), {"channel": wakeups.CHANNEL})


def test_listener_wakes_dispatchers_and_listens_again_after_its_connection_is_killed(engine):
    others = listener_pids(engine)
    listener, wakes = listening(engine)
    started = listener_pids(engine) - others
    assert len(started) == 1, f"not one new listener: {started}"
    (own,) = started
    notify(engine)
    assert wakes.acquire(timeout=5)

    with engine.begin() as conn:
        killed = conn.execute(text("SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                                   "WHERE pid = :pid AND application_name = :name"),
                              {"pid": own, "name": wakeups.APPLICATION_NAME}).scalars().all()
    assert killed == [True]
    assert wakes.acquire(timeout=5), "a lost connection wakes the dispatchers: rows may have come meanwhile"
    assert listener.listening.wait(10)
    notify(engine)
    assert wakes.acquire(timeout=5)


def test_announcer_sends_a_burst_as_a_few_notifications(engine, app):  # engine first: it skips SQLite
    runtime = app.extensions["gateway"].runtime
    _, wakes = listening(engine)
    announcer = wakeups.Announcer(engine)
    announcer.start()
    runtime.wakeups.announcer = announcer
    for _ in range(500):
        runtime.notify_deliveries()
    assert wakes.acquire(timeout=5)
    notified = 1
    while wakes.acquire(timeout=0.5):
        notified += 1
    assert notified < 50


def test_the_wakeups_room_imports_no_runtime():
    """The runtime holds the wake-ups; the wake-ups know nothing of it, not even for type hints."""
    code = "import sys, gateway.pipeline.wakeups; print('gateway.pipeline.runtime' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout == "False\n"


def test_on_sqlite_another_process_committing_wakes_the_dispatchers_and_nothing_else_does(tmp_path):
    database = tmp_path / "gateway.db"
    engine = make_engine(f"sqlite:///{database}")
    with engine.begin() as conn:
        conn.execute(text("CREATE TABLE queued (n INTEGER)"))
    signal = wakeups.WakeUps(engine)
    signal.start(announce=False, listen=True)
    commit = ("import sqlite3, sys; c = sqlite3.connect(sys.argv[1]); "
              "c.execute('INSERT INTO queued VALUES (1)'); c.commit()")
    for _ in range(20):  # the watcher's first look may come after the first commit: it sees the next
        seen = signal.generation
        subprocess.run([sys.executable, "-c", commit, str(database)], check=True)
        signal.wait_for_deliveries(5, seen)
        if signal.generation != seen:
            break
    assert signal.generation != seen, "no wake-up after another process's commit"
    seen = signal.generation
    with engine.connect() as conn:
        conn.execute(text("SELECT count(*) FROM queued")).scalar()
    signal.wait_for_deliveries(0.5, seen)
    assert signal.generation == seen, "woken with nothing committed"
    engine.dispose()
