"""Helpers that test modules import directly (pytest's importlib mode keeps conftest out of reach)."""
from __future__ import annotations

import re
import socket
import time
from contextlib import contextmanager

import requests
from sqlalchemy import event, text

from gateway import users
from gateway.store.db import upgrade
from gateway.testing import ADMIN_TOKEN, admin_client, migrated_schema  # noqa: F401  (the kit's, imported from here by tests)


class OutboxDriver:
    """An app on a test's database: post through ``client``, read the outbox through the API,
    and drive delivery with a dispatcher of this process (no background threads)."""

    def __init__(self, app, worker: str, lease: float = 5.0):
        from gateway.pipeline.outbox import Dispatcher

        self.client = app.test_client()
        self.api = admin_client(app)
        self.runtime = app.extensions["gateway"].runtime
        self.dispatcher = Dispatcher(self.runtime, lease=lease, poll=0.05)
        self.worker = worker

    def deliveries(self, **query) -> list[dict]:
        r = self.api.get("/api/deliveries", query_string={"per_page": 500, **query})
        assert r.status_code == 200, r.json
        return sorted(r.json["items"], key=lambda row: row["id"])

    def delivery(self, delivery_id: int) -> dict:
        r = self.api.get(f"/api/deliveries/{delivery_id}")
        assert r.status_code == 200, r.json
        return r.json

    def drive(self, sink: str, done, worker: str | None = None, timeout: float = 10) -> None:
        """run_once until ``done()`` holds; rows being retried become due after their backoff."""
        wait_until(lambda: self.dispatcher.run_once(sink, worker or self.worker) >= 0 and done(), timeout,
                   interval=0.01)


def installed_sink_types() -> str:
    """The sink types a config may name here, as an error lists them: the installed plugins'
    (extra ones included, so the suite passes beside any plugin) and testkit's."""
    from gateway.plugins import build_registry

    return ", ".join(sorted({*build_registry().sink_types, "testhttp"}))


def csrf_of(page) -> str:
    """The CSRF token of a console page's form."""
    return re.search(r'name="csrf_token" value="([^"]+)"', page.text).group(1)


def sign_in(app, engine, name: str, role: str):
    """A test client signed in to the console as a new user ``name`` with ``role``."""
    users.create_user(engine, name, role, f"{name}-password")
    browser = app.test_client()
    page = browser.get("/login")
    answer = browser.post("/login", data={"username": name, "password": f"{name}-password",
                                          "csrf_token": csrf_of(page)})
    assert answer.status_code == 302, answer.text
    return browser


@contextmanager
def sent_statements(engine):
    """The set of SQL texts ``engine`` sends while the block runs (``HotStatement``'s fixed texts aside)."""
    sent = set()
    listener = lambda conn, cursor, sql, *rest: sent.add(sql)  # noqa: E731
    event.listen(engine, "before_cursor_execute", listener)
    try:
        yield sent
    finally:
        event.remove(engine, "before_cursor_execute", listener)


@contextmanager
def counting_write_commits(engine):
    """The commits of transactions that wrote, as a list that grows while the block runs: a read's
    commit (``gateway.store.db.reading``) writes nothing, syncs nothing and is left out.  Asked of
    the database before each commit: on PostgreSQL whether the transaction has an id (it takes one
    at its first write), on SQLite whether the connection's count of changed rows moved since BEGIN."""
    commits, changes_at_begin = [], {}

    def changes(conn) -> int:
        return conn.connection.dbapi_connection.total_changes

    def on_begin(conn):
        if conn.dialect.name == "sqlite":
            changes_at_begin[id(conn)] = changes(conn)

    def on_commit(conn):
        if conn.dialect.name == "sqlite":
            wrote = changes(conn) != changes_at_begin.pop(id(conn), None)
        else:
            cursor = conn.connection.dbapi_connection.cursor()  # not conn.execute: no events, no autobegin
            wrote = cursor.execute("SELECT pg_current_xact_id_if_assigned()").fetchone()[0] is not None
            cursor.close()
        if wrote:
            commits.append(1)

    event.listen(engine, "begin", on_begin)
    event.listen(engine, "commit", on_commit)
    try:
        yield commits
    finally:
        event.remove(engine, "begin", on_begin)
        event.remove(engine, "commit", on_commit)


def lock_waits(engine, table: str) -> int:
    """PostgreSQL: statements on ``table`` in this database waiting for a lock, counted in a new
    transaction each time (a transaction sees one snapshot of ``pg_stat_activity``)."""
    with engine.connect() as conn:
        return conn.execute(text("SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
                                 "AND wait_event_type = 'Lock' AND query LIKE :table"), {"table": f"%{table}%"}).scalar()


def wait_until(predicate, timeout: float = 10.0, interval: float = 0.05):
    """Poll ``predicate`` until it is truthy; fail the test with its last value otherwise."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value or time.monotonic() > deadline:
            assert value, f"condition not met within {timeout}s"
            return value
        time.sleep(interval)


def free_port() -> int:
    """A port nothing listens on now, for a server subprocess (which binds it itself, so 0 would not do)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_healthy(base: str, proc, timeout: float = 30.0) -> None:
    """Wait until the server ``proc`` answers ``base``/health with 200; fail at once, with its
    output when piped, if it exits instead (a server that cannot start would cost the whole timeout)."""
    def healthy() -> bool:
        assert proc.poll() is None, f"exited with {proc.returncode}: {proc.stdout.read() if proc.stdout else ''}"
        try:
            return requests.get(f"{base}/health", timeout=2).status_code == 200
        except requests.RequestException:  # not listening yet, or its workers are still booting
            return False

    wait_until(healthy, timeout, interval=0.2)


def serve_environment(tmp_path, config_path: str, database_url: str, **settings: str) -> dict:
    """The environment an operator sets for ``gateway serve``, with the test plugin installed as a
    distribution; ``settings`` are further variables (``GATEWAY_THREADS="2"``)."""
    import os
    from pathlib import Path

    import testkit

    site = testkit.install_testkit(tmp_path / "site")
    return {**os.environ, "PYTHONPATH": os.pathsep.join([str(site), str(Path(testkit.__file__).parents[1])]),
            "GATEWAY_CONFIG": config_path, "GATEWAY_DATABASE_URL": database_url, **settings}


@contextmanager
def serving(environment: dict, *args: str, workers: int = 2):
    """A real ``gateway serve`` on a free port, its workers booted: yields (process, base URL).
    It is stopped afterwards, also when start-up failed.

    Its output (the banner, then a log line per request) is read as it comes into
    ``proc.output_lines``: left in the pipe, it would fill it and block the workers mid-request.
    ``output(proc)`` waits for the process to exit and gives all of it."""
    import subprocess
    import sys
    import threading
    from pathlib import Path

    port = free_port()
    proc = subprocess.Popen([str(Path(sys.executable).parent / "gateway"), "serve", "--workers", str(workers),
                             "--port", str(port), *args], env=environment,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    proc.output_lines = []
    proc.drain = threading.Thread(target=proc.output_lines.extend, args=(proc.stdout,), daemon=True)
    proc.drain.start()
    base = f"http://127.0.0.1:{port}"
    try:
        wait_healthy(base, proc)
        wait_until(lambda: len(worker_pids(base)) == workers, timeout=30)
        yield proc, base
    finally:
        if proc.poll() is None:
            proc.terminate()
            proc.wait(timeout=30)
        proc.drain.join(5)
        proc.stdout.close()


def output(proc) -> str:
    """Everything a ``serving`` process printed, once it has exited."""
    proc.wait(timeout=30)
    proc.drain.join(5)
    return "".join(proc.output_lines)


def printed(proc, ending: str) -> list[str]:
    """A ``serving`` process's lines up to the first that holds ``ending`` (waited for)."""
    lines = proc.output_lines
    count = wait_until(lambda: next((n + 1 for n, line in enumerate(list(lines)) if ending in line), 0))
    return lines[:count]


def worker_pids(base: str, asks: int = 8) -> set[int]:
    """The gunicorn workers that answered ``asks`` health checks."""
    return {requests.get(f"{base}/health", timeout=5).json()["worker_pid"] for _ in range(asks)}
class TcpProxy:
    """A TCP hop on 127.0.0.1 in front of a server (PostgreSQL): ``down()`` drops every
    connection through it and refuses new ones, as a database restart or a network blip does;
    ``up()`` lets connections through again, on the same port."""

    def __init__(self, host: str, port: int):
        import threading

        self._target = (host, port)
        self._lock = threading.Lock()
        self._open: list[socket.socket] = []
        self._listener: socket.socket | None = None
        self.port = 0
        self.up()

    def up(self) -> None:
        import threading

        listener = socket.socket()
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", self.port))
        listener.listen(64)
        self._listener, self.port = listener, listener.getsockname()[1]
        threading.Thread(target=self._accept, args=(listener,), daemon=True).start()

    def down(self) -> None:
        try:  # wakes the thread blocked in accept(), which a bare close() would leave listening
            self._listener.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self._listener.close()
        with self._lock:
            sockets, self._open = self._open, []
        for sock in sockets:
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            sock.close()

    def _accept(self, listener: socket.socket) -> None:
        import threading

        while True:
            try:
                client, _ = listener.accept()
            except OSError:  # closed by down()
                return
            try:
                server = socket.create_connection(self._target)
            except OSError:
                client.close()
                continue
            with self._lock:
                self._open += [client, server]
            for source, sink in ((client, server), (server, client)):
                threading.Thread(target=self._pipe, args=(source, sink), daemon=True).start()

    @staticmethod
    def _pipe(source: socket.socket, sink: socket.socket) -> None:
        try:
            while data := source.recv(65536):
                sink.sendall(data)
        except OSError:
            pass
        for sock in (source, sink):
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass


@contextmanager
def database_at(database_url: str, directory, revision: str):
    """The URL of a fresh database of ``database_url``'s kind at migration ``revision`` (to test what a
    later migration does to its rows): a SQLite file in ``directory``, or a PostgreSQL schema dropped on exit."""
    if database_url.startswith("sqlite"):
        url = f"sqlite:///{directory / 'old.db'}"
        upgrade(url, revision)
        yield url
    else:
        with migrated_schema(f"gw_{revision}", revision) as url:
            yield url
