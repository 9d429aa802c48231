"""Waking dispatchers when outbox rows are queued: in this process, and in others through PostgreSQL.

``WakeUps`` is the signal: a commit that queued rows calls ``notify_deliveries``, which wakes
this process's dispatchers at once and, through the ``Announcer``, those of other processes.
Those learn of rows queued elsewhere, by another ``gateway serve`` worker or on another
machine, through ``NOTIFY``, which their ``Listener`` turns into a wake-up, so a
``gateway worker`` fleet sends within milliseconds and can poll rarely.  The poll stays as
the safety net: a notification is lost if no one was listening at that moment (a restart, a
dropped connection), the rows never are.  SQLite has no NOTIFY and needs no announcing (one
machine): there a ``Watcher`` sees other processes' commits in the database file itself.
"""
from __future__ import annotations

import logging
import sqlite3
import threading
import time
from typing import Optional

from sqlalchemy import Engine, text
from sqlalchemy.exc import SQLAlchemyError

from gateway.store.sqlite import SQLiteSideThread

log = logging.getLogger(__name__)
CHANNEL = "gateway_outbox"
APPLICATION_NAME = "gateway-outbox-listener"
"""How the listening connection shows in ``pg_stat_activity``."""


class WakeUps:
    """The signal between those who queue outbox rows and the dispatchers that deliver them."""

    def __init__(self, engine: Engine):
        self.engine = engine
        self._changed = threading.Condition()
        self.generation = 0
        """Counts wake-ups, so a dispatcher can tell it missed one (see ``wait_for_deliveries``)."""
        self.announcer: Optional[Announcer] = None
        """Set by ``start``: tells other processes of queued rows."""

    def notify_deliveries(self) -> None:
        """After a commit that queued outbox rows: wake this process's dispatchers, and
        through the announcer (PostgreSQL) those of other processes."""
        self.wake_dispatchers()
        if self.announcer is not None:
            self.announcer.announce()

    def wake_dispatchers(self) -> None:
        with self._changed:
            self.generation += 1
            self._changed.notify_all()

    def wait_for_deliveries(self, timeout: float, seen: int) -> None:
        """Wait up to ``timeout`` for a wake-up after ``seen``, the ``generation`` read before
        the dispatcher last looked: one that came while it looked is not lost."""
        with self._changed:
            self._changed.wait_for(lambda: self.generation != seen, timeout)

    def start(self, *, announce: bool, listen: bool, timeout: float = 5.0) -> None:
        """``announce``: tell other processes of rows this one queues (ingest and the API do);
        ``listen``: wake this process's dispatchers for rows queued elsewhere.

        Returns once the listener listens (or ``timeout`` passed; the poll covers the gap), so
        that rows queued after start-up wake it.  On SQLite only ``listen`` does anything: it
        starts a ``Watcher`` on the database file.
        """
        if self.engine.dialect.name == "sqlite":
            database = self.engine.url.database
            if listen and database and database != ":memory:":
                Watcher(self, database).start()
            return
        if self.engine.dialect.name != "postgresql":
            return
        if announce:
            self.announcer = Announcer(self.engine)
            self.announcer.start()
        if listen:
            listener = Listener(self)
            listener.start()
            if not listener.listening.wait(timeout):
                log.warning("outbox listener not listening after %.0fs; dispatchers poll until it is", timeout)


class Announcer(threading.Thread):
    """Sends one NOTIFY for any number of queued batches: request threads only set an event,
    so ingest pays no round trip for it, and a burst of webhooks costs a NOTIFY per interval."""

    INTERVAL = 0.02

    def __init__(self, engine: Engine):
        super().__init__(name="outbox-announcer", daemon=True)
        self._engine = engine
        self._pending = threading.Event()

    def announce(self) -> None:
        self._pending.set()

    def run(self) -> None:
        while self._pending.wait():
            self._pending.clear()
            try:
                with self._engine.begin() as conn:
                    conn.execute(text("SELECT pg_notify(:channel, '')"), {"channel": CHANNEL})
            except SQLAlchemyError as exc:  # the listeners' poll picks the rows up
                log.warning("could not announce queued deliveries: %s", exc)
            time.sleep(self.INTERVAL)


class Listener(threading.Thread):
    """LISTENs on a connection of its own (outside the pool, which it would hold for ever) and
    wakes this process's dispatchers on every notification; reconnects when it is dropped."""

    RECONNECT_MAX = 30.0

    def __init__(self, wakeups: WakeUps):
        super().__init__(name="outbox-listener", daemon=True)
        self._wakeups = wakeups
        self.listening = threading.Event()

    def run(self) -> None:
        delay = 1.0
        while True:
            try:
                self._listen()
            except Exception as exc:  # the database went away: wake once (rows may have come), retry
                if self.listening.is_set():  # it had been listening: a new outage, not the same one
                    delay = 1.0
                self.listening.clear()
                log.warning("outbox listener lost its connection (%s); reconnecting in %.0fs", exc, delay)
                self._wakeups.wake_dispatchers()
                time.sleep(delay)
                delay = min(delay * 2, self.RECONNECT_MAX)

    def _listen(self) -> None:
        engine = self._wakeups.engine
        cargs, cparams = engine.dialect.create_connect_args(engine.url)
        cparams.setdefault("application_name", APPLICATION_NAME)
        with engine.dialect.loaded_dbapi.connect(*cargs, **cparams, autocommit=True) as conn:
            conn.execute(f"LISTEN {CHANNEL}")
            self.listening.set()
            while True:
                for _ in conn.notifies(timeout=60, stop_after=1):
                    self._wakeups.wake_dispatchers()
                conn.execute("SELECT 1")  # a quiet connection that died shows here, not never


_UNREAD = object()
"""The watcher's version before its first look: that look wakes nobody."""


class Watcher(SQLiteSideThread):
    """SQLite's stand-in for a listener.  ``PRAGMA data_version`` on a connection of its own
    changes whenever any other connection, in this process or another, commits to the file;
    looked at every ``INTERVAL``, a change wakes this process's dispatchers.  So a ``gateway
    worker`` beside ``gateway serve`` sends a queued row within about ``INTERVAL``, not at its
    next poll.  Any commit wakes them, not only one that queued rows: a sender that then finds
    nothing waits ``IDLE_PAUSE`` before it claims again, as after any wake-up.

    The pragma is a read of the WAL's index, as any reader's: writers do not wait for it.  The
    thread ends with the ``WakeUps`` it wakes (a process's runtime, or a test's)."""

    INTERVAL = 0.05

    def __init__(self, wakeups: WakeUps, database: str):
        super().__init__("outbox-watcher", database, wakeups)
        self._seen: object = _UNREAD

    def round(self, conn, wakeups: WakeUps) -> None:
        try:
            version = conn.execute("PRAGMA data_version").fetchone()[0]
        except sqlite3.Error as exc:  # busy recovering the WAL, or the file is gone
            log.debug("could not read SQLite's data_version: %s", exc)
            version = None
        if self._seen is not _UNREAD and (version is None or version != self._seen):  # None: rows may have come
            wakeups.wake_dispatchers()
        self._seen = version
