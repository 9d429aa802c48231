"""Engines, transactions and migrations for SQLite (embedded default) and PostgreSQL."""
from __future__ import annotations

import logging
import os
import random
import threading
import time
import weakref
from contextlib import contextmanager, nullcontext
from pathlib import Path
from typing import Any, Callable, Iterator, Mapping, Optional, Sequence, TypeVar

from sqlalchemy import Connection, Engine, create_engine, event, text
from sqlalchemy.exc import DBAPIError, OperationalError

from gateway.store.sqlite import WalCheckpointer, WriterLock

log = logging.getLogger(__name__)
T = TypeVar("T")

MIGRATIONS = Path(__file__).parent / "migrations"


def default_database_url() -> str:
    """SQLite in ``instance/`` under the working directory: the embedded default, no setup."""
    return f"sqlite:///{os.path.abspath(os.path.join('instance', 'gateway.db'))}"


_WRITE_LOCKS: "weakref.WeakKeyDictionary[Engine, WriterLock]" = weakref.WeakKeyDictionary()


def start_wal_checkpointer(engine: Engine) -> None:
    """For long-running processes (``gateway serve`` workers, ``gateway worker``) on SQLite.

    Short-lived ones (the CLI, tests) leave checkpointing to SQLite, which also folds the
    WAL back into the database file when their last connection closes; the thread's own
    connection would prevent that.
    """
    database, lock = engine.url.database, _WRITE_LOCKS.get(engine)
    if database and database != ":memory:" and lock is not None:
        WalCheckpointer(database, lock).start()


SQLITE_SYNCHRONOUS = ("FULL", "NORMAL")
"""SQLite's ``synchronous`` levels the gateway runs with (``GATEWAY_SQLITE_SYNCHRONOUS``).

FULL, the default, syncs the WAL at every commit, so a 202 survives an OS crash or power
loss; NORMAL syncs only at checkpoints, so a 202 survives a crash of the process, but the
last commits before a power loss can be lost.  ``make bench`` measures both."""


def groups_commits(url: str, group_commit: Optional[bool] = None) -> bool:
    """Whether an engine for ``url`` commits concurrent transactions together: ``group_commit``, or
    by default on SQLite only.  There every commit syncs the WAL (``synchronous=FULL``) under the one
    writer lock, so a batch pays one sync for many webhooks (measured ~3x the webhooks/s, bench/HISTORY.md).
    On PostgreSQL a batch spares its webhooks their own BEGIN and COMMIT (ingest alone with 6 threads a
    worker: +8 to +29 % webhooks/s, by host), but with the dispatchers in the serve workers, delivery
    lag p50 went from ~30 ms to 0.04-5 s, for reasons not found (no long lock waits, no deadlocks:
    docs/scale-out.md), so it is opt-in there."""
    return url.startswith("sqlite") if group_commit is None else group_commit


def make_engine(url: str, *, sqlite_synchronous: str = "FULL", group_commit: Optional[bool] = None) -> Engine:
    """An engine tuned per backend.

    SQLite: WAL (readers never block the writer), ``sqlite_synchronous`` (one of
    SQLITE_SYNCHRONOUS, any case), a busy timeout, and ``BEGIN IMMEDIATE``
    for ``run_in_transaction``'s transactions, so a writer takes the write lock up front,
    under the ``WriterLock``, instead of failing to upgrade it half-way (the classic
    "database is locked" under concurrent writers).  Every other transaction is a plain
    ``BEGIN``: a WAL reader needs no lock, and one taking the write lock would make the
    writers wait for it in SQLite's busy handler, outside the ``WriterLock``.

    ``group_commit``: ``commit_together`` commits concurrent transactions together (``GroupCommit``);
    None: ``groups_commits``'s default for the database.
    """
    if url.startswith("sqlite"):
        synchronous = sqlite_synchronous.upper()
        if synchronous not in SQLITE_SYNCHRONOUS:
            raise ValueError(f"GATEWAY_SQLITE_SYNCHRONOUS={sqlite_synchronous!r}: use one of "
                             f"{', '.join(SQLITE_SYNCHRONOUS)}")
        engine = create_engine(url, connect_args={"timeout": 30, "check_same_thread": False})

        @event.listens_for(engine, "connect")
        def _sqlite_pragmas(dbapi_conn, _record):
            dbapi_conn.isolation_level = None  # we issue BEGIN ourselves
            cur = dbapi_conn.cursor()
            cur.execute("PRAGMA journal_mode=WAL")
            cur.execute(f"PRAGMA synchronous={synchronous}")
            cur.execute("PRAGMA foreign_keys=ON")
            cur.execute(f"PRAGMA wal_autocheckpoint={WalCheckpointer.SAFETY_NET_PAGES}")
            cur.close()

        @event.listens_for(engine, "begin")
        def _sqlite_begin(conn):
            (_BEGIN_IMMEDIATE if conn.get_execution_options().get(_WRITER) else _BEGIN).run(conn, {})

        _WRITE_LOCKS[engine] = WriterLock(engine.url.database)
    else:
        # No pre-ping: it costs a round trip per transaction; a dropped connection is retried instead.
        engine = create_engine(url, pool_size=10, max_overflow=10, pool_recycle=1800)
    if groups_commits(url, group_commit):
        _GROUP_COMMITS[engine] = GroupCommit(engine)
    return engine


class HotStatement:
    """A statement run for every webhook: compiled once per dialect and executed straight
    on the connection's DBAPI cursor, inside the caller's transaction.

    ``Connection.execute`` repeats a compiled-cache lookup, parameter set-up and result
    set-up on every call, and even ``exec_driver_sql`` keeps the last; ingest runs three
    to four statements per webhook, on SQLite inside the one-writer section.  Measured
    in-process per webhook: ``execute`` to ``exec_driver_sql`` took SQLite from 695 to
    644 µs; ``exec_driver_sql`` to the cursor, later, from 508 to 422 µs, and PostgreSQL
    client CPU from 869 to ~760 µs.

    What stays: the statement is a Core construct; values pass through each column type's
    bind processor; errors go through ``execute``'s own handling, so they are raised as
    SQLAlchemy's ``DBAPIError`` family, and a lost connection invalidates it and the pool
    (the connections opened before it reconnect).  What goes: column defaults (every
    value the statement binds must be given), events, and typed results: use it for
    writes and their RETURNING ids, not for reading rows.
    """

    def __init__(self, statement):
        self.statement = statement
        self._plans: dict[tuple[str, frozenset], tuple] = {}

    def run(self, conn: Connection, params: Mapping[str, Any]) -> int:
        """Execute; the number of rows it changed."""
        cursor = self._execute(conn, params)
        if cursor.description:  # RETURNING: sqlite3 counts the rows only once they are read
            cursor.fetchall()
        return cursor.rowcount

    def first(self, conn: Connection, params: Mapping[str, Any]) -> Optional[tuple]:
        """Execute; the first row it returned (RETURNING), or None."""
        cursor = self._execute(conn, params)
        row = cursor.fetchone()
        if row is not None:
            cursor.fetchall()  # the rest, so the cursor is free for the next statement
        return row

    def scalar(self, conn: Connection, params: Mapping[str, Any]) -> Any:
        """Execute; the first column of the first row it returned, or None."""
        row = self.first(conn, params)
        return row[0] if row is not None else None

    def run_many(self, conn: Connection, params: Sequence[Mapping[str, Any]]) -> int:
        """Execute once per mapping, all given the same keys, in one call to the driver (psycopg
        pipelines them: one round trip, not one each); the number of rows changed in all."""
        if not params:
            return 0
        sql, names, constants, slots = self._plan_for(conn, params[0])
        return self._call(conn, "executemany", sql, [self._args(names, constants, slots, p) for p in params]).rowcount

    def _plan_for(self, conn: Connection, params: Mapping[str, Any]) -> tuple:
        key = (conn.dialect.name, frozenset(params))
        return self._plans.get(key) or self._plan(conn.dialect, key)

    @staticmethod
    def _args(names, constants, slots, params: Mapping[str, Any]):
        values = list(constants)
        for index, name, process in slots:
            values[index] = process(params[name]) if process else params[name]
        return dict(zip(names, values)) if names else tuple(values)

    def _execute(self, conn: Connection, params: Mapping[str, Any]):
        sql, names, constants, slots = self._plan_for(conn, params)
        return self._call(conn, "execute", sql, self._args(names, constants, slots, params))

    @staticmethod
    def _call(conn: Connection, method: str, sql: str, args):
        # One cursor per database connection, kept in the pool's per-connection info (which
        # is dropped with an invalidated connection): a new psycopg cursor costs ~4% of a webhook.
        cursor = conn.connection.info.get("hot_cursor")
        if cursor is None:
            cursor = conn.connection.info["hot_cursor"] = conn.connection.cursor()
        try:
            getattr(cursor, method)(sql, args)
        except conn.dialect.loaded_dbapi.Error as exc:
            # Private, but the very handling execute applies.  No cursor: given one, it closes
            # it after any error short of a lost connection, and this one is kept for reuse.
            conn._handle_dbapi_exception(exc, sql, args, None, None)
        return cursor

    def _plan(self, dialect, key) -> tuple:
        """The SQL, the bind names (None when positional), the literal values the statement
        carries itself (bind-processed once), and for the rest: where each given value goes."""
        compiled = self.statement.compile(dialect=dialect, column_keys=list(key[1]))
        order = list(compiled.positiontup) if compiled.positional else list(compiled.binds)
        constants, slots, missing = [], [], []
        for index, name in enumerate(order):
            bind = compiled.binds[name]
            process = bind.type.dialect_impl(dialect).bind_processor(dialect)
            if name in key[1]:
                constants.append(None)
                slots.append((index, name, process))
            elif bind.callable is None and not bind.required:
                constants.append(process(bind.value) if process else bind.value)
            else:
                missing.append(name)
        if missing:
            raise KeyError(f"{', '.join(sorted(missing))}: not given for {self.statement}")
        plan = (compiled.string, None if compiled.positional else order, constants, slots)
        self._plans[key] = plan
        return plan


_BEGIN_IMMEDIATE = HotStatement(text("BEGIN IMMEDIATE"))
_BEGIN = HotStatement(text("BEGIN"))
_WRITER = "gateway_writer"


def writing(conn: Connection) -> Connection:
    """Mark ``conn``'s transactions as writes: on SQLite they ``BEGIN IMMEDIATE`` (see make_engine)."""
    return conn.execution_options(**{_WRITER: True})


@contextmanager
def reading(engine: Engine) -> Iterator[Connection]:
    """A connection for reads, as ``with reading(engine) as conn:``; writes go through ``run_in_transaction``.

    It ends in COMMIT, not the ROLLBACK of closing a connection: psycopg forgets every statement it
    prepared on a connection that rolls back, so the next webhooks on it planned theirs anew, five
    times custom, before PostgreSQL settled on one plan.  With the dispatcher's two reads a batch
    rolling back, ingest planned 1 execution in 4 (bench/HISTORY.md, "Session 15").  A failed read rolls back.
    """
    with engine.connect() as conn:
        yield conn
        conn.commit()


class RetryTransaction(Exception):
    """Raised inside a transaction that found its rows changed under it: run it again."""


def is_transient(exc: BaseException) -> bool:
    """Errors a retried transaction can get past: lost races, deadlocks, busy SQLite."""
    if isinstance(exc, RetryTransaction):
        return True
    if not isinstance(exc, DBAPIError):
        return False
    if exc.connection_invalidated:  # the server restarted or dropped an idle connection
        return True
    sqlstate = getattr(getattr(exc, "orig", None), "sqlstate", None)
    if sqlstate in ("40001", "40P01", "23505"):  # serialization, deadlock, unique violation
        return True
    return isinstance(exc, OperationalError) and "locked" in str(exc.orig).lower()


def refusal_reason(exc: DBAPIError) -> str:
    """The driver's first line on why the database refused a value: no SQL, no parameters."""
    return str(exc.orig).partition("\n")[0] or exc.orig.__class__.__name__


def run_in_transaction(engine: Engine, work: Callable[[Connection], T], *, attempts: int = 8) -> T:
    """Run ``work`` in one transaction, retrying it whole when it loses a race.

    ``work`` must be safe to re-run: it sees a fresh transaction every time.  On SQLite the
    writer lock covers only the transaction: taking a pooled connection and giving it back
    happen outside, since every microsecond inside is one no other writer can use.
    """
    lock = _WRITE_LOCKS.get(engine)
    for attempt in range(1, attempts + 1):
        try:
            with engine.connect() as conn:
                if lock is not None:  # SQLite
                    writing(conn)
                with lock or nullcontext(), conn.begin():
                    return work(conn)
        except (DBAPIError, RetryTransaction) as exc:
            if attempt == attempts or not is_transient(exc):
                raise
            log.debug("transaction retry %d after %s", attempt, exc.__class__.__name__)
            time.sleep(random.uniform(0, 0.005 * attempt))
    raise AssertionError("unreachable")


class GroupCommit:
    """Concurrent threads' transactions run one after another in ONE database transaction and
    committed together (``GATEWAY_GROUP_COMMIT``).

    The thread that finds no batch running leads: it takes every transaction waiting (``limit`` at
    most), runs each ``work`` on one connection, and commits them all at once; the others wait,
    and the first of those who arrived meanwhile leads the next batch.  On SQLite with
    ``synchronous=FULL`` each commit syncs the WAL once, and commits queue on the writer lock, so a
    batch of k pays one sync instead of k.

    What each caller sees is what ``run_in_transaction`` gives it: its result only once the commit
    holding it is done; its own error when its ``work`` raised (the batch is then run again with a
    savepoint for each work, and only that work's is rolled back); the commit's error when the batch
    could not commit (none of it is stored).  A transient error (``is_transient``) is retried, the
    caller's ``work`` alone, through ``run_in_transaction``.
    """

    def __init__(self, engine: Engine, limit: int = 32):
        self.engine, self.limit = engine, limit
        self._mutex = threading.Lock()
        self._waiting: list[_Pending] = []
        self._leading = False

    @property
    def queued(self) -> int:
        """Transactions waiting for the next batch."""
        return len(self._waiting)

    def run(self, work: Callable[[Connection], T]) -> T:
        pending = _Pending(work)
        with self._mutex:
            self._waiting.append(pending)
            lead, self._leading = not self._leading, True
        if not lead:
            pending.turn.wait()  # set when its batch is done, or when this thread is to lead one
        if not pending.done:
            self._lead()
        if pending.error is None:
            return pending.result
        if is_transient(pending.error):
            return run_in_transaction(self.engine, work)
        raise pending.error

    def _lead(self) -> None:
        with self._mutex:
            batch, self._waiting = self._waiting[:self.limit], self._waiting[self.limit:]
        try:
            self._commit(batch)
        finally:
            with self._mutex:
                following = self._waiting[0] if self._waiting else None
                self._leading = following is not None
            for pending in batch:
                pending.done = True
                pending.turn.set()
            if following is not None:
                following.turn.set()  # not done: it leads the next batch

    def _commit(self, batch: list["_Pending"]) -> None:
        """The batch as one transaction without savepoints; if a work raises, the batch is rolled
        back and run again with a savepoint for each work, so that only that work loses its writes.
        A savepoint is two statements more a webhook (two round trips on PostgreSQL), and works
        that raise are rare: a duplicate, a lost race, a bug."""
        if not self._attempt(batch, savepoints=False) and len(batch) > 1:
            self._attempt(batch, savepoints=True)

    def _attempt(self, batch: list["_Pending"], savepoints: bool) -> bool:
        """Run the batch; False when, without savepoints, a work raised: the transaction is rolled
        back and that work's error kept."""
        lock = _WRITE_LOCKS.get(self.engine)
        try:
            with self.engine.connect() as conn:
                if lock is not None:  # SQLite
                    writing(conn)
                with lock or nullcontext(), conn.begin() as transaction:
                    for pending in batch:
                        pending.result = pending.error = None
                        if savepoints:
                            _SAVEPOINT.run(conn, {})
                        try:
                            pending.result = pending.work(conn)
                        except Exception as exc:
                            pending.error = exc
                            if not savepoints:
                                transaction.rollback()
                                return False
                            _ROLLBACK_TO_SAVEPOINT.run(conn, {})
                        if savepoints:
                            _RELEASE_SAVEPOINT.run(conn, {})
        except BaseException as exc:  # BEGIN, a savepoint, a rollback or COMMIT failed: none of the batch is stored
            for pending in batch:
                pending.result, pending.error = None, exc
            if not isinstance(exc, Exception):
                raise
        return True


# A failed batch's second run: each work in a savepoint of its own, as hot statements.  SQLAlchemy
# compiles its own savepoint statements anew on every use (they are not cached).  Through
# ``begin_nested`` they cost ~0.2 ms of CPU a webhook, inside SQLite's one writer: 6 threads
# in-process went 531 -> 612/s.
_SAVEPOINT = HotStatement(text("SAVEPOINT grouped"))
_ROLLBACK_TO_SAVEPOINT = HotStatement(text("ROLLBACK TO SAVEPOINT grouped"))
_RELEASE_SAVEPOINT = HotStatement(text("RELEASE SAVEPOINT grouped"))


class _Pending:
    """One caller's transaction in a ``GroupCommit``."""

    __slots__ = ("work", "turn", "done", "result", "error")

    def __init__(self, work: Callable[[Connection], Any]):
        self.work, self.turn, self.done = work, threading.Event(), False
        self.result: Any = None
        self.error: Optional[BaseException] = None


_GROUP_COMMITS: "weakref.WeakKeyDictionary[Engine, GroupCommit]" = weakref.WeakKeyDictionary()


def commit_together(engine: Engine, work: Callable[[Connection], T]) -> T:
    """``run_in_transaction``, through the engine's ``GroupCommit`` when it has one (``make_engine``)."""
    committer = _GROUP_COMMITS.get(engine)
    return committer.run(work) if committer is not None else run_in_transaction(engine, work)


def alembic_config(url: str):
    from alembic.config import Config

    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    cfg.attributes["database_url"] = url
    return cfg


def upgrade(url: str, revision: str = "head") -> None:
    """Apply migrations (``gateway db upgrade``)."""
    from alembic import command

    if url.startswith("sqlite:///"):
        Path(url.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
    command.upgrade(alembic_config(url), revision)
