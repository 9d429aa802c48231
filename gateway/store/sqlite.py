"""SQLite's own machinery beside SQLAlchemy's pool: one writer at a time across threads and
processes, and the daemon threads that work on a connection of their own (the WAL checkpointer,
the outbox's watcher in ``gateway.pipeline.wakeups``)."""
from __future__ import annotations

import fcntl
import logging
import os
import threading
import time
import weakref
from typing import Optional

log = logging.getLogger(__name__)


class WriterLock:
    """One SQLite writer at a time across threads *and* processes (gunicorn workers).

    Writers queue on a thread lock and an ``flock`` on a file beside the database, and wake
    the moment it is free, instead of in SQLite's busy handler, which sleeps up to 100 ms
    per try and made p99 latency explode with several workers.
    """

    def __init__(self, database: Optional[str]):
        self._threads = threading.Lock()
        self._path = f"{database}-writer.lock" if database and database != ":memory:" else None
        self._fd: Optional[int] = None
        self._pid = 0

    def _file(self) -> Optional[int]:
        if self._path and self._pid != os.getpid():  # a descriptor inherited across fork is shared
            self._fd, self._pid = os.open(self._path, os.O_RDWR | os.O_CREAT, 0o600), os.getpid()
        return self._fd

    def __enter__(self) -> None:
        self._threads.acquire()
        try:
            if (fd := self._file()) is not None:
                fcntl.flock(fd, fcntl.LOCK_EX)
        except BaseException:
            self._threads.release()
            raise

    def __exit__(self, *exc) -> None:
        try:
            if self._fd is not None and self._pid == os.getpid():
                fcntl.flock(self._fd, fcntl.LOCK_UN)
        finally:
            self._threads.release()

    def __del__(self) -> None:
        if self._fd is not None and self._pid == os.getpid():
            os.close(self._fd)


class SQLiteSideThread(threading.Thread):
    """A daemon thread that does one ``round`` every ``INTERVAL`` on a SQLite connection of its
    own (outside the pool, never in a transaction), for as long as its ``owner`` lives: it ends
    with the engine, lock or runtime it serves, not with the process."""

    INTERVAL: float

    def __init__(self, name: str, database: str, owner: object):
        super().__init__(name=name, daemon=True)
        self._database, self._owner = database, weakref.ref(owner)

    def run(self) -> None:
        import sqlite3

        conn = sqlite3.connect(self._database, timeout=0, isolation_level=None, check_same_thread=False)
        try:
            while (owner := self._owner()) is not None:
                self.round(conn, owner)
                del owner  # not held while sleeping: the owner may go meanwhile
                time.sleep(self.INTERVAL)
        finally:
            conn.close()

    def round(self, conn, owner) -> None:
        raise NotImplementedError


class WalCheckpointer(SQLiteSideThread):
    """Copies SQLite's WAL back into the database from a background thread.

    SQLite's own checkpoint runs inside the commit that crosses ``wal_autocheckpoint``:
    one webhook in ~80 paid ~4 ms for it while holding the writer lock, and every other
    writer waited (half of all commit time, measured).  Here each round first copies what
    it can alongside the writers, then takes the writer lock for a second pass that has
    only the last few pages left.  That second pass matters: the WAL only restarts from
    its beginning once every frame is copied, which a pass racing the writers never
    achieves, so without it the file would grow without end.
    """

    INTERVAL = 0.1
    SAFETY_NET_PAGES = 20_000
    """``wal_autocheckpoint`` stays on, this high, in case the thread falls behind or, in a
    short-lived process, is not running."""

    def __init__(self, database: str, lock: WriterLock):
        super().__init__("wal-checkpointer", database, lock)

    def round(self, conn, lock: WriterLock) -> None:
        import sqlite3

        try:
            conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchall()
            with lock:
                conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchall()
        except sqlite3.Error as exc:  # busy, or the file is gone: the next round tries again
            log.debug("WAL checkpoint skipped: %s", exc)
