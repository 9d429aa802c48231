"""The incident API over real WhaTap-made incidents: lifecycle, refusals, comments, timeline, listing.

Incidents are created the way production creates them (WhaTap webhooks through
/hooks/whatap/<key>/); people act on them through the bearer API, on both databases.
"""
from __future__ import annotations

import json
import time
import uuid
from datetime import datetime

import pytest

from gateway.incidents.api import SORTS
from gateway.store.models import SEVERITY_RANK

TOKENS = {"whatap-prod": "s3cret", "whatap-dev": "dev-t0ken"}
CONFIG = """
sources:
  - key: whatap-prod
    type: whatap
    token: s3cret
    reopen_window: 10m
  - key: whatap-dev
    type: whatap
    token: dev-t0ken
sinks:
  - name: itms
    type: itms
route:
  sinks: [itms]
"""
MINUTE = 60_000


def now_ms() -> int:
    return int(time.time() * 1000)


def whatap(**changes) -> dict:
    payload = {
        "pcode": 5512, "projectName": "와탭 실운영 환경", "time": now_ms(), "oid": 998877, "oname": "웹서버-01",
        "title": "CPU 사용률 경고", "message": "서버 CPU 사용률이 90%를 초과했습니다", "level": "Warning",
        "status": "on", "uuid": str(uuid.uuid4()), "metricName": "cpu", "metricValue": "93.5",
        "metricThreshold": "90",
    }
    return {**payload, **changes}


def encode(payload: dict) -> bytes:
    return json.dumps(payload, ensure_ascii=False, indent=1).encode("utf-8")


@pytest.fixture
def app(make_app):
    return make_app(CONFIG)


@pytest.fixture
def fire(client, api):
    """Post a WhaTap alert that must be accepted; returns (payload bytes, the incident it joined or None)."""
    def fire(source: str = "whatap-prod", **changes):
        body = encode(whatap(**changes))
        response = client.post(f"/hooks/whatap/{source}/", data=body,
                               headers={"Content-Type": "application/json", "X-Webhook-Token": TOKENS[source]})
        assert response.status_code == 202, response.json
        latest = api.get("/api/incidents", query_string={"sort": "-last_event_at", "per_page": 1}).json["items"]
        return body, latest[0]["id"] if latest else None

    return fire


@pytest.fixture
def act(api):
    """POST a lifecycle action (with an optional note) and return the response."""
    def act(incident_id: int, action: str, note: str | None = None):
        return api.post(f"/api/incidents/{incident_id}/{action}", json={"note": note} if note else None)

    return act


STAMPS = {"acknowledged": "acknowledged_at", "resolved": "resolved_at", "closed": "closed_at"}
ALLOWED = {"triggered": ["acknowledge", "resolve"], "acknowledged": ["resolve"], "resolved": ["close"], "closed": []}


@pytest.mark.parametrize("steps", [
    [("acknowledge", "acknowledged", "담당자 확인, 원인 분석 중"), ("resolve", "resolved", None),
     ("close", "closed", "후속 조치 완료")],
    [("resolve", "resolved", "재시작으로 해결"), ("close", "closed", None)],
], ids=["acknowledge_resolve_close", "resolve_from_triggered"])
def test_lifecycle_writes_status_changes(steps, fire, act, incident):
    _, incident_id = fire()
    previous = "triggered"
    for action, status, note in steps:
        response = act(incident_id, action, note)
        assert response.status_code == 200, response.json
        assert (response.json["status"], response.json["allowed_actions"]) == (status, ALLOWED[status])
        assert response.json[STAMPS[status]] is not None
        previous_status, previous = previous, status
        entry = incident(incident_id)["timeline"][-1]
        assert {k: entry[k] for k in ("kind", "from_status", "to_status", "actor", "note", "raw_url")} == {
            "kind": "status_changed", "from_status": previous_status, "to_status": status, "actor": "admin",
            "note": note, "raw_url": None}
    detail = incident(incident_id)
    assert [e["kind"] for e in detail["timeline"]] == ["created"] + ["status_changed"] * len(steps)
    assert detail["acknowledged_at"] is None if steps[0][0] == "resolve" else detail["acknowledged_at"] is not None


@pytest.mark.parametrize("setup, action", [
    ([], "close"),
    (["acknowledge"], "acknowledge"),
    (["acknowledge"], "close"),
    (["resolve"], "acknowledge"),
    (["resolve"], "resolve"),
    (["resolve", "close"], "acknowledge"),
    (["resolve", "close"], "resolve"),
    (["resolve", "close"], "close"),
])
def test_refused_transition_is_409_naming_the_allowed_actions(setup, action, fire, act, incident):
    _, incident_id = fire()
    for step in setup:
        assert act(incident_id, step).status_code == 200
    before = incident(incident_id)

    response = act(incident_id, action, "시도")

    status = before["status"]
    allowed = f"allowed: {', '.join(ALLOWED[status])}" if ALLOWED[status] else "closed is final"
    assert response.status_code == 409
    assert response.json["error"] == {"code": "transition_not_allowed",
                                      "message": f"incident {incident_id} is {status}: cannot {action}; {allowed}"}
    assert incident(incident_id) == before


@pytest.mark.parametrize("method, path, body", [
    ("get", "/api/incidents/999", None),
    ("post", "/api/incidents/999/acknowledge", None),
    ("post", "/api/incidents/999/resolve", {"note": "x"}),
    ("post", "/api/incidents/999/close", None),
    ("post", "/api/incidents/999/comments", {"body": "메모"}),
])
def test_unknown_incident_is_404(method, path, body, fire, api):
    fire()
    response = getattr(api, method)(path, json=body)
    assert response.status_code == 404
    assert response.json["error"]["code"] == "not_found"


def test_comments_are_kept_in_the_timeline(fire, api, incident):
    _, incident_id = fire()
    bodies = ["원인: 배치 작업으로 인한 CPU 급증", "배치 시간 조정 예정"]
    for text in bodies:
        response = api.post(f"/api/incidents/{incident_id}/comments", json={"body": text})
        assert response.status_code == 201
        assert {k: response.json[k] for k in ("kind", "actor", "body", "note", "raw_url")} == {
            "kind": "commented", "actor": "admin", "body": text, "note": None, "raw_url": None}
    comments = [e for e in incident(incident_id)["timeline"] if e["kind"] == "commented"]
    assert [(c["body"], c["actor"]) for c in comments] == [(text, "admin") for text in bodies]
    assert incident(incident_id)["status"] == "triggered"  # a comment changes nothing else


@pytest.mark.parametrize("body, field", [
    ({}, "body"), ({"body": ""}, "body"), ({"body": None}, "body"), ({"body": 42}, "body"),
    ({"body": "가" * 10_001}, "body"), (["메모"], "_schema"),
])
def test_bad_comment_is_422(body, field, fire, api, incident):
    _, incident_id = fire()
    before = incident(incident_id)
    response = api.post(f"/api/incidents/{incident_id}/comments", json=body)
    assert response.status_code == 422
    assert response.json["error"]["code"] == "invalid_request"
    assert list(response.json["error"]["fields"]) == [field]
    assert incident(incident_id) == before


def test_nothing_is_ever_deleted(fire, act, api, incident):
    _, incident_id = fire()
    assert act(incident_id, "resolve").status_code == 200
    assert act(incident_id, "close").status_code == 200
    response = api.delete(f"/api/incidents/{incident_id}")
    assert response.status_code == 405
    closed = incident(incident_id)
    assert (closed["status"], len(closed["timeline"])) == ("closed", 3)
    assert api.get("/api/incidents", query_string={"status": "closed"}).json["total"] == 1
    assert api.get(closed["timeline"][0]["raw_url"]).status_code == 200


def test_timeline_keeps_every_step_in_order_with_raw_payloads(fire, act, api, incident):
    start = now_ms() - 10 * MINUTE
    created, incident_id = fire(time=start)
    repeat, _ = fire(time=start + MINUTE, metricValue="97.1", message="서버 CPU 사용률 97.1%")
    assert act(incident_id, "acknowledge", "확인했습니다").status_code == 200
    assert api.post(f"/api/incidents/{incident_id}/comments", json={"body": "배치 작업 확인 중"}).status_code == 201
    recovery, _ = fire(time=start + 2 * MINUTE, status="off")
    reopening, joined = fire(time=start + 4 * MINUTE)
    assert joined == incident_id

    timeline = incident(incident_id)["timeline"]
    assert [(e["kind"], e["actor"], e["from_status"], e["to_status"]) for e in timeline] == [
        ("created", "source:whatap-prod", None, None),
        ("webhook_received", "source:whatap-prod", None, None),
        ("status_changed", "admin", "triggered", "acknowledged"),
        ("commented", "admin", None, None),
        ("status_changed", "source:whatap-prod", "acknowledged", "resolved"),
        ("reopened", "source:whatap-prod", "resolved", "triggered"),
    ]
    times = [datetime.fromisoformat(e["at"]) for e in timeline]
    assert times == sorted(times)
    raws = {i: api.get(e["raw_url"]) for i, e in enumerate(timeline) if e["raw_url"]}
    assert {i: (r.status_code, r.data) for i, r in raws.items()} == {
        0: (200, created), 1: (200, repeat), 4: (200, recovery), 5: (200, reopening)}


@pytest.fixture
def population(fire, act):
    """Five incidents across sources, severities and statuses, created in this order (name -> id)."""
    made = {}
    made["heap"] = fire(title="[Critical] 힙 사용량 과다", level="Critical", metricName="heap", message="힙 97%")[1]
    fire(title="[Critical] 힙 사용량 과다", level="Critical", metricName="heap", message="힙 98%")
    fire(title="[Critical] 힙 사용량 과다", level="Critical", metricName="heap", message="힙 99%")
    made["disk"] = fire(title="[Warning] 디스크 사용량 경고", metricName="disk", message="/data 85%")[1]
    assert act(made["disk"], "acknowledge").status_code == 200
    made["io"] = fire("whatap-dev", title="[Critical] 디스크 I/O 지연", level="Critical", metricName="io",
                      message="await 120ms")[1]
    fire("whatap-dev", title="[Critical] 디스크 I/O 지연", metricName="io", status="off")
    made["cpu100"] = fire("whatap-dev", title="CPU 100% reached", level="Info", metricName="cpu", message="")[1]
    made["cpu1000"] = fire(title="cpu 1000 ms stall", metricName="stall", message="")[1]
    return made


@pytest.mark.parametrize("query, expected", [
    ({"status": "triggered"}, {"heap", "cpu100", "cpu1000"}),
    ({"status": "acknowledged"}, {"disk"}),
    ({"status": "resolved"}, {"io"}),
    ({"severity": "critical"}, {"heap", "io"}),
    ({"severity": "info"}, {"cpu100"}),
    ({"source": "whatap-dev"}, {"io", "cpu100"}),
    ({"q": "디스크"}, {"disk", "io"}),
    ({"q": "힙"}, {"heap"}),
    ({"q": "CPU"}, {"cpu100", "cpu1000"}),  # case-insensitive
    ({"q": "100%"}, {"cpu100"}),  # % is a character to find, not a wildcard
    ({"q": "120ms"}, {"io"}),  # the description is searched too
    ({"status": "triggered", "source": "whatap-prod"}, {"heap", "cpu1000"}),
    ({"q": "없는 장애"}, set()),
])
def test_list_filters_and_search(query, expected, population, api):
    body = api.get("/api/incidents", query_string=query).json
    names = {v: k for k, v in population.items()}
    assert {names[item["id"]] for item in body["items"]} == expected
    assert (body["total"], body["page"]) == (len(expected), 1)


@pytest.mark.parametrize("sort, expected", [
    ("created_at", ["heap", "disk", "io", "cpu100", "cpu1000"]),
    ("-created_at", ["cpu1000", "cpu100", "io", "disk", "heap"]),
    ("-event_count", ["heap", "io", "cpu1000", "cpu100", "disk"]),  # ties: newest first
    ("severity", ["io", "heap", "cpu1000", "disk", "cpu100"]),
    ("-last_event_at", ["cpu1000", "cpu100", "io", "disk", "heap"]),
    # Within a status, as the console's tabs read it (its index, 0021); within a severity, newest first.
    ("severity&status=triggered", ["heap", "cpu1000", "cpu100"]),
    ("severity&severity=critical", ["io", "heap"]),
])
def test_list_sorting(sort, expected, population, api):
    items = api.get(f"/api/incidents?sort={sort}").json["items"]
    names = {v: k for k, v in population.items()}
    assert [names[item["id"]] for item in items] == expected


@pytest.mark.parametrize("sort, key", [
    ("severity", lambda item: (SEVERITY_RANK[item["severity"]], -item["id"])),
    ("-event_count", lambda item: (-item["event_count"], -item["id"])),
])
@pytest.mark.parametrize("query", [{}, {"source": "whatap-prod"}, {"q": "CPU"}, {"q": "]"}])
def test_pages_of_a_sort_merged_from_each_status_follow_the_sort(sort, key, query, population, api):
    """Without a status, these sorts are read a status at a time and merged (``search.ordered``):
    page by page, in a search's walk too, the order is the sort's, found here in Python."""
    everything = api.get("/api/incidents", query_string={**query, "per_page": 500}).json["items"]
    assert everything
    paged = [api.get("/api/incidents", query_string={**query, "sort": sort, "per_page": 2, "page": page}).json
             for page in (1, 2, 3, 4)]
    assert [item["id"] for body in paged for item in body["items"]] == [item["id"] for item in sorted(everything, key=key)]
    assert {body["total"] for body in paged} == {len(everything)}


@pytest.mark.parametrize("page, expected", [(1, ["heap", "disk"]), (2, ["io", "cpu100"]), (3, ["cpu1000"]), (4, [])])
def test_list_pagination(page, expected, population, api):
    body = api.get("/api/incidents", query_string={"sort": "created_at", "per_page": 2, "page": page}).json
    names = {v: k for k, v in population.items()}
    assert ([names[item["id"]] for item in body["items"]], body["total"], body["page"]) == (expected, 5, page)


@pytest.mark.parametrize("query, field", [
    ({"status": "open"}, "status"), ({"severity": "urgent"}, "severity"), ({"sort": "title"}, "sort"),
    ({"page": "0"}, "page"), ({"per_page": "0"}, "per_page"), ({"per_page": "501"}, "per_page"),
    ({"page": "two"}, "page"),
])
def test_list_rejects_invalid_parameters(query, field, api):
    response = api.get("/api/incidents", query_string=query)
    assert response.status_code == 422
    assert list(response.json["error"]["fields"]) == [field]


@pytest.mark.parametrize("cap, query, total", [(5, {}, 5), (4, {}, None), (2, {"status": "triggered"}, None),
                                               (3, {"status": "triggered"}, 3)])
def test_total_is_counted_up_to_the_cap_and_null_past_it(cap, query, total, population, api, monkeypatch):
    monkeypatch.setattr("gateway.web.common.COUNT_CAP", cap)
    body = api.get("/api/incidents", query_string={**query, "per_page": 2}).json
    assert (body["total"], len(body["items"])) == (total, 2)


@pytest.mark.parametrize("sort", list(SORTS))
@pytest.mark.parametrize("query", [{}, {"source": "whatap-prod"}, {"severity": "critical"}])
def test_following_next_cursor_lists_what_one_page_lists(sort, query, population, api):
    everything = [item["id"] for item in api.get("/api/incidents", query_string={**query, "sort": sort}).json["items"]]
    followed, cursor = [], None
    for _ in range(len(everything) + 1):
        body = api.get("/api/incidents", query_string={**query, "sort": sort, "per_page": 2,
                                                       **({"cursor": cursor} if cursor else {})}).json
        assert body["total"] == (None if cursor else len(everything))  # a cursor's page counts nothing
        followed += [item["id"] for item in body["items"]]
        cursor = body["next_cursor"]
        if cursor is None:
            break
    assert followed == everything and len(everything) >= 2


@pytest.mark.parametrize("query", [
    {"cursor": "not base64!"}, {"cursor": "WzEsMl0="}, {"cursor": "WyJ4IiwgMl0=", "sort": "created_at"},
    # No severity has rank 7; a count is a whole number, not true nor a string.
    {"cursor": "WzcsIDJd", "sort": "severity"}, {"cursor": "W3RydWUsIDJd", "sort": "-event_count"},
    {"cursor": "WzIsICI5Il0=", "sort": "-event_count"},
])
def test_a_cursor_the_api_did_not_give_is_400(query, api):
    response = api.get("/api/incidents", query_string=query)
    assert (response.status_code, response.json["error"]["code"]) == (400, "bad_cursor")
