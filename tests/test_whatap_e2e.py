"""Issue 3 end to end: real WhaTap webhooks through POST /hooks/whatap/<key>/ into the incident store.

Everything goes through HTTP (the webhook endpoint and the bearer API) on both
databases; the WhaTap ``time`` field (epoch ms) sets each alert's occurred_at, which is
how these tests place recoveries, reopen windows and late deliveries in time.
"""
from __future__ import annotations

import base64
import hashlib
import json
import time
import uuid
from datetime import datetime, timezone

import pytest

TOKENS = {"whatap-prod": "s3cret", "whatap-dev": "dev-t0ken"}
CONFIG = """
sources:
  - key: whatap-prod
    type: whatap
    name: 와탭 실운영 환경
    token: s3cret{source_window}
  - key: whatap-dev
    type: whatap
    token: dev-t0ken
sinks:
  - name: itms
    type: itms
route:
  sinks: [itms]{route_window}
"""
MINUTE = 60_000
TITLE = "[Critical][JAVA][결제-운영][pay-api][힙 사용량 과다]"


def config(source_window: str = "", route_window: str = "") -> str:
    return CONFIG.format(
        source_window=f"\n    reopen_window: {source_window}" if source_window else "",
        route_window=f"\n  reopen_window: {route_window}" if route_window else "",
    )


WINDOWS = {"source": config(source_window="10m"), "route": config(route_window="10m")}


def now_ms() -> int:
    return int(time.time() * 1000)


def whatap(**changes) -> dict:
    """A realistic WhaTap Webhook JSON alert; a change to None drops the key."""
    payload = {
        "pcode": 31337, "projectName": "결제-운영", "time": now_ms(), "oid": -2087423641,
        "oname": "pay-api-7f9c", "title": TITLE, "message": "힙 사용량이 97.3%입니다 (임계치 95%)",
        "level": "Critical", "status": "on", "uuid": str(uuid.uuid4()), "metricName": "heap_use",
        "metricValue": "97.3", "metricThreshold": "95",
    }
    payload.update(changes)
    return {k: v for k, v in payload.items() if v is not None}


def encode(payload: dict) -> bytes:
    """Indented UTF-8 with key order kept, so a byte-exact copy is distinguishable from a re-encoding."""
    return json.dumps(payload, ensure_ascii=False, indent=1).encode("utf-8")


def fingerprint(source: str, payload: dict) -> str:
    """The documented fingerprint (plugins/whatap/README.md), namespaced by source as the core does."""
    key = ["whatap", str(payload["pcode"]), str(payload.get("oid", "")), payload.get("metricName", ""),
           payload["title"]]
    plugin = hashlib.sha256(json.dumps(key, ensure_ascii=False, separators=(",", ":")).encode()).hexdigest()
    return hashlib.sha256(f"{source}\n{plugin}".encode()).hexdigest()


def at(millis: int) -> str:
    return datetime.fromtimestamp(millis / 1000, timezone.utc).isoformat()


def parse_time(value: str) -> datetime:
    return datetime.fromisoformat(value)


@pytest.fixture
def yaml_config() -> str:
    return config()


@pytest.fixture
def app(make_app, yaml_config):
    return make_app(yaml_config)


@pytest.fixture
def post(client):
    def post(payload: dict, source: str = "whatap-prod", headers: dict | None = None):
        sent = {"Content-Type": "application/json; charset=utf-8", "X-Webhook-Token": TOKENS[source]}
        return client.post(f"/hooks/whatap/{source}/", data=encode(payload), headers={**sent, **(headers or {})})

    return post


@pytest.fixture
def fire(post):
    """Post an alert that must be accepted; returns the payload."""
    def fire(source: str = "whatap-prod", **changes) -> dict:
        payload = whatap(**changes)
        response = post(payload, source)
        assert response.status_code == 202, response.json
        assert response.json["status"] == "accepted" and len(response.json["alerts"]) == 1
        return payload

    return fire


@pytest.fixture
def incidents(api):
    """All incidents, oldest first."""
    def incidents(**query) -> list[dict]:
        body = api.get("/api/incidents", query_string={"sort": "created_at", **query}).json
        assert body["total"] == len(body["items"])
        return body["items"]

    return incidents


def only_incident(incidents) -> dict:
    found = incidents()
    assert len(found) == 1, found
    return found[0]


PAYLOADS = {
    "critical": {},
    "warning": {"level": "Warning", "title": "[Warning][JAVA][결제-운영][pay-api][응답 지연]",
                "message": "평균 응답 시간 3.2초 (임계치 3초)", "metricName": "resp_time"},
    "korean": {"projectName": "와탭 실운영 환경", "oname": "웹서버-01", "title": "CPU 사용률 경고",
               "message": "서버 CPU 사용률이 90%를 초과했습니다. (현재 93.5%)", "level": "Warning",
               "metricName": "cpu", "oid": 998877},
    "unknown_keys": {"alertType": "SERVER_CPU", "platform": "INFRA", "stateful": True,
                     "tags": {"team": "sre", "env": ["prod"]}, "repeat": [0, 3600000]},
    "optional_missing": {key: None for key in ("projectName", "time", "oid", "oname", "message", "level",
                                               "status", "metricName", "metricValue", "metricThreshold")},
}


@pytest.mark.parametrize("variant", list(PAYLOADS))
def test_alert_becomes_an_incident(variant, post, incidents, incident):
    payload = whatap(**PAYLOADS[variant])
    before = datetime.now(timezone.utc)
    response = post(payload)
    after = datetime.now(timezone.utc)
    assert response.status_code == 202, response.json

    found = only_incident(incidents)
    detail = incident(found["id"])
    created = parse_time(detail["created_at"])
    assert before <= created <= after
    assert {k: detail[k] for k in (
        "id", "fingerprint", "source", "title", "description", "severity", "status", "resource", "event_count",
        "acknowledged_at", "resolved_at", "closed_at", "last_event_at",
    )} == {
        "id": found["id"],
        "fingerprint": fingerprint("whatap-prod", payload),
        "source": "whatap-prod",
        "title": payload["title"],
        "description": payload.get("message", ""),
        # Unknown or missing levels are warning by the plugin's documented choice.
        "severity": "critical" if payload.get("level") == "Critical" else "warning",
        "status": "triggered",
        "resource": {"id": str(payload.get("oid", "")), "name": payload.get("oname", ""), "type": "whatap.Agent"},
        "event_count": 1,
        "acknowledged_at": None, "resolved_at": None, "closed_at": None,
        "last_event_at": detail["created_at"],
    }
    if "time" in payload:
        assert detail["first_seen_at"] == at(payload["time"])
    else:  # no WhaTap time: it happened when the gateway received it
        assert before <= parse_time(detail["first_seen_at"]) <= after
    assert [(e["kind"], e["actor"]) for e in detail["timeline"]] == [("created", "source:whatap-prod")]


@pytest.mark.parametrize("missing", [("title",), ("pcode",), ("title", "pcode")])
def test_missing_required_fields_are_named_and_nothing_is_stored(missing, post, api):
    response = post(whatap(**{name: None for name in missing}))
    assert response.status_code == 422
    assert response.json["error"]["code"] == "invalid_payload"
    assert response.json["error"]["fields"] == {name: "missing" for name in missing}
    assert api.get("/api/events").json["total"] == 0
    assert api.get("/api/incidents").json["total"] == 0


@pytest.mark.parametrize("headers, code", [
    ({"X-Webhook-Token": "wrong"}, "invalid_token"),
    ({"X-Webhook-Token": TOKENS["whatap-dev"]}, "invalid_token"),  # another source's token
    ({"X-Webhook-Token": ""}, "missing_token"),
])
def test_wrong_or_missing_token_is_401(headers, code, post, api):
    response = post(whatap(), headers=headers)
    assert response.status_code == 401
    assert response.json["error"]["code"] == code
    assert api.get("/api/events").json["total"] == 0
    assert api.get("/api/incidents").json["total"] == 0


def test_absent_token_header_is_401(client, api):
    response = client.post("/hooks/whatap/whatap-prod/", data=encode(whatap()),
                           headers={"Content-Type": "application/json"})
    assert response.status_code == 401
    assert response.json["error"]["code"] == "missing_token"
    assert api.get("/api/events").json["total"] == 0


def test_repeats_join_one_incident_and_severity_only_rises(fire, incidents, incident):
    seen = []
    for level in ("Warning", "Critical", "Warning"):
        fire(level=level)
        seen.append(only_incident(incidents))
    assert [(i["severity"], i["event_count"], i["status"]) for i in seen] == [
        ("warning", 1, "triggered"), ("critical", 2, "triggered"), ("critical", 3, "triggered"),
    ]
    last_events = [parse_time(i["last_event_at"]) for i in seen]
    assert last_events == sorted(set(last_events))  # strictly advancing
    assert seen[2]["created_at"] == seen[0]["created_at"]
    kinds = [e["kind"] for e in incident(seen[0]["id"])["timeline"]]
    assert kinds == ["created", "webhook_received", "webhook_received"]


@pytest.mark.parametrize("change", [{"oid": 1234567890}, {"metricName": "gc_time"}, {"title": "다른 장애"}])
def test_a_different_problem_opens_another_incident(change, fire, incidents):
    first = fire()
    second = fire(**change)
    found = incidents()
    assert [(i["title"], i["status"], i["event_count"]) for i in found] == [
        (first["title"], "triggered", 1), (second["title"], "triggered", 1),
    ]
    assert found[0]["fingerprint"] != found[1]["fingerprint"]


def test_two_sources_never_merge(post, incidents):
    payload = whatap()
    assert post(payload, "whatap-prod").status_code == 202
    assert post(payload, "whatap-dev").status_code == 202
    found = incidents()
    assert [(i["source"], i["event_count"], i["fingerprint"]) for i in found] == [
        ("whatap-prod", 1, fingerprint("whatap-prod", payload)),
        ("whatap-dev", 1, fingerprint("whatap-dev", payload)),
    ]


def test_same_uuid_and_status_twice_is_a_duplicate(post, api, incidents):
    payload = whatap()
    assert post(payload).status_code == 202
    again = post(payload)
    assert (again.status_code, again.json) == (200, {"status": "duplicate"})
    assert [(i["event_count"], i["status"]) for i in incidents()] == [(1, "triggered")]
    assert api.get("/api/events").json["total"] == 1
    # The same uuid with another status is the recovery, not a resend.
    assert post({**payload, "status": "off", "time": payload["time"] + MINUTE}).status_code == 202
    assert [(i["event_count"], i["status"]) for i in incidents()] == [(2, "resolved")]


RECOVERIES = {
    "status_off": {"status": "off"},
    "status_OK": {"status": "OK"},
    "recovered_title_and_message": {"title": f"RECOVERED: {TITLE}", "message": "RECOVERED: 힙 사용량 정상 (71.0%)"},
    "recovered_message_only": {"message": "RECOVERED: 힙 사용량 정상 (71.0%)"},
}


@pytest.mark.parametrize("acknowledged", [False, True], ids=["from_triggered", "from_acknowledged"])
@pytest.mark.parametrize("recovery", list(RECOVERIES))
def test_recovery_resolves_the_open_incident_as_the_source(recovery, acknowledged, fire, post, api, incident,
                                                            incidents):
    start = now_ms() - 10 * MINUTE
    fire(time=start)
    opened = only_incident(incidents)
    if acknowledged:
        assert api.post(f"/api/incidents/{opened['id']}/acknowledge").status_code == 200
    payload = whatap(time=start + 3 * MINUTE, **RECOVERIES[recovery])
    assert post(payload).status_code == 202

    detail = incident(opened["id"])
    assert (detail["status"], detail["resolved_at"], detail["event_count"]) == ("resolved", at(start + 3 * MINUTE), 2)
    assert len(incidents()) == 1
    change = detail["timeline"][-1]
    assert {k: change[k] for k in ("kind", "actor", "from_status", "to_status")} == {
        "kind": "status_changed", "actor": "source:whatap-prod",
        "from_status": "acknowledged" if acknowledged else "triggered", "to_status": "resolved",
    }
    assert api.get(change["raw_url"]).data == encode(payload)


def test_recovery_older_than_the_latest_alert_keeps_the_incident_open(fire, incidents, incident):
    """Delivered out of order: the problem fired again after that recovery, so it must not be hidden."""
    start = now_ms() - 30 * MINUTE
    fire(time=start)
    fire(time=start + 10 * MINUTE)
    fire(time=start + 5 * MINUTE, status="off")
    detail = incident(only_incident(incidents)["id"])
    assert (detail["status"], detail["resolved_at"], detail["event_count"]) == ("triggered", None, 3)
    assert [e["kind"] for e in detail["timeline"]] == ["created", "webhook_received", "webhook_received"]

    fire(time=start + 11 * MINUTE, status="off")
    detail = incident(detail["id"])
    assert (detail["status"], detail["resolved_at"], detail["event_count"]) == (
        "resolved", at(start + 11 * MINUTE), 4)


def test_recovery_with_no_incident_before_it_is_kept_as_a_resolved_incident(post, api):
    """So that a firing from before it, delivered later, opens nothing (tests/test_recovery_first.py)."""
    payload = whatap(status="off")
    response = post(payload)
    assert response.status_code == 202
    [incident] = api.get("/api/incidents").json["items"]
    assert (incident["status"], incident["event_count"]) == ("resolved", 1)
    events = api.get("/api/events").json
    assert events["total"] == 1
    event = events["items"][0]
    assert (event["source"], event["external_id"], event["alert_count"]) == (
        "whatap-prod", f"{payload['uuid']}:off", 1)
    assert api.get(event["raw_url"]).data == encode(payload)


def test_after_resolve_a_new_firing_opens_a_new_incident(fire, incidents):
    start = now_ms() - 10 * MINUTE
    fire(time=start)
    fire(time=start + MINUTE, status="off")
    fire(time=start + 2 * MINUTE)
    found = incidents()
    assert [(i["status"], i["event_count"]) for i in found] == [("resolved", 2), ("triggered", 1)]
    assert found[0]["fingerprint"] == found[1]["fingerprint"]


@pytest.mark.parametrize("delay_minutes, close_first, reopens", [
    (4, False, True),    # inside the 10m window
    (12, False, False),  # beyond it
    (2, True, False),    # closed is final
], ids=["within_window", "beyond_window", "closed"])
@pytest.mark.parametrize("yaml_config", list(WINDOWS.values()), ids=list(WINDOWS))
def test_reopen_window(delay_minutes, close_first, reopens, fire, api, incidents, incident):
    start = now_ms() - 30 * MINUTE
    fire(time=start)
    fire(time=start + MINUTE, status="off")
    first = only_incident(incidents)
    if close_first:
        assert api.post(f"/api/incidents/{first['id']}/close").status_code == 200
    fire(time=start + MINUTE + delay_minutes * MINUTE, level="Warning")

    found = incidents()
    detail = incident(first["id"])
    if reopens:
        assert [i["id"] for i in found] == [first["id"]]
        assert (detail["status"], detail["resolved_at"], detail["severity"], detail["event_count"]) == (
            "triggered", None, "warning", 3)
        reopened = detail["timeline"][-1]
        assert {k: reopened[k] for k in ("kind", "actor", "from_status", "to_status")} == {
            "kind": "reopened", "actor": "source:whatap-prod", "from_status": "resolved", "to_status": "triggered"}
        assert reopened["raw_url"] is not None
    else:
        assert [(i["id"] == first["id"], i["status"]) for i in found] == [
            (True, "closed" if close_first else "resolved"), (False, "triggered")]
        assert "reopened" not in [e["kind"] for e in detail["timeline"]]


@pytest.mark.parametrize("resolved_by", ["recovery", "person"])
@pytest.mark.parametrize("yaml_config", [config(), WINDOWS["source"]], ids=["no_window", "window_10m"])
def test_late_alert_never_reopens_or_retriggers(resolved_by, fire, api, incidents, incident):
    start = now_ms() - 5 * MINUTE
    fire(time=start)
    first = only_incident(incidents)
    if resolved_by == "recovery":
        fire(time=start + 2 * MINUTE, status="off")
    else:
        assert api.post(f"/api/incidents/{first['id']}/resolve").status_code == 200
    resolved = incident(first["id"])

    fire(time=start + MINUTE, level="Warning")  # happened before the resolution, delivered after it

    detail = incident(first["id"])
    assert [i["id"] for i in incidents()] == [first["id"]]
    assert (detail["status"], detail["resolved_at"], detail["severity"]) == (
        "resolved", resolved["resolved_at"], "critical")
    assert detail["event_count"] == resolved["event_count"] + 1
    assert [e["kind"] for e in detail["timeline"]][-1] == "webhook_received"
    assert "reopened" not in [e["kind"] for e in detail["timeline"]]


def test_basic_password_is_accepted_as_the_token(client, incidents):
    credentials = base64.b64encode(f"whatap:{TOKENS['whatap-prod']}".encode()).decode()
    response = client.post("/hooks/whatap/whatap-prod/", data=encode(whatap()),
                           headers={"Content-Type": "application/json", "Authorization": f"Basic {credentials}"})
    assert response.status_code == 202, response.json
    assert len(incidents()) == 1


def test_published_format_without_uuid_opens_an_incident_and_a_redelivery_is_a_duplicate(post, incidents, api):
    """WhaTap's published body (no uuid), read from the plugin's payload file."""
    from pathlib import Path
    published = json.loads((Path(__file__).resolve().parents[1] / "plugins/whatap/gateway_whatap/samples/published.json")
                           .read_text())
    first = post(published)
    assert first.status_code == 202, first.json
    assert post(published).json == {"status": "duplicate"}
    [incident] = incidents()
    assert (incident["status"], incident["event_count"], incident["title"]) == ("triggered", 1, "Alert Title")
    recovered = post(dict(published, status="off", time=published["time"] + MINUTE))
    assert recovered.status_code == 202, recovered.json
    assert [i["status"] for i in incidents()] == ["resolved"]
    assert api.get("/api/events").json["total"] == 2
