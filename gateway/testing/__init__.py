"""The conformance kit: what a plugin's tests (and the core's) need to run the gateway for real.

Installed with the core and registered as a pytest plugin (entry point ``gateway`` in the
``pytest11`` group), so once alert-gateway is installed every test session has its fixtures
(``gateway.testing.fixtures``): a migrated database (SQLite; PostgreSQL too when
``GATEWAY_TEST_POSTGRES_URL`` is set, each run in a schema of its own), apps on it, a client
that posts webhooks and a real HTTP receiver on 127.0.0.1.  ``SourceContract`` and
``SinkContract`` are the contract suites a plugin runs on its own samples by subclassing one.
"""
from __future__ import annotations

import json
import os
import threading
import time
import uuid
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Iterator, Mapping, Optional

ADMIN_TOKEN = "test-admin-token"
"""What ``make_app`` sets as GATEWAY_ADMIN_TOKEN."""

POSTGRES_URL = os.environ.get("GATEWAY_TEST_POSTGRES_URL")
SKIP_PG = "PostgreSQL tests need GATEWAY_TEST_POSTGRES_URL (e.g. postgresql+psycopg://postgres@127.0.0.1:5432/test)"


def admin_client(app):
    """A test client whose requests carry the admin bearer token."""
    client = app.test_client()
    client.environ_base["HTTP_AUTHORIZATION"] = f"Bearer {ADMIN_TOKEN}"
    return client


class WebhookClient:
    """Posts webhooks to an app the way a vendor does: a JSON body to ``/hooks/<type>/<key>/``."""

    def __init__(self, app):
        self._client = app.test_client()

    def post(self, source_type: str, key: str, payload: Any = None, *, body: Optional[bytes] = None,
             headers: Optional[Mapping[str, str]] = None):
        """The answer (a Flask test response); ``body`` sends exact bytes instead of ``payload`` as JSON."""
        data = body if body is not None else json.dumps(payload, ensure_ascii=False).encode("utf-8")
        return self._client.post(f"/hooks/{source_type}/{key}/", data=data,
                                 headers={"Content-Type": "application/json", **(headers or {})})


@contextmanager
def migrated_schema(prefix: str, revision: str = "head") -> Iterator[str]:
    """The URL of a new PostgreSQL schema at ``revision`` (the head migration by default); the
    schema is dropped on exit."""
    import pytest
    from sqlalchemy import create_engine, text

    from gateway.store.db import upgrade

    if not POSTGRES_URL:
        pytest.skip(SKIP_PG)
    schema = f"{prefix}_{uuid.uuid4().hex[:12]}"
    admin = create_engine(POSTGRES_URL)
    with admin.begin() as conn:
        conn.execute(text(f'CREATE SCHEMA "{schema}"'))
    sep = "&" if "?" in POSTGRES_URL else "?"
    try:
        url = f"{POSTGRES_URL}{sep}options=-csearch_path%3D{schema}"
        upgrade(url, revision)
        yield url
    finally:
        with admin.begin() as conn:
            conn.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))
        admin.dispose()


class Receiver:
    """A real HTTP server on 127.0.0.1 that records requests and answers from a script.

    ``script`` holds (status, headers, body) answers used in order; when it runs out,
    ``default`` answers.  ``delay`` seconds pass before each answer; ``hold`` keeps requests
    unanswered until the test says.  ``down()`` closes the port, ``up()`` opens it again.
    """

    HOLD_AT_MOST = 8.0
    """Seconds a held request waits at most: a test that never releases fails instead of hanging,
    and the answer still comes within a sink's usual 10 s timeout (no resend to confuse a count)."""

    def __init__(self):
        self.requests: list[dict] = []
        self.script: list[tuple[int, dict, str]] = []
        self.default = (200, {}, "{}")
        self.delay = 0.0
        self._lock = threading.Lock()
        self._hold: Optional[tuple[int, Optional[int]]] = None
        self._released = threading.Event()
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
                    arrived = len(receiver.requests)
                receiver._wait_if_held(arrived)
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
        self.release()
        self._server.shutdown()
        self._server.server_close()

    def hold(self, after: int = 0, until: Optional[int] = None) -> None:
        """Leave each request after the ``after``-th recorded but unanswered until ``release()``,
        or, with ``until``, until the ``until``-th has come (all of them in flight at once).  A
        test then finds deliveries in flight, and the rest of a batch unsent, however long it
        takes to look: no race against ``delay``."""
        self._released.clear()
        self._hold = (after, until)

    def release(self) -> None:
        """Answer the held requests, and every one from now on."""
        self._released.set()

    def _wait_if_held(self, arrived: int) -> None:
        if self._hold is None or self._released.is_set() or arrived <= self._hold[0]:
            return
        until = self._hold[1]
        if until is not None and arrived >= until:
            self.release()
        elif not self._released.wait(self.HOLD_AT_MOST):
            self.release()  # never released: answer everything from now on

    def answer(self, *responses) -> None:
        """Queue answers: ints (status) or (status, headers, body) tuples."""
        for response in responses:
            self.script.append((response, {}, "{}") if isinstance(response, int) else response)


def __getattr__(name: str):
    """The contract suites, imported on first use: the pytest plugin has marked their module for
    assertion rewriting by then, so a failed check shows its values."""
    if name in ("SinkContract", "SourceContract", "sample_alert"):
        from gateway.testing import contract

        return getattr(contract, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = ["ADMIN_TOKEN", "POSTGRES_URL", "Receiver", "SinkContract", "SourceContract", "WebhookClient",
           "admin_client", "migrated_schema", "sample_alert"]
