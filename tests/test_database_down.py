"""While the database is down or unusable, /api answers 503 JSON (retry later), never 500.

Real failures: PostgreSQL on a port nothing listens on, and SQLite on a path that cannot be
opened or on a file that is no database.
"""
from __future__ import annotations

import pytest
import testkit
from testkit.support import ADMIN_TOKEN, admin_client, free_port

from gateway.app import create_app

REQUESTS = [
    ("GET", "/api/sources", None), ("GET", "/api/sources/nope", None), ("GET", "/api/sources/src/handshakes", None),
    ("POST", "/api/sources", {"key": "new", "type": "testsrc"}), ("PATCH", "/api/sources/nope", {"enabled": False}),
    ("GET", "/api/events", None), ("GET", "/api/events/1/raw", None),
    ("GET", "/api/sources/src/requests", None), ("GET", "/api/refused/1/raw", None),
    ("GET", "/api/deliveries", None), ("GET", "/api/deliveries/1", None),
    ("POST", "/api/deliveries/1/retry", None), ("POST", "/api/deliveries/retry", {"sink": "itms"}),
    ("GET", "/api/incidents", None), ("GET", "/api/incidents/1", None),
    ("POST", "/api/incidents/1/acknowledge", {}), ("POST", "/api/incidents/1/comments", {"body": "x"}),
]


def unusable(kind: str, tmp_path) -> str:
    if kind == "postgresql closed port":
        return f"postgresql+psycopg://postgres@127.0.0.1:{free_port()}/gateway?connect_timeout=2"
    if kind == "sqlite no directory":
        return f"sqlite:///{tmp_path / 'missing' / 'gateway.db'}"
    garbage = tmp_path / "gateway.db"
    garbage.write_bytes(b"this is no SQLite database\n" * 200)
    return f"sqlite:///{garbage}"


@pytest.mark.parametrize("kind", ["postgresql closed port", "sqlite no directory", "sqlite not a database"])
def test_every_api_request_is_503_json_while_the_database_is_unusable(kind, tmp_path, write_config):
    app = create_app({"DATABASE_URL": unusable(kind, tmp_path), "CONFIG": write_config(),
                      "ADMIN_TOKEN": ADMIN_TOKEN, "TESTING": True}, extra_plugins=[testkit])
    api = admin_client(app)
    for method, path, body in REQUESTS:
        response = api.open(path, method=method, json=body)
        assert (response.status_code, response.mimetype) == (503, "application/json"), (method, path, response.data)
        assert response.json["error"]["code"] == "unavailable", (method, path)
        assert response.headers["Retry-After"] == "5"
    assert app.test_client().get("/health").status_code == 503
    app.extensions["gateway"].engine.dispose()
