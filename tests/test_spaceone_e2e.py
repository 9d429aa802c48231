"""Issue 5 end to end: real WhaTap and OCI webhooks in, SpaceONE events out through the outbox.

The ``receiver`` fixture stands in for SpaceONE's api-direct webhook endpoint.
"""
from __future__ import annotations

import copy
import itertools
import json
from collections import Counter
from datetime import datetime, timedelta
from pathlib import Path

import pytest

from testkit.support import OutboxDriver, wait_until

ROOT = Path(__file__).resolve().parents[1]
WHATAP = json.loads((ROOT / "plugins/whatap/gateway_whatap/samples/critical.json").read_text())
WHATAP_RECOVERED = json.loads((ROOT / "plugins/whatap/gateway_whatap/samples/recovered_message.json").read_text())
OCI_FIRING = json.loads((ROOT / "plugins/oci/gateway_oci/samples/ok_to_firing.json").read_text())
ACCESS_KEY = "AbCdEf0123456789"
PATH = f"/monitoring/v1/webhook/wh-1/{ACCESS_KEY}/events"
WORKER = "e2e-worker"


def config(sinks: dict[str, dict]) -> str:
    """WhaTap and OCI sources, the incident store, and these spaceone sinks, all on the root route."""
    lines = ["sources:", "  - key: whatap-prod", "    type: whatap", "  - key: oci-seoul", "    type: oci",
             "sinks:", "  - name: itms", "    type: itms"]
    for name, options in sinks.items():
        # No refreshes here (a pending one would keep the outbox from draining): test_spaceone_problems has them.
        defaults = {"timeout": 10, "backoff_initial": 0.05, "backoff_max": 0.2, "max_attempts": 6, "refresh_interval": 0}
        lines += [f"  - name: {name}", "    type: spaceone"]
        lines += [f"    {key}: {json.dumps(value)}" for key, value in {**defaults, **options}.items()]
    lines += ["route:", f"  sinks: [itms, {', '.join(sinks)}]"]
    return "\n".join(lines) + "\n"


class Gateway(OutboxDriver):
    """WhaTap webhooks in, SpaceONE (the receiver) out."""

    def __init__(self, app):
        super().__init__(app, WORKER)
        self._n = itertools.count(1)

    def whatap(self, payload: dict = WHATAP, problem: str = "") -> None:
        """Post a WhaTap webhook; ``problem`` varies the title (another fingerprint) and uuid."""
        body = copy.deepcopy(payload)
        body["uuid"] = f"{body['uuid']}-{next(self._n)}"
        body["title"] += problem
        r = self.client.post("/hooks/whatap/whatap-prod/", json=body)
        assert r.status_code == 202, r.json

    def all_delivered(self, sink: str = "spaceone") -> bool:
        return all(row["status"] == "delivered" for row in self.deliveries(sink=sink))


@pytest.fixture
def gateway(make_app, receiver):
    """gateway(**spaceone_options) with one sink ``spaceone`` on the receiver, or gateway(sinks={...})."""

    def make(sinks: dict[str, dict] | None = None, **options) -> Gateway:
        sinks = sinks or {"spaceone": {"url": f"{receiver.url}{PATH}", **options}}
        return Gateway(make_app(config(sinks)))

    return make


def events(receiver) -> list[tuple[str, str, int]]:
    """(event_type, title, answered status) of each POST, in arrival order."""
    return [(r["json"]["event_type"], r["json"]["title"], r["status"]) for r in receiver.requests]


def test_whatap_alert_and_recovery_arrive_as_exact_events(gateway, receiver):
    gw = gateway(account="sa-1234")
    gw.whatap()
    gw.whatap(WHATAP_RECOVERED)
    gw.drive("spaceone", gw.all_delivered)
    (incident,) = gw.api.get("/api/incidents").json["items"]
    rows = gw.deliveries()
    assert [r["path"] for r in receiver.requests] == [PATH, PATH]
    assert [r["headers"]["X-Gateway-Delivery-Id"] for r in receiver.requests] == [str(row["id"]) for row in rows]
    assert {r["headers"]["Content-Type"] for r in receiver.requests} == {"application/json"}
    info = {"pcode": "31337", "project_name": "payments-prod", "oid": "-2087423641", "oname": "pay-api-7f9c",
            "level": "Critical", "status": "on", "metric_name": "heap_use", "metric_threshold": "95",
            "source_key": "whatap-prod", "source_type": "whatap", "origin": "webhook"}
    common = {"event_key": f"{incident['fingerprint']}-1", "severity": "CRITICAL", "rule": "heap_use",
              "resource": {"resource_id": "-2087423641", "name": "pay-api-7f9c", "resource_type": "whatap.Agent"},
              "provider": "whatap", "account": "sa-1234"}
    assert [r["json"] for r in receiver.requests] == [
        {**common, "event_type": "ALERT", "title": WHATAP["title"], "description": "Heap usage is 97.3% (threshold 95%)",
         "occurred_at": "2025-01-01T03:00:00.123000+00:00",
         "additional_info": {**info, "metric_value": "97.3", "uuid": WHATAP["uuid"] + "-1"}},
        {**common, "event_type": "RECOVERY", "title": WHATAP_RECOVERED["title"],
         "description": WHATAP_RECOVERED["message"], "occurred_at": "2025-01-01T03:07:00.456000+00:00",
         "additional_info": {**info, "metric_value": "71.0", "uuid": WHATAP_RECOVERED["uuid"] + "-2"}},
    ]


def test_oci_alarm_arrives_as_an_exact_event(gateway, receiver):
    gw = gateway()
    r = gw.client.post("/hooks/oci/oci-seoul/", json=OCI_FIRING, headers={"X-OCI-NS-MessageId": "msg-1"})
    assert r.status_code == 202, r.json
    gw.drive("spaceone", gw.all_delivered)
    (incident,) = gw.api.get("/api/incidents").json["items"]
    meta = OCI_FIRING["alarmMetaData"][0]
    dimension = meta["dimensions"][0]
    ((expression, value),) = meta["metricValues"][0].items()
    (body,) = [r["json"] for r in receiver.requests]
    assert body == {
        "event_key": f"{incident['fingerprint']}-1", "event_type": "ALERT", "title": "High CPU on web-server-01",
        "description": OCI_FIRING["body"], "severity": "CRITICAL",
        "resource": {"resource_id": dimension["resourceId"], "name": "web-server-01",
                     "resource_type": "oci_computeagent"},
        "rule": meta["query"], "occurred_at": "2025-10-27T11:04:00.123000+00:00", "provider": "oracle_cloud",
        "additional_info": {
            "OCI alarm": meta["alarmUrl"], "namespace": "oci_computeagent", "query": meta["query"],
            "region": "ap-seoul-1", "alarm_id": meta["id"], "alarm_status": "FIRING", "oci_type": "OK_TO_FIRING",
            "dedupe_key": OCI_FIRING["dedupeKey"], f"metric.{expression}": value,
                "notification_type": OCI_FIRING["notificationType"],
                **{f"dimension.{name}": text for name, text in dimension.items()},
            "source_key": "oci-seoul", "source_type": "oci", "origin": "webhook"},
    }


def test_three_503s_then_success_is_delivered_on_the_fourth_attempt(gateway, receiver):
    gw = gateway()
    receiver.answer(503, 503, 503)
    gw.whatap()
    gw.drive("spaceone", gw.all_delivered)
    (row,) = gw.deliveries()
    detail = gw.delivery(row["id"])
    assert (detail["status"], detail["attempts"]) == ("delivered", 4)
    assert [(a["outcome"], a["status_code"]) for a in detail["attempt_log"]] == [("retry", 503)] * 3 + [
        ("delivered", None)]
    assert [a["error"] for a in detail["attempt_log"]] == ["SpaceONE answered 503: {}"] * 3 + [None]
    assert [r["status"] for r in receiver.requests] == [503, 503, 503, 200]
    assert len({r["raw"] for r in receiver.requests}) == 1  # the same event, resent unchanged


def test_receiver_down_for_a_while_loses_nothing(gateway, receiver):
    gw = gateway(max_attempts=100)
    receiver.down()
    gw.dispatcher.start()
    try:
        gw.whatap()
        gw.whatap(problem=" (2)")
        gw.whatap(WHATAP_RECOVERED)
        wait_until(lambda: all(row["attempts"] >= 2 for row in gw.deliveries()[:2]), timeout=10)
        assert gw.deliveries()[2]["attempts"] == 0  # the recovery waits for its alert
        receiver.up()
        wait_until(gw.all_delivered, timeout=10)
    finally:
        gw.dispatcher.stop()
    rows = gw.deliveries()
    errors = [a["error"] for row in rows for a in gw.delivery(row["id"])["attempt_log"] if a["outcome"] == "retry"]
    assert errors and all(e.startswith("could not reach SpaceONE") and ACCESS_KEY not in e for e in errors)
    assert Counter(r["headers"]["X-Gateway-Delivery-Id"] for r in receiver.requests) == {
        str(row["id"]): 1 for row in rows}
    first = WHATAP["title"]
    assert [(kind, title) for kind, title, _ in events(receiver) if title.endswith(first)] == [
        ("ALERT", first), ("RECOVERY", WHATAP_RECOVERED["title"])]


def test_400_is_dead_at_once_and_an_operator_redrives_it(gateway, receiver):
    gw = gateway()
    answer = '{"error_code": "ERROR_INVALID_PARAMETER", "message": "severity"}'
    receiver.answer((400, {"Content-Type": "application/json"}, answer))
    gw.whatap()
    assert gw.dispatcher.run_once("spaceone", WORKER) == 1
    (row,) = gw.deliveries(status="dead")
    assert (row["attempts"], row["last_error"]) == (1, f"SpaceONE answered 400: {answer}")
    assert [(a["outcome"], a["status_code"]) for a in gw.delivery(row["id"])["attempt_log"]] == [("dead", 400)]
    assert gw.dispatcher.run_once("spaceone", WORKER) == 0

    # The receiver is fixed (it now answers 200); the operator re-drives the dead row.
    assert gw.api.post(f"/api/deliveries/{row['id']}/retry").json["status"] == "pending"
    gw.drive("spaceone", gw.all_delivered)
    assert [(a["outcome"], a["status_code"]) for a in gw.delivery(row["id"])["attempt_log"]] == [
        ("dead", 400), ("delivered", None)]
    assert [status for _, _, status in events(receiver)] == [400, 200]


def test_429_waits_as_long_as_retry_after_says(gateway, receiver, moved_clock):
    gw = gateway(backoff_initial=300, backoff_max=600)  # the computed backoff would be far longer
    receiver.answer((429, {"Retry-After": "20"}, "{}"))
    gw.whatap()
    assert gw.dispatcher.run_once("spaceone", WORKER) == 1
    (row,) = gw.deliveries()
    (attempt,) = gw.delivery(row["id"])["attempt_log"]
    assert (attempt["outcome"], attempt["status_code"]) == ("retry", 429)
    ended = datetime.fromisoformat(attempt["started_at"]).timestamp() + attempt["duration_ms"] / 1000
    assert 20.0 <= datetime.fromisoformat(row["next_attempt_at"]).timestamp() - ended <= 20.25
    assert gw.dispatcher.run_once("spaceone", WORKER) == 0  # not due yet
    # The core's clock, not a sleep, makes it due: a machine that stalls cannot make it due early.
    moved_clock.advance(timedelta(seconds=20))
    gw.drive("spaceone", gw.all_delivered)
    assert [status for _, _, status in events(receiver)] == [429, 200]


def test_recovery_is_not_sent_before_its_alert_while_the_alert_is_retried(gateway, receiver):
    gw = gateway()
    receiver.answer(503, 503)
    gw.whatap()
    gw.whatap(WHATAP_RECOVERED)
    gw.drive("spaceone", gw.all_delivered)
    alert, recovery = WHATAP["title"], WHATAP_RECOVERED["title"]
    assert events(receiver) == [("ALERT", alert, 503), ("ALERT", alert, 503), ("ALERT", alert, 200),
                                ("RECOVERY", recovery, 200)]
    assert len({r["json"]["event_key"] for r in receiver.requests}) == 1


@pytest.fixture
def broken(receiver):
    """A SpaceONE that answers 503 to everything."""
    server = type(receiver)()
    server.default = (503, {}, '{"error": "unavailable"}')
    yield server
    server.down()


def test_failing_spaceone_sink_leaves_incidents_and_the_other_sink_unaffected(gateway, receiver, broken):
    gw = gateway(sinks={"broken": {"url": f"{broken.url}{PATH}", "max_attempts": 100},
                        "spaceone": {"url": f"{receiver.url}{PATH}"}})
    gw.dispatcher.start()
    try:
        gw.whatap()
        assert [i["status"] for i in gw.api.get("/api/incidents").json["items"]] == ["triggered"]
        gw.whatap(WHATAP_RECOVERED)
        assert [i["status"] for i in gw.api.get("/api/incidents").json["items"]] == ["resolved"]
        wait_until(lambda: len(receiver.requests) == 2)
        wait_until(lambda: gw.deliveries(sink="broken")[0]["attempts"] >= 3)
    finally:
        gw.dispatcher.stop()
    assert events(receiver) == [("ALERT", WHATAP["title"], 200), ("RECOVERY", WHATAP_RECOVERED["title"], 200)]
    assert [(row["status"], row["attempts"]) for row in gw.deliveries(sink="spaceone")] == [("delivered", 1)] * 2
    assert [row["status"] for row in gw.deliveries(sink="broken")] == ["pending", "pending"]
    assert gw.deliveries(sink="broken")[1]["attempts"] == 0  # its recovery waits behind the failing alert


@pytest.mark.parametrize("forward", [True, False])
def test_manual_resolve_is_forwarded_only_when_the_sink_opts_in(gateway, receiver, forward):
    gw = gateway(forward_manual_resolve=forward)
    gw.whatap()
    (incident,) = gw.api.get("/api/incidents").json["items"]
    r = gw.api.post(f"/api/incidents/{incident['id']}/resolve", json={"note": "fixed the heap"})
    assert (r.status_code, r.json["status"]) == (200, "resolved")
    gw.drive("spaceone", gw.all_delivered)
    assert len(gw.deliveries()) == (2 if forward else 1)
    bodies = [r["json"] for r in receiver.requests]
    assert [b["event_type"] for b in bodies] == (["ALERT", "RECOVERY"] if forward else ["ALERT"])
    if forward:
        recovery = bodies[1]
        assert (recovery["event_key"], recovery["title"], recovery["severity"]) == (
            f"{incident['fingerprint']}-1", WHATAP["title"], "CRITICAL")
        assert recovery["additional_info"] == {"resolved_by": "admin", "note": "fixed the heap",
                                               "source_key": "whatap-prod", "source_type": "whatap",
                                               "origin": "manual"}
