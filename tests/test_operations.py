"""Operations in the app: request ids and request log lines, /health's parts, trusted proxies."""
from __future__ import annotations

import json
import logging

import pytest
from testkit.support import admin_client

from gateway.logs import MAX_REQUEST_ID, JsonFormatter, request_id


@pytest.fixture
def request_lines(caplog):
    """The request log records of the test, as their ``extra`` fields."""
    caplog.set_level(logging.INFO, logger="gateway.requests")
    fields = ("method", "path", "source", "status", "request_id")
    return lambda: [{name: getattr(r, name) for name in fields} for r in caplog.records
                    if r.name == "gateway.requests"]


def test_a_given_request_id_is_returned_and_logged_and_one_is_made_otherwise(client, request_lines):
    given = client.post("/hooks/testsrc/src/", json={"id": "a", "title": "t"}, headers={"X-Request-ID": "abc-123"})
    made = client.get("/health")
    assert given.status_code == 202 and given.headers["X-Request-ID"] == "abc-123"
    assert len(made.headers["X-Request-ID"]) == 32
    assert request_lines() == [
        {"method": "POST", "path": "/hooks/testsrc/<key>/", "source": "src", "status": 202, "request_id": "abc-123"},
        {"method": "GET", "path": "/health", "source": None, "status": 200,
         "request_id": made.headers["X-Request-ID"]},
    ]


def test_errors_carry_the_request_id_too_and_their_line_names_the_source(client, request_lines):
    refused = client.post("/hooks/testsrc/src/", data=b"{not json", headers={"X-Request-ID": "bad-1"})
    unknown = client.get("/api/nothing-here", headers={"X-Request-ID": "nf-1"})
    assert (refused.status_code, refused.headers["X-Request-ID"]) == (400, "bad-1")
    assert (unknown.status_code, unknown.headers["X-Request-ID"]) == (404, "nf-1")
    assert [(line["status"], line["source"]) for line in request_lines()] == [(400, "src"), (404, None)]


def test_a_request_id_is_cleaned_and_bounded(client):
    forged = client.get("/health", headers={"X-Request-ID": "ok\tid;<script>" + "x" * 500})
    assert forged.headers["X-Request-ID"] == ("okidscript" + "x" * 500)[:MAX_REQUEST_ID]
    assert len(request_id("\t;<>")) == 32  # nothing usable left: a fresh one


def test_an_api_source_key_never_reaches_the_log(app, request_lines):
    api = admin_client(app)
    created = api.post("/api/sources", json={"type": "testsrc"}).json
    api.get(f"/api/sources/{created['key']}")
    app.test_client().post(f"/hooks/testsrc/{created['key']}/", json={"id": "1", "title": "t"})
    lines = request_lines()
    assert [line["path"] for line in lines] == ["/api/sources", "/api/sources/<key>", "/hooks/testsrc/<key>/"]
    assert created["key"] not in json.dumps(lines)


def test_json_log_lines_carry_the_extra_fields():
    record = logging.makeLogRecord({"name": "gateway.requests", "levelno": logging.INFO, "levelname": "INFO",
                                    "msg": "GET /health 200", "status": 200, "request_id": "r1"})
    line = json.loads(JsonFormatter().format(record))
    assert (line["message"], line["status"], line["request_id"], line["level"]) == ("GET /health 200", 200, "r1",
                                                                                    "info")


def test_health_gives_version_time_readiness_and_the_config_in_force(client):
    from importlib.metadata import version

    body = client.get("/health").json
    assert body["version"] == version("alert-gateway") and body["time"].endswith("+00:00")
    assert body["ready"] == {"ok": True, "config": True, "database": True}
    assert len(body["config"]["sha256"]) == 64 and body["config"]["last_reload_error"] is None
    ready, live = client.get("/health/ready"), client.get("/health/live")
    assert (ready.status_code, ready.json["ok"], live.status_code, live.json["status"]) == (200, True, 200, "alive")


@pytest.mark.parametrize("peer, stored", [("10.0.0.7", "203.0.113.9"), ("198.51.100.1", "198.51.100.1")],
                         ids=["trusted-proxy", "anyone-else"])
def test_forwarded_for_is_believed_only_from_a_trusted_proxy(make_app, peer, stored):
    app = make_app(FORWARDED_ALLOW_IPS=frozenset({"10.0.0.0/8"}))
    client = app.test_client()
    client.environ_base["REMOTE_ADDR"] = peer
    r = client.post("/hooks/testsrc/src/", json={"id": "p", "title": "t"}, headers={"X-Forwarded-For": "203.0.113.9"})
    assert r.status_code == 202
    events = admin_client(app).get("/api/events?source=src").json["items"]
    assert [event["remote_addr"] for event in events] == [stored]
