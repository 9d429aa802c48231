"""The ``gateway`` command, run in-process through click with the test plugin installed as a distribution."""
from __future__ import annotations

from datetime import timedelta

import pytest
import testkit
from click.testing import CliRunner
from testkit.support import installed_sink_types
from sqlalchemy import create_engine, func, inspect, select, update

from gateway.cli import main
from gateway.incidents.service import timeline
from gateway.store.models import AlertRow, Incident, RawRequest, utcnow

CONFIG = """
sources:
  - key: src
    type: testsrc
sinks:
  - name: itms
    type: itms
  - name: web
    type: testhttp
    url: http://127.0.0.1:9/
route:
  sinks: [itms]
  routes:
    - match: {severity: critical}
      sinks: [itms, web]
"""


@pytest.fixture
def install_testkit(tmp_path, monkeypatch):
    """The CLI finds plugins only through entry points, as it would in production."""
    return lambda: monkeypatch.syspath_prepend(str(testkit.install_testkit(tmp_path / "site")))


def gateway(*args: str, **env: str):
    return CliRunner().invoke(main, list(args), env=env)


def test_config_check_prints_a_summary(install_testkit, write_config):
    install_testkit()
    path = write_config(CONFIG)
    result = gateway("config", "check", path)
    assert (result.exit_code, result.stdout) == (0, f"{path}: OK: 1 source, 2 sinks, 1 route\n")


@pytest.mark.parametrize("command", [["config", "check", "{path}"], ["routes", "test", "--config", "{path}", "--source", "src"]],
                         ids=["config-check", "routes-test"])
def test_an_invalid_file_prints_every_problem_with_its_line(install_testkit, write_config, command):
    install_testkit()
    path = write_config(CONFIG.replace("type: testhttp", "type: nope").replace("[itms, web]", "[itms, pager]"))
    result = gateway(*(arg.format(path=path) for arg in command))
    assert result.exit_code == 1
    assert result.stdout == ""
    assert result.stderr.splitlines() == [
        f"{path}: FAILED",
        f"{path}:9: sinks[1].type: unknown sink type 'nope' (registered: {installed_sink_types()})",
        f"{path}:15: route.routes[0].sinks[1]: undefined sink 'pager' (defined: itms, web)",
    ]


@pytest.mark.parametrize("labels, printed", [
    (["severity=critical"], "itms,web\n"),
    (["severity=warning", "status=resolved"], "itms\n"),
])
def test_routes_test_prints_the_sinks(install_testkit, write_config, labels, printed):
    install_testkit()
    result = gateway("routes", "test", "--source", "src", *labels, GATEWAY_CONFIG=write_config(CONFIG))
    assert (result.exit_code, result.stdout) == (0, printed)


def test_db_upgrade_creates_the_schema(tmp_path):
    url = f"sqlite:///{tmp_path / 'fresh' / 'gateway.db'}"
    for _ in range(2):  # a second run finds the schema at head and changes nothing
        result = gateway("db", "upgrade", GATEWAY_DATABASE_URL=url)
        assert (result.exit_code, result.stdout) == (0, f"database at head: {url}\n")
    engine = create_engine(url)
    assert {"raw_requests", "alerts", "incidents", "deliveries", "alembic_version"} <= set(inspect(engine).get_table_names())
    engine.dispose()


def test_purge_removes_old_raw_requests_and_keeps_alerts_and_incidents(make_app, install_testkit, database_url):
    app = make_app(CONFIG)
    client = app.test_client()
    for n in range(3):
        assert client.post("/hooks/testsrc/src/", json={"id": str(n), "title": "disk", "problem": "disk"}).status_code == 202
    engine = app.extensions["gateway"].engine
    with engine.begin() as conn:
        conn.execute(update(RawRequest).where(RawRequest.external_id.in_(["0", "1"]))
                     .values(received_at=utcnow() - timedelta(days=10)))

    install_testkit()
    result = gateway("purge", "--older-than", "7d", GATEWAY_DATABASE_URL=database_url,
                     GATEWAY_CONFIG=app.config["CONFIG"])
    assert result.exit_code == 0, result.output
    assert result.stdout.startswith("purged 2 raw requests and 0 refused requests received before ")
    with engine.connect() as conn:
        assert conn.execute(select(RawRequest.external_id)).scalars().all() == ["2"]
        alerts = conn.execute(select(AlertRow.external_id, AlertRow.raw_request_id).order_by(AlertRow.id)).all()
        assert conn.execute(select(Incident.event_count)).scalars().all() == [3]
        assert conn.execute(select(func.count()).select_from(AlertRow)).scalar_one() == 3
    # An alert keeps its request's id (no foreign key can point into the partitioned journal) ...
    assert [(a.external_id, a.raw_request_id is None) for a in alerts] == [("0", False), ("1", False), ("2", False)]
    with engine.connect() as conn:  # ... and the timeline still tells every webhook, without raw links for the purged ones
        history = timeline(conn, conn.execute(select(Incident.id)).scalar_one())
    assert [(e.kind, e.raw_request_id is None) for e in history] == [
        ("created", True), ("webhook_received", True), ("webhook_received", False)]
