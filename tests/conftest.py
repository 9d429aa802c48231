"""Shared fixtures: real databases (SQLite always, PostgreSQL when configured), apps and a real HTTP receiver.

PostgreSQL runs when ``GATEWAY_TEST_POSTGRES_URL`` is set; each test run gets its own
schema (dropped at the end) and every test starts from empty tables.
"""
from __future__ import annotations

import json
import os
import shutil
import sys
import textwrap
import threading
import time
import uuid
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from sqlalchemy import create_engine, text

sys.path.insert(0, str(Path(__file__).parent))
import testkit  # noqa: E402  (the test-only plugin; see testkit/__init__.py)
from testkit.support import ADMIN_TOKEN, admin_client  # noqa: E402

from gateway.store.db import upgrade  # noqa: E402
from gateway.store.models import Base  # noqa: E402

POSTGRES_URL = os.environ.get("GATEWAY_TEST_POSTGRES_URL")
SKIP_PG = "PostgreSQL tests need GATEWAY_TEST_POSTGRES_URL (e.g. postgresql+psycopg://postgres@127.0.0.1:5432/test)"


@pytest.fixture(scope="session")
def sqlite_template(tmp_path_factory) -> Path:
    """One migrated SQLite file, copied for every test (migrating each time would be slow)."""
    path = tmp_path_factory.mktemp("template") / "gateway.db"
    upgrade(f"sqlite:///{path}")
    return path


@contextmanager
def migrated_schema(prefix: str):
    """The URL of a new PostgreSQL schema at the head migration; the schema is dropped on exit."""
    if not POSTGRES_URL:
        pytest.skip(SKIP_PG)
    schema = f"{prefix}_{uuid.uuid4().hex[:12]}"
    admin = create_engine(POSTGRES_URL)
    with admin.begin() as conn:
        conn.execute(text(f'CREATE SCHEMA "{schema}"'))
    sep = "&" if "?" in POSTGRES_URL else "?"
    try:
        url = f"{POSTGRES_URL}{sep}options=-csearch_path%3D{schema}"
        upgrade(url)
        yield url
    finally:
        with admin.begin() as conn:
            conn.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))
        admin.dispose()


@pytest.fixture(scope="session")
def postgres_schema_url():
    with migrated_schema("gw_test") as url:
        yield url


def _fresh_postgres(url: str) -> str:
    engine = create_engine(url)
    tables = ", ".join(f'"{t.name}"' for t in Base.metadata.sorted_tables)
    with engine.begin() as conn:
        conn.execute(text(f"TRUNCATE {tables} RESTART IDENTITY CASCADE"))
    engine.dispose()
    return url


@pytest.fixture(params=["sqlite", "postgres"])
def database_url(request, tmp_path, sqlite_template) -> str:
    """Every test that takes this runs on both databases."""
    if request.param == "sqlite":
        path = tmp_path / "gateway.db"
        shutil.copy(sqlite_template, path)
        return f"sqlite:///{path}"
    return _fresh_postgres(request.getfixturevalue("postgres_schema_url"))


DEFAULT_CONFIG = """
sources:
  - key: src
    type: testsrc
sinks:
  - name: itms
    type: itms
route:
  sinks: [itms]
"""


@pytest.fixture
def write_config(tmp_path):
    def write(yaml_text: str = DEFAULT_CONFIG) -> str:
        path = tmp_path / "gateway.yaml"
        path.write_text(textwrap.dedent(yaml_text), encoding="utf-8")
        return str(path)

    return write


@pytest.fixture
def make_app(database_url, write_config):
    """make_app(yaml_text=None, *, plugins=(), **flask_config) -> a Flask app on this test's database,
    with testkit and ``plugins`` registered."""
    from gateway.app import create_app

    apps = []

    def make(yaml_text: str = DEFAULT_CONFIG, *, plugins=(), **overrides):
        app = create_app({"DATABASE_URL": database_url, "CONFIG": write_config(yaml_text),
                          "ADMIN_TOKEN": ADMIN_TOKEN, "TESTING": True,
                          "SECRET_KEY": "test-secret-key", **overrides},
                         extra_plugins=[testkit, *plugins])
        apps.append(app)
        return app

    yield make
    for app in apps:
        app.extensions["gateway"].engine.dispose()


@pytest.fixture
def app(make_app):
    return make_app()


@pytest.fixture
def client(app):
    return app.test_client()


@pytest.fixture
def api(app):
    return admin_client(app)


@pytest.fixture
def incident(api):
    """incident(id) -> the detail of an incident that must exist, timeline included."""
    def incident(incident_id: int) -> dict:
        response = api.get(f"/api/incidents/{incident_id}")
        assert response.status_code == 200, response.json
        return response.json

    return incident


class Receiver:
    """A real HTTP server on 127.0.0.1 that records requests and answers from a script.

    ``script`` holds (status, headers, body) answers used in order; when it runs out,
    ``default`` answers.  ``down()`` closes the port, ``up()`` opens it again.
    """

    def __init__(self):
        self.requests: list[dict] = []
        self.script: list[tuple[int, dict, str]] = []
        self.default = (200, {}, "{}")
        self.delay = 0.0
        self._lock = threading.Lock()
        self.port = None
        self._server = None
        self.up()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def up(self) -> None:
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def _answer(self):
                length = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(length) if length else b""
                with receiver._lock:
                    status, headers, body = receiver.script.pop(0) if receiver.script else receiver.default
                    receiver.requests.append({
                        "method": self.command, "path": self.path, "headers": dict(self.headers),
                        "raw": raw, "json": json.loads(raw) if raw.strip().startswith((b"{", b"[")) else None,
                        "status": status,
                    })
                if receiver.delay:
                    time.sleep(receiver.delay)
                data = body.encode()
                try:
                    self.send_response(status)
                    for name, value in headers.items():
                        self.send_header(name, value)
                    self.send_header("Content-Length", str(len(data)))
                    self.end_headers()
                    self.wfile.write(data)
                except (BrokenPipeError, ConnectionResetError):
                    pass  # the client gave up (a timeout test); nothing to answer

            do_GET = do_POST = do_PUT = _answer

        self._server = ThreadingHTTPServer(("127.0.0.1", self.port or 0), Handler)
        self._server.daemon_threads = True
        self.port = self._server.server_address[1]
        threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()

    def down(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    def answer(self, *responses) -> None:
        """Queue answers: ints (status) or (status, headers, body) tuples."""
        for response in responses:
            self.script.append((response, {}, "{}") if isinstance(response, int) else response)


@pytest.fixture
def receiver():
    server = Receiver()
    yield server
    server.down()

