"""The kit's pytest fixtures, active in every session once alert-gateway is installed (``pytest11``).

A test suite adapts them by overriding two fixtures in its conftest: ``gateway_config`` (the
YAML an app starts with) and ``gateway_plugins`` (modules registered in process, next to the
installed plugins).
"""
from __future__ import annotations

import shutil
import textwrap
from pathlib import Path

import pytest

pytest.register_assert_rewrite("gateway.testing.contract")

from gateway.testing import ADMIN_TOKEN, Receiver, WebhookClient, admin_client, migrated_schema  # noqa: E402

INCIDENTS_ONLY = """
sinks:
  - name: itms
    type: itms
route:
  sinks: [itms]
"""
"""The default ``gateway_config``: the incident store, no sources."""


@pytest.fixture(scope="session")
def sqlite_template(tmp_path_factory) -> Path:
    """One migrated SQLite file, copied for every test (migrating each time would be slow)."""
    from gateway.store.db import upgrade

    path = tmp_path_factory.mktemp("template") / "gateway.db"
    upgrade(f"sqlite:///{path}")
    return path


@pytest.fixture(scope="session")
def postgres_schema_url():
    """This session's PostgreSQL schema (skips without GATEWAY_TEST_POSTGRES_URL)."""
    with migrated_schema("gw_test") as url:
        yield url


def _fresh_postgres(url: str) -> str:
    from sqlalchemy import create_engine, text

    from gateway.store.models import Base

    engine = create_engine(url)
    tables = ", ".join(f'"{t.name}"' for t in Base.metadata.sorted_tables)
    with engine.begin() as conn:
        conn.execute(text(f"TRUNCATE {tables} RESTART IDENTITY CASCADE"))
    engine.dispose()
    return url


@pytest.fixture(params=["sqlite", "postgres"])
def database_url(request, tmp_path, sqlite_template) -> str:
    """Every test that takes this runs on both databases, each starting from empty tables."""
    if request.param == "sqlite":
        path = tmp_path / "gateway.db"
        shutil.copy(sqlite_template, path)
        return f"sqlite:///{path}"
    return _fresh_postgres(request.getfixturevalue("postgres_schema_url"))


@pytest.fixture
def gateway_config() -> str:
    """The gateway.yaml ``make_app`` uses by default; override it in a conftest."""
    return INCIDENTS_ONLY


@pytest.fixture
def gateway_plugins() -> tuple:
    """Modules registered in process by ``make_app``, as if installed; override it in a conftest."""
    return ()


@pytest.fixture
def write_config(tmp_path, gateway_config):
    """write_config(yaml_text=gateway_config) -> the path of a gateway.yaml holding it."""
    def write(yaml_text: str = gateway_config) -> str:
        path = tmp_path / "gateway.yaml"
        path.write_text(textwrap.dedent(yaml_text), encoding="utf-8")
        return str(path)

    return write


@pytest.fixture
def make_app(database_url, write_config, gateway_config, gateway_plugins):
    """make_app(yaml_text=gateway_config, *, plugins=(), **flask_config) -> a Flask app on this test's
    database, with the installed plugins, ``gateway_plugins`` and ``plugins`` registered."""
    from gateway.app import create_app

    apps = []

    def make(yaml_text: str = gateway_config, *, plugins=(), **overrides):
        app = create_app({"DATABASE_URL": database_url, "CONFIG": write_config(yaml_text),
                          "ADMIN_TOKEN": ADMIN_TOKEN, "TESTING": True, "SECRET_KEY": "test-secret-key",
                          **overrides},
                         extra_plugins=[*gateway_plugins, *plugins])
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
    """A test client with the admin token."""
    return admin_client(app)


@pytest.fixture
def webhooks(app) -> WebhookClient:
    """Posts webhooks to ``app``: ``webhooks.post(type, key, payload, headers=...)``."""
    return WebhookClient(app)


@pytest.fixture
def incident(api):
    """incident(id) -> the detail of an incident that must exist, timeline included."""
    def incident(incident_id: int) -> dict:
        response = api.get(f"/api/incidents/{incident_id}")
        assert response.status_code == 200, response.json
        return response.json

    return incident


@pytest.fixture
def receiver():
    """A real HTTP server on 127.0.0.1 (``Receiver``), stopped after the test."""
    server = Receiver()
    yield server
    server.down()
