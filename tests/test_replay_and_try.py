"""``gateway replay`` re-runs stored requests through today's plugins; ``gateway try`` shows what a
payload would become and stores nothing.  Both run in-process through click, without a server, with
plugins found through entry points as in production."""
from __future__ import annotations

import json
import textwrap

import pytest
import testkit
from click.testing import CliRunner
from sqlalchemy import create_engine, func, select

from test_cli import CONFIG as CLI_CONFIG

from gateway.cli import main
from gateway.store.models import AlertRow, DeliveryRow, Incident, RawRequest, RefusedRequest

CONFIG = CLI_CONFIG.replace("    type: testsrc\n", """    type: testsrc
    token: s3cret
  - key: oci
    type: oci
    confirm_hosts: ["127.0.0.1"]
""")
"""test_cli's: testsrc routed to itms, and to web too when critical; here with a token, and an OCI source."""
AUTH = {"X-Test-Token": "s3cret"}

FIXED = '''
import dataclasses

import testkit
from gateway import hookimpl


class UntitledIsFine(testkit.EchoSource):
    """testsrc as a fixed plugin would be: an alert without a title is "untitled", not refused."""

    def parse(self, request):
        payload = request.payload
        if isinstance(payload, dict) and "title" not in payload:
            request = dataclasses.replace(request, payload={**payload, "title": "untitled"})
        return super().parse(request)


@hookimpl
def register_source_types(register):
    register(UntitledIsFine)


@hookimpl
def register_sink_types(register):
    register(testkit.HttpSink)
'''


@pytest.fixture
def install(tmp_path, monkeypatch):
    """install(fixed) -> put testsrc, as testkit has it or as the fixed plugin has it, on the CLI's entry points."""
    def install(fixed: bool) -> None:
        site = tmp_path / ("fixed" if fixed else "site")
        if fixed:
            testkit.write_distribution(site, "gateway-fixed", {"fixed": "fixed_testsrc"}, {"fixed_testsrc": FIXED})
        else:
            testkit.install_testkit(site)
        monkeypatch.syspath_prepend(str(site))
    return install


def gateway(database_url: str, config: str, *args: str):
    result = CliRunner().invoke(main, list(args), env={"GATEWAY_DATABASE_URL": database_url, "GATEWAY_CONFIG": config})
    assert result.exit_code == 0, result.output
    return result.stdout


def counts(database_url: str) -> dict:
    engine = create_engine(database_url)
    with engine.connect() as conn:
        found = {model.__tablename__: conn.execute(select(func.count()).select_from(model)).scalar_one()
                 for model in (RawRequest, AlertRow, Incident, DeliveryRow, RefusedRequest)}
    engine.dispose()
    return found


def test_replay_recovers_what_an_old_plugin_refused(make_app, database_url, install):
    app = make_app(CONFIG)
    config, client = app.config["CONFIG"], app.test_client()
    assert client.post("/hooks/testsrc/src/", json={"id": "1", "title": "disk", "problem": "disk"},
                       headers=AUTH).status_code == 202
    assert client.post("/hooks/testsrc/src/", json={"id": "2", "problem": "disk", "severity": "critical"},
                       headers=AUTH).status_code == 422
    assert client.post("/hooks/testsrc/src/", json={"id": "3", "problem": "cpu"},
                       headers={"X-Test-Token": "forged"}).status_code == 401
    before = counts(database_url)
    install(fixed=True)

    dry = gateway(database_url, config, "replay", "--dry-run").splitlines()
    assert counts(database_url) == before
    assert dry[0].startswith("accepted #1 src ") and dry[0].endswith(": accepted (1 alert) -> duplicate")
    assert dry[1].endswith(": refused 422 invalid_payload -> accepted")
    assert dry[2:7] == [
        "  alert: firing critical 'untitled'",
        dry[3],
        '    labels: {"problem": "disk"}',
        "    incident: would join " + str(_incident_id(database_url)),
        "    routes: itms, web",
    ]
    assert dry[3].startswith("    fingerprint ") and dry[3].endswith(" from the plugin's key 'disk'")
    assert dry[7] == "    outbox: web"
    assert dry[8].endswith(": refused 401 unauthorized -> skipped: refused before the source verified it, "
                           "and its credentials were not kept")
    assert dry[9] == "3 requests: 1 changed, 1 unchanged, 1 skipped (dry run: nothing was stored)"

    done = gateway(database_url, config, "replay", "--refused", "--source", "src").splitlines()
    assert done[0].endswith(": refused 422 invalid_payload -> accepted")
    assert done[1].startswith("  alert ") and done[4].startswith(f"    incident: joined {_incident_id(database_url)}")
    assert done[-1] == "2 requests: 1 changed, 0 unchanged, 1 skipped"
    after = counts(database_url)
    assert after == {**before, "raw_requests": 2, "alerts": 2, "deliveries": 1, "refused_requests": 1}

    again = gateway(database_url, config, "replay").splitlines()
    assert again[-1] == "3 requests: 0 changed, 2 unchanged, 1 skipped"  # the recovered one is now a duplicate
    assert counts(database_url) == after
    assert gateway(database_url, config, "replay", "--since", "1h").splitlines()[-1].startswith("3 requests")
    assert gateway(database_url, config, "replay", "--since", "2999-01-01T00:00:00") == \
        "0 requests: 0 changed, 0 unchanged, 0 skipped\n"


def _incident_id(database_url: str) -> int:
    engine = create_engine(database_url)
    with engine.connect() as conn:
        found = conn.execute(select(Incident.id)).scalar_one()
    engine.dispose()
    return found


def test_try_shows_what_a_payload_would_become_on_the_configured_database(make_app, database_url, install, tmp_path):
    app = make_app(CONFIG)
    config = app.config["CONFIG"]
    assert app.test_client().post("/hooks/testsrc/src/", json={"id": "1", "title": "disk", "problem": "disk"},
                                  headers=AUTH).status_code == 202
    before = counts(database_url)
    install(fixed=False)
    payload = tmp_path / "payload.json"
    payload.write_text(json.dumps({"alerts": [
        {"id": "2", "title": "disk again", "problem": "disk"},
        {"id": "3", "title": "cpu", "problem": "cpu", "group": "host-1", "severity": "critical"}]}))

    shown = gateway(database_url, config, "try", "testsrc", str(payload), "--source", "src",
                    "--header", "X-Test-Token: s3cret")
    assert counts(database_url) == before
    lines = shown.splitlines()
    assert lines[:4] == ["source: src (testsrc)", lines[1], "verify: passed",
                         "accepted: 2 alerts (rolled back: nothing stored)"]
    assert lines[1].startswith("database: ") and lines[1].endswith(", in a transaction rolled back at the end")
    assert lines[4:] == [
        "  alert: firing warning 'disk again'", lines[5], '    labels: {"problem": "disk"}',
        f"    incident: would join {_incident_id(database_url)}", "    routes: itms", "    outbox: (none)",
        "  alert: firing critical 'cpu'", lines[11], '    labels: {"group": "host-1", "problem": "cpu"}',
        "    incident: would open a new one", "    routes: itms, web", "    outbox: web",
    ]
    assert lines[5].endswith(" from the plugin's key 'disk'")
    assert lines[11].endswith(" from the plugin's key 'cpu' in group 'host-1'")

    refused = gateway(database_url, config, "try", "testsrc", str(payload), "--source", "src")
    assert refused.splitlines()[2] == "not verified: refused 401 unauthorized: wrong or missing X-Test-Token"
    payload.write_text(json.dumps({"id": "4"}))
    invalid = gateway(database_url, config, "try", "testsrc", str(payload), "--source", "src",
                      "--header", "X-Test-Token:s3cret")
    assert invalid.splitlines()[3] == "refused: 422 invalid_payload: payload rejected: title (missing)"
    assert counts(database_url) == before


def test_try_without_a_database_uses_a_throwaway_one_and_creates_none(tmp_path, write_config, install):
    install(fixed=False)
    missing = tmp_path / "nowhere.db"
    payload = tmp_path / "payload.json"
    payload.write_text(json.dumps({"id": "1", "title": "disk"}))
    shown = gateway(f"sqlite:///{missing}", write_config(CONFIG), "try", "testsrc", str(payload)).splitlines()
    assert shown[:2] == ["source: try (testsrc)",
                         f"database: a throwaway SQLite (sqlite:///{missing} does not exist): "
                         "no incident exists to join"]
    assert "    incident: would open a new one" in shown
    assert not missing.exists()


def test_try_describes_a_handshake_and_makes_no_call(tmp_path, write_config, install, receiver):
    install(fixed=False)
    payload = tmp_path / "confirm.json"
    payload.write_text(json.dumps({"type": "Subscription Confirmation",
                                   "ConfirmationURL": f"{receiver.url}/confirm?token=secret"}))
    shown = gateway(f"sqlite:///{tmp_path / 'none.db'}", write_config(CONFIG), "try", "oci", str(payload),
                    "--source", "oci")
    assert shown.splitlines()[2:] == [
        "verify: passed",
        f"handshake: a subscription confirmation: would GET {receiver.url}/confirm (not made in a dry run)"]
    assert receiver.requests == []


def test_try_explains_what_it_cannot_run(tmp_path, write_config, install):
    install(fixed=False)
    payload = tmp_path / "payload.json"
    payload.write_text("{}")
    config = write_config(textwrap.dedent(CONFIG))
    url = f"sqlite:///{tmp_path / 'none.db'}"
    for args, message in [
        (["try", "nope", str(payload)], "no source type 'nope'"),
        (["try", "testsrc", str(payload), "--source", "oci"], "no testsrc source with key 'oci'"),
        (["try", "testsrc", str(payload), "--header", "novalue"], "'novalue': write it as Name:value"),
        (["replay", "--since", "yesterday"], "'yesterday': give a duration (2h, 7d) or an ISO 8601 time"),
    ]:
        result = CliRunner().invoke(main, args, env={"GATEWAY_DATABASE_URL": url, "GATEWAY_CONFIG": config})
        assert result.exit_code == 2 and message in result.stderr, result.output


SILENT = '''
import testkit
from gateway import SourceType, hookimpl


class Silent(testkit.EchoSource):
    """A source with a handshake and no preview of it."""

    name = "silent"
    handshake_preview = SourceType.handshake_preview


@hookimpl
def register_source_types(register):
    register(Silent)
'''


def test_try_says_when_a_plugin_cannot_tell_a_handshake_without_making_it(tmp_path, write_config, install,
                                                                          monkeypatch):
    install(fixed=False)
    monkeypatch.syspath_prepend(str(testkit.write_distribution(
        tmp_path / "silent", "gateway-silent", {"silent": "silent_source"}, {"silent_source": SILENT})))
    payload = tmp_path / "payload.json"
    payload.write_text(json.dumps({"id": "1", "title": "disk"}))
    shown = gateway(f"sqlite:///{tmp_path / 'none.db'}", write_config(CONFIG), "try", "silent", str(payload))
    assert shown.splitlines()[2:5] == [
        "verify: passed",
        "handshake: the silent plugin answers handshakes but cannot say whether this is one without answering it: "
        "no handshake was made",
        "accepted: 1 alert (rolled back: nothing stored)"]
