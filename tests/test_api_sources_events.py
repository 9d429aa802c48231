"""/api/sources, /api/events, /api/config/reload and the bearer token that guards /api/*."""
from __future__ import annotations

import json
import re

import pytest
import testkit
from testkit.support import admin_client, installed_sink_types, sent_statements

ALERT = {"id": "evt-1", "title": "disk full", "severity": "critical"}


def test_created_source_without_key_gets_an_unguessable_one(api, client):
    first = api.post("/api/sources", json={"type": "testsrc", "name": "Team A"})
    second = api.post("/api/sources", json={"type": "testsrc"})
    assert (first.status_code, second.status_code) == (201, 201)
    key = first.json["key"]
    assert re.fullmatch(r"[A-Za-z0-9_-]{20,}", key) and key != second.json["key"]
    assert first.json["webhook_url"] == f"http://localhost/hooks/testsrc/{key}/"
    assert (first.json["origin"], first.json["read_only"], first.json["enabled"]) == ("api", False, True)
    assert client.post(f"/hooks/testsrc/{key}/", json=ALERT).status_code == 202
    assert client.post(f"/hooks/testsrc/{key[:-1]}/", json=ALERT).status_code == 404


def test_created_source_with_explicit_key_and_duplicates(api, client):
    created = api.post("/api/sources", json={"key": "team-b", "type": "testsrc", "name": "Team B"})
    assert created.status_code == 201
    assert api.get("/api/sources/team-b").json["name"] == "Team B"
    assert client.post("/hooks/testsrc/team-b", json=ALERT).status_code == 202
    for key, where in (("team-b", "already exists"), ("src", "declared in gateway.yaml")):
        again = api.post("/api/sources", json={"key": key, "type": "testsrc"})
        assert again.status_code == 409
        assert again.json["error"]["code"] == "source_exists" and where in again.json["error"]["message"]


@pytest.mark.parametrize("body, bad_fields", [
    ({"type": "no-such-type"}, {"type"}),
    ({"type": "testsrc", "reopen_window": "soon", "enabled": "maybe"}, {"reopen_window", "enabled"}),
    ({"key": "has space", "type": "testsrc"}, {"key"}),
])
def test_invalid_source_is_422_naming_each_field(api, body, bad_fields):
    response = api.post("/api/sources", json=body)
    assert response.status_code == 422, response.json
    assert response.json["error"]["code"] == "invalid_request"
    assert set(response.json["error"]["fields"]) == bad_fields
    assert api.get("/api/sources").json["total"] == 1  # only the YAML source


def test_yaml_sources_are_listed_read_only(api):
    listed = api.get("/api/sources").json
    assert [(s["key"], s["origin"], s["read_only"]) for s in listed["items"]] == [("src", "file", True)]
    response = api.patch("/api/sources/src", json={"enabled": False})
    assert response.status_code == 409
    assert response.json["error"]["code"] == "read_only"


def test_disable_and_enable_through_patch(api, client):
    key = api.post("/api/sources", json={"type": "testsrc"}).json["key"]
    assert api.patch(f"/api/sources/{key}", json={"enabled": False}).json["enabled"] is False
    refused = client.post(f"/hooks/testsrc/{key}/", json=ALERT)
    assert (refused.status_code, refused.json["error"]["code"]) == (403, "source_disabled")
    assert api.patch(f"/api/sources/{key}", json={"enabled": True}).json["enabled"] is True
    assert client.post(f"/hooks/testsrc/{key}/", json=ALERT).status_code == 202


def test_rotated_token_is_shown_once_and_replaces_the_old(api, client):
    created = api.post("/api/sources", json={"key": "guarded", "type": "testsrc", "token": "first-token-123"})
    assert created.json["token"] == "first-token-123"
    hook = "/hooks/testsrc/guarded/"
    assert client.post(hook, json=ALERT, headers={"X-Test-Token": "first-token-123"}).status_code == 202

    rotated = api.patch("/api/sources/guarded", json={"rotate_token": True})
    assert rotated.status_code == 200
    new = rotated.json["token"]
    assert len(new) >= 20 and new != "first-token-123"
    old_answer = client.post(hook, json={**ALERT, "id": "2"}, headers={"X-Test-Token": "first-token-123"})
    assert (old_answer.status_code, old_answer.json["error"]["code"]) == (401, "unauthorized")
    assert client.post(hook, json={**ALERT, "id": "2"}, headers={"X-Test-Token": new}).status_code == 202

    for shown in (api.get("/api/sources").get_data(as_text=True), api.get("/api/sources/guarded").get_data(as_text=True)):
        assert new not in shown and "first-token-123" not in shown
    listed = api.get("/api/sources/guarded").json
    assert "token" not in listed and listed["options"]["token"] == "***"


@pytest.mark.parametrize("authorization, code", [
    (None, "missing_token"), ("Bearer wrong", "invalid_token"), ("Basic dGVzdDp0ZXN0", "missing_token"),
])
def test_api_needs_the_bearer_token(client, authorization, code):
    headers = {"Authorization": authorization} if authorization else {}
    for path in ("/api/sources", "/api/events", "/api/deliveries", "/api/config"):
        response = client.get(path, headers=headers)
        assert response.status_code == 401
        assert response.json["error"]["code"] == code
        assert response.headers["WWW-Authenticate"] == 'Bearer realm="gateway"'


def test_wrong_method_on_the_api_is_json_405_with_allow(api):
    response = api.delete("/api/sources")
    assert (response.status_code, response.json["error"]["code"]) == (405, "method_not_allowed")
    assert set(response.headers["Allow"].split(", ")) == {"GET", "HEAD", "OPTIONS", "POST"}


def test_events_list_and_raw_bytes(api, client):
    body = b'{"id":"e-9" ,"title":"cpu \xec\x95\x8c\xeb\x9e\x8c"}'
    for external_id in ("e-1", "e-2"):
        client.post("/hooks/testsrc/src/", json={**ALERT, "id": external_id})
    client.post("/hooks/testsrc/src/", data=body, content_type="application/vnd.vendor+json")

    everything = api.get("/api/events?source=src").json
    assert everything["total"] == 3
    found = api.get("/api/events?source=src&external_id=e-9").json
    assert found["total"] == 1
    event = found["items"][0]
    assert (event["source"], event["external_id"], event["size"], event["content_type"], event["alert_count"]) == (
        "src", "e-9", len(body), "application/vnd.vendor+json", 1)
    raw = api.get(event["raw_url"])
    assert (raw.status_code, raw.data, raw.content_type) == (200, body, "application/vnd.vendor+json")
    assert api.get("/api/events?source=other").json["total"] == 0
    paged = api.get("/api/events?source=src&per_page=2&page=2").json
    assert (paged["total"], len(paged["items"]), paged["items"][0]["external_id"]) == (3, 1, "e-1")
    missing = api.get("/api/events/999999/raw")
    assert (missing.status_code, missing.json["error"]["code"]) == (404, "not_found")


@pytest.mark.parametrize("query, counted", [
    ("external_id=e-2", False), ("per_page=2&page=2", False), ("source=other", False),
    ("per_page=2", True), ("per_page=2&page=5", True),
])
def test_a_lists_end_gives_its_total_without_counting(app, api, client, query, counted):
    """A page with rows but fewer than asked (or an empty first page) ends the list, so its total is
    the rows before it and on it; a full page, or one past the end, still counts."""
    for external_id in ("e-1", "e-2", "e-3"):
        client.post("/hooks/testsrc/src/", json={**ALERT, "id": external_id})
    with sent_statements(app.extensions["gateway"].engine) as sent:
        answer = api.get(f"/api/events?{query}").json
    assert answer["total"] == {"external_id=e-2": 1, "source=other": 0}.get(query, 3)
    # (PostgreSQL's recent-span probes count too, each in a span: ``received_at >=``.)
    totals = [s for s in sent if s.startswith("SELECT count") and "received_at >=" not in s]
    assert bool(totals) is counted, sent


NEW_SOURCE = """
sources:
  - key: src
    type: testsrc
  - key: added
    type: testsrc
sinks:
  - name: itms
    type: itms
route:
  sinks: [itms]
"""


def test_config_reload_applies_a_valid_file_and_keeps_the_old_on_error(app, api, client, write_config):
    assert client.post("/hooks/testsrc/added/", json=ALERT).status_code == 404
    write_config(NEW_SOURCE)
    reloaded = api.post("/api/config/reload")
    assert (reloaded.status_code, reloaded.json["status"]) == (200, "reloaded")
    assert client.post("/hooks/testsrc/added/", json=ALERT).status_code == 202
    assert testkit.metric(client.get("/metrics").get_data(as_text=True),
                          "gateway_config_last_reload_successful") == 1

    path = write_config(NEW_SOURCE.replace("type: itms", "type: nope"))
    refused = api.post("/api/config/reload")
    assert refused.status_code == 422
    assert refused.json["error"]["code"] == "invalid_config"
    assert refused.json["error"]["message"].endswith(
        f"{path}:9: sinks[0].type: unknown sink type 'nope' (registered: {installed_sink_types()})")
    assert client.post("/hooks/testsrc/added/", json={**ALERT, "id": "2"}).status_code == 202
    assert testkit.metric(client.get("/metrics").get_data(as_text=True),
                          "gateway_config_last_reload_successful") == 0
    shown = api.get("/api/config").json
    assert shown["last_reload_ok"] is False and [s["key"] for s in shown["config"]["sources"]] == ["src", "added"]


def test_metrics_never_show_the_key_of_an_api_source(api, client):
    """A tokenless source's key is its only secret, and /metrics answers anyone."""
    counted = (("gateway_webhooks_accepted_total", {"source": "testsrc", "outcome": "accepted"}),
               ("gateway_webhooks_accepted_total", {"source": "Team C", "outcome": "accepted"}),
               ("gateway_webhooks_rejected_total", {"source": "testsrc", "reason": "invalid_json"}))

    def counts() -> list[float]:  # the counters live as long as the process: compare before and after
        exposed = client.get("/metrics").get_data(as_text=True)
        return [testkit.metric(exposed, name, **labels) for name, labels in counted]

    before = counts()
    unnamed = api.post("/api/sources", json={"type": "testsrc"}).json["key"]
    named = api.post("/api/sources", json={"key": "team-c-7f3a9", "type": "testsrc", "name": "Team C"}).json["key"]
    for key in (unnamed, named):
        assert client.post(f"/hooks/testsrc/{key}/", json=ALERT).status_code == 202
    assert client.post(f"/hooks/testsrc/{unnamed}/", data=b"not json").status_code == 400
    exposed = client.get("/metrics").get_data(as_text=True)
    assert unnamed not in exposed and named not in exposed
    assert [after - was for after, was in zip(counts(), before)] == [1, 1, 1]
    assert api.get(f"/api/sources/{unnamed}").json["name"] == "testsrc"


WITH_CREDENTIALS = NEW_SOURCE.replace("route:", """\
  - name: spaceone
    type: spaceone
    url: https://monitoring-webhook.example.com/monitoring/v1/webhook/webhook-1/access-key-1/events
    headers: {Authorization: "Bearer header-s3cret", X-Api-Key: key-s3cret}
route:""")


def test_api_config_hides_every_credential(make_app):
    shown = admin_client(make_app(WITH_CREDENTIALS)).get("/api/config").json["config"]
    dumped = json.dumps(shown)
    for secret in ("header-s3cret", "key-s3cret", "access-key-1"):
        assert secret not in dumped
    assert shown["sinks"][1]["options"]["headers"] == {"Authorization": "***", "X-Api-Key": "***"}
