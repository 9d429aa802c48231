"""Webhooks carrying several alerts: each alert is refused, stored or found a duplicate on its own.

Through the HTTP app on both databases, with Alertmanager's real notification body (the
bundled ``alertmanager`` source) and the test-only source for what no vendor sends.
"""
from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest
import testkit
from conftest import DEFAULT_CONFIG
from testkit.support import database_at
from sqlalchemy import create_engine, func, insert, select, text

from gateway.store.db import upgrade
from gateway.store.models import AlertRow, Incident, RawRequest

GROUP = json.loads((Path(__file__).parents[1] / "plugins/alertmanager/gateway_alertmanager/samples/group_firing.json")
                   .read_text())
CONFIG = DEFAULT_CONFIG.replace("sources:\n", "sources:\n  - key: am\n    type: alertmanager\n", 1)
"""The default config (a ``testsrc`` source ``src`` routed to the incident store) and an Alertmanager source."""
HOOK = "/hooks/alertmanager/am/"


def group(*instances: str, **alert_changes) -> dict:
    """The documented group body, one alert per instance (the first alert's shape for each)."""
    payload = copy.deepcopy(GROUP)
    template = payload["alerts"][0]
    payload["alerts"] = [{**copy.deepcopy(template), **alert_changes,
                          "labels": {**template["labels"], "instance": instance},
                          "fingerprint": f"fp-{instance}"} for instance in instances]
    return payload


@pytest.fixture
def gw(make_app):
    return make_app(CONFIG)


@pytest.fixture
def hook(gw):
    return gw.test_client()


def stored(gw):
    with gw.extensions["gateway"].engine.connect() as conn:
        return conn.execute(select(AlertRow.__table__).order_by(AlertRow.id)).all()


def refused_total(client, source: str, reason: str) -> float:
    return testkit.metric(client.get("/metrics").get_data(as_text=True), "gateway_alerts_refused_total",
                          source=source, reason=reason)


def test_a_malformed_alert_is_refused_alone_and_the_rest_stored(gw, hook):
    payload = group("api-1", "api-2", "api-3")
    del payload["alerts"][1]["labels"]
    before = refused_total(hook, "am", "invalid_alert")

    response = hook.post(HOOK, json=payload)

    assert response.status_code == 202, response.json
    rows = stored(gw)
    assert response.json == {"status": "accepted", "alerts": [row.id for row in rows], "duplicates": [], "refused": [
        {"index": 1, "code": "invalid_alert", "message": "alert refused: alerts[1].labels (expected a non-empty "
         "object of strings)", "fields": {"alerts[1].labels": "expected a non-empty object of strings"}}]}
    assert [row.resource_name for row in rows] == ["api-1", "api-3"]
    assert refused_total(hook, "am", "invalid_alert") == before + 1
    with gw.extensions["gateway"].engine.connect() as conn:
        assert conn.execute(select(RawRequest.alert_count)).scalar_one() == 2


def test_the_cores_own_checks_refuse_one_alert_of_a_batch(gw, hook):
    response = hook.post("/hooks/testsrc/src/", json={"alerts": [
        {"id": "a", "title": "cpu"}, {"id": "b", "title": "mem", "severity": "urgent"}]})
    assert response.status_code == 202, response.json
    assert response.json["refused"] == [{
        "index": 1, "code": "invalid_alert",
        "message": "alert refused: [1].severity (must be one of critical, error, warning, info, got 'urgent')",
        "fields": {"[1].severity": "must be one of critical, error, warning, info, got 'urgent'"}}]
    assert [row.external_id for row in stored(gw)] == ["a"]


def test_a_batch_with_no_valid_alert_is_a_422_naming_every_field(gw, hook):
    payload = group("api-1", "api-2")
    payload["alerts"][0]["status"] = "pending"
    del payload["alerts"][1]["labels"]
    before = refused_total(hook, "am", "invalid_alert")

    response = hook.post(HOOK, json=payload)

    assert (response.status_code, response.json["error"]["code"]) == (422, "invalid_payload")
    assert response.json["error"]["fields"] == {"alerts[0].status": "must be firing or resolved",
                                                "alerts[1].labels": "expected a non-empty object of strings"}
    assert response.json["error"]["message"].startswith("no alert in this request could be accepted: [0] ")
    assert stored(gw) == []
    assert refused_total(hook, "am", "invalid_alert") == before + 2


def test_a_plugin_failing_on_one_alert_refuses_that_alert(gw, hook, monkeypatch):
    from gateway_alertmanager import AlertmanagerSource

    real = AlertmanagerSource.fingerprint
    monkeypatch.setattr(AlertmanagerSource, "fingerprint",
                        lambda self, alert: 1 / 0 if alert.labels["instance"] == "api-2" else real(self, alert))
    before = refused_total(hook, "am", "unprocessable_alert")
    response = hook.post(HOOK, json=group("api-1", "api-2"))
    assert response.status_code == 202, response.json
    assert response.json["refused"] == [{"index": 1, "code": "unprocessable_alert", "fields": {},
                                         "message": "the alertmanager plugin could not process this alert "
                                                    "(ZeroDivisionError)"}]
    assert refused_total(hook, "am", "unprocessable_alert") == before + 1


def test_a_repeated_group_stores_nothing_and_a_grown_one_only_its_new_alert(gw, hook, api):
    first = hook.post(HOOK, json=group("api-1", "api-2"))
    assert (first.status_code, len(first.json["alerts"])) == (202, 2)

    reminder = hook.post(HOOK, json=group("api-1", "api-2"))
    assert (reminder.status_code, reminder.json) == (200, {"status": "duplicate"})

    grown = hook.post(HOOK, json=group("api-2", "api-3", "api-1"))
    assert grown.status_code == 202, grown.json
    rows = stored(gw)
    assert (grown.json["alerts"], grown.json["duplicates"]) == ([rows[-1].id], [0, 2])
    assert [row.resource_name for row in rows] == ["api-1", "api-2", "api-3"]
    counts = {i["resource"]["name"]: i["event_count"] for i in api.get("/api/incidents").json["items"]}
    assert counts == {"api-1": 1, "api-2": 1, "api-3": 1}

    # The same alerts resolved are new alerts (their status is part of the key): each resolves its incident.
    resolved = hook.post(HOOK, json=group("api-1", "api-2", "api-3", status="resolved", endsAt="2026-12-05T10:30:00Z"))
    assert (resolved.status_code, len(resolved.json["alerts"])) == (202, 3)
    assert {i["status"] for i in api.get("/api/incidents").json["items"]} == {"resolved"}


def test_an_alert_repeated_within_one_request_is_stored_once(gw, hook):
    response = hook.post("/hooks/testsrc/src/", json={"alerts": [
        {"id": "a", "title": "cpu"}, {"id": "a", "title": "cpu"}, {"id": "b", "title": "mem"}]})
    assert response.status_code == 202, response.json
    assert (len(response.json["alerts"]), response.json["duplicates"]) == (2, [1])
    assert [row.external_id for row in stored(gw)] == ["a", "b"]


def test_duplicates_and_refusals_together_answer_duplicate_listing_the_refusals(gw, hook):
    assert hook.post(HOOK, json=group("api-1")).status_code == 202
    payload = group("api-1", "api-2")
    payload["alerts"][1]["startsAt"] = "yesterday"
    response = hook.post(HOOK, json=payload)
    assert (response.status_code, response.json["status"]) == (200, "duplicate")
    assert [r["fields"] for r in response.json["refused"]] == [{"alerts[1].startsAt": "must be an RFC 3339 time"}]
    assert len(stored(gw)) == 1


def test_overlapping_groups_posted_at_once_from_processes_store_each_alert_once(gw, database_url, write_config):
    """Gunicorn workers are processes: the unique index, not a lookup, decides who stores a shared alert."""
    config = write_config(CONFIG)
    batches = [[(HOOK, json.dumps(group(*instances)).encode(), {"Content-Type": "application/json"})]
               for instances in (("api-1", "api-2"), ("api-2", "api-3"), ("api-3", "api-1"))]
    answers = testkit.race(database_url, config, batches)

    rows = stored(gw)
    assert sorted(row.resource_name for row in rows) == ["api-1", "api-2", "api-3"]
    accepted = [body for status, body in answers if status == 202]
    assert len(accepted) + answers.count((200, {"status": "duplicate"})) == 3  # the last may find both stored
    assert sorted(i for body in accepted for i in body["alerts"]) == sorted(row.id for row in rows)
    with gw.extensions["gateway"].engine.connect() as conn:
        assert conn.execute(select(Incident.event_count)).scalars().all() == [1, 1, 1]


def test_vendor_metadata_is_stored_and_shown_never_in_labels(gw, hook, api):
    payload = group("api-1")
    payload["alerts"][0]["annotations"]["runbook_url"] = "https://runbooks.example/latency"
    response = hook.post(HOOK, json=payload)
    assert response.status_code == 202, response.json
    [alert_id] = response.json["alerts"]

    alert = api.get(f"/api/alerts/{alert_id}").json
    assert alert["annotations"] == {"summary": "p99 latency over 2 s on api-1", "description": "p99 is 2.7 s for 5 "
                                    "minutes", "runbook_url": "https://runbooks.example/latency",
                                    "alertmanager.fingerprint": "fp-api-1"}
    assert alert["links"] == [{"title": "Prometheus", "url": "http://prometheus:9090/graph?g0.expr=latency"},
                              {"title": "Runbook", "url": "https://runbooks.example/latency"}]
    assert alert["labels"] == payload["alerts"][0]["labels"]
    assert api.get("/api/alerts/999999").status_code == 404

    [incident] = api.get("/api/incidents").json["items"]
    [entry] = api.get(f"/api/incidents/{incident['id']}").json["timeline"]
    assert (entry["alert_id"], entry["annotations"], entry["links"]) == (alert_id, alert["annotations"], alert["links"])


def test_a_link_that_is_not_http_refuses_its_alert(gw, hook, monkeypatch):
    """A link is opened by people: the core refuses ``javascript:`` whatever a plugin passes on."""
    from gateway import Link
    from gateway_alertmanager import AlertmanagerSource

    real = AlertmanagerSource.parse
    monkeypatch.setattr(AlertmanagerSource, "parse", lambda self, request: [
        alert.replace(links=[Link("x", "javascript:alert(1)")]) if alert.resource.name == "api-2" else alert
        for alert in real(self, request)])
    response = hook.post(HOOK, json=group("api-1", "api-2"))
    assert response.status_code == 202, response.json
    assert response.json["refused"][0]["fields"] == {
        "[1].links[0]": "must be a Link whose url is an absolute http(s) URL"}


@pytest.fixture
def at_0005(database_url, tmp_path):
    """An empty database of this test's kind at revision 0005."""
    with database_at(database_url, tmp_path, "0005") as url:
        yield url


def test_migration_0007_keeps_one_alert_per_shared_external_id(at_0005):
    """Before 0007 the streams of one OCI message shared its id; the unique index needs one each."""
    engine = create_engine(at_0005)
    row = dict(source_key="oci", source_type="oci", fingerprint="f", status="firing", severity="info", title="t",
               description="", resource_id="", resource_name="", resource_type="", labels={}, origin="webhook")
    times = dict(occurred_at=text("CURRENT_TIMESTAMP"), received_at=text("CURRENT_TIMESTAMP"))
    with engine.begin() as conn:
        for source_key, external_id in (("oci", "msg-1"), ("oci", "msg-1"), ("oci", "msg-2"), ("other", "msg-1")):
            conn.execute(insert(AlertRow.__table__).values(
                {**row, **times, "source_key": source_key, "external_id": external_id}))
    upgrade(at_0005)
    with engine.connect() as conn:
        kept = conn.execute(select(AlertRow.source_key, AlertRow.external_id).order_by(AlertRow.id)).all()
        count = conn.execute(select(func.count()).select_from(AlertRow)).scalar_one()
    engine.dispose()
    assert [tuple(r) for r in kept] == [("oci", "msg-1"), ("oci", None), ("oci", "msg-2"), ("other", "msg-1")]
    assert count == 4
