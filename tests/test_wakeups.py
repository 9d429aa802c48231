"""The outbox listener wakes dispatchers on NOTIFY and survives losing its connection; the
announcer turns a burst of queued rows into a few notifications."""
from __future__ import annotations

import threading
from types import SimpleNamespace

import pytest
from sqlalchemy import text

from gateway.pipeline import wakeups


@pytest.fixture
def engine(app, database_url):
    if not database_url.startswith("postgresql"):
        pytest.skip("LISTEN/NOTIFY is PostgreSQL's")
    return app.extensions["gateway"].engine


def listening(engine) -> tuple[wakeups.Listener, threading.Semaphore]:
    """A started listener whose dispatcher wake-ups are counted by the semaphore."""
    wakes = threading.Semaphore(0)
    listener = wakeups.Listener(SimpleNamespace(engine=engine, wake_dispatchers=wakes.release))
    listener.start()
    assert listener.listening.wait(10)
    return listener, wakes


def notify(engine) -> None:
    with engine.begin() as conn:
        conn.execute(text("SELECT pg_notify(:channel, '')"), {"channel": wakeups.CHANNEL})


def test_listener_wakes_dispatchers_and_listens_again_after_its_connection_is_killed(engine):
    listener, wakes = listening(engine)
    notify(engine)
    assert wakes.acquire(timeout=5)

    with engine.begin() as conn:
        killed = conn.execute(text("SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
                                   "WHERE application_name = :name"), {"name": wakeups.APPLICATION_NAME}).scalar()
    assert killed >= 1
    assert wakes.acquire(timeout=5), "a lost connection wakes the dispatchers: rows may have come meanwhile"
    assert listener.listening.wait(10)
    notify(engine)
    assert wakes.acquire(timeout=5)


def test_announcer_sends_a_burst_as_a_few_notifications(app, engine):
    runtime = app.extensions["gateway"].runtime
    _, wakes = listening(engine)
    announcer = wakeups.Announcer(engine)
    announcer.start()
    runtime.announcer = announcer
    for _ in range(500):
        runtime.notify_deliveries()
    assert wakes.acquire(timeout=5)
    notified = 1
    while wakes.acquire(timeout=0.5):
        notified += 1
    assert notified < 50
