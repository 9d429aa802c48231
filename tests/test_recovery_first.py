"""Any source: a recovery stored before its firing, the firing happening before it, leaves nothing open.

Through the HTTP app on both databases, with WhaTap's published body.
"""
from __future__ import annotations

import json
import time

import pytest

CONFIG = "{sources: [{key: whatap-prod, type: whatap}], sinks: [{name: itms, type: itms}], route: {sinks: [itms]}}"
MINUTE = 60_000


def whatap(status: str, millis: int) -> dict:
    return {"pcode": 1234, "projectName": "Sample project", "time": millis, "oid": 1234567890, "oname": "WAS-01",
            "title": "Alert Title", "message": "Sample warning message", "level": "Warning", "status": status,
            "metricName": "cpu", "metricValue": "99.99", "metricThreshold": "90"}


@pytest.fixture
def client(make_app):
    return make_app(CONFIG).test_client()


def post(client, body: dict):
    response = client.post("/hooks/whatap/whatap-prod/", data=json.dumps(body), content_type="application/json")
    assert response.status_code == 202, response.json
    return response


def test_a_late_firing_from_before_a_stored_recovery_opens_nothing(client, api):
    start = int(time.time() * 1000) - 10 * MINUTE
    post(client, whatap("off", start + 2 * MINUTE))   # the recovery arrives first
    post(client, whatap("on", start))                 # its firing, delivered late
    [incident] = api.get("/api/incidents").json["items"]
    assert (incident["status"], incident["event_count"]) == ("resolved", 2)
    assert api.get("/api/incidents", query_string={"status": "triggered"}).json["total"] == 0


def test_a_firing_after_the_recovery_still_opens_a_new_problem(client, api):
    start = int(time.time() * 1000) - 10 * MINUTE
    post(client, whatap("off", start))
    post(client, whatap("on", start + MINUTE))
    statuses = sorted(i["status"] for i in api.get("/api/incidents").json["items"])
    assert statuses == ["resolved", "triggered"]


def test_a_second_later_recovery_extends_what_is_known_to_be_over(client, api):
    """firing t0, recovery t2, [firing t3 late], recovery t4: the t3 firing must not stay open."""
    start = int(time.time() * 1000) - 10 * MINUTE
    post(client, whatap("on", start))
    post(client, whatap("off", start + 2 * MINUTE))
    post(client, whatap("off", start + 4 * MINUTE))
    post(client, whatap("on", start + 3 * MINUTE))
    [incident] = api.get("/api/incidents").json["items"]
    assert (incident["status"], incident["event_count"]) == ("resolved", 4)
