"""Alertmanager source: the webhook_configs body (version 4) as Alertmanager's docs define it."""
import base64
import json
from datetime import datetime, timezone
from pathlib import Path

import pytest

from gateway import Headers, InboundRequest, Link, Refused, Rejected
from gateway_alertmanager import AlertmanagerSource

PAYLOADS = Path(__file__).parents[1] / "gateway_alertmanager" / "samples"


def group(**changes) -> dict:
    payload = json.loads((PAYLOADS / "group_firing.json").read_text())
    payload.update(changes)
    return payload


def request(payload, headers=None) -> InboundRequest:
    body = json.dumps(payload).encode()
    return InboundRequest("POST", "/hooks/alertmanager/am/", Headers(headers or {}), body, json.loads(body),
                          "127.0.0.1", datetime(2026, 12, 5, 10, 5, tzinfo=timezone.utc))


def source(**options) -> AlertmanagerSource:
    return AlertmanagerSource("am", AlertmanagerSource.options_schema().load(options))


def test_each_alert_of_a_group_is_an_alert():
    first, second = source().parse(request(group()))
    assert (first.status, first.severity, first.title) == ("firing", "critical", "p99 latency over 2 s on api-1")
    assert first.description == "p99 is 2.7 s for 5 minutes"
    assert (first.resource.name, first.resource.type) == ("api-1:9100", "node")
    assert first.occurred_at == datetime(2026, 12, 5, 10, 0, 0, 123456, tzinfo=timezone.utc)
    assert first.labels["instance"] == "api-1:9100"
    # no summary annotation: the alert name is the title; "page" is a common critical label value
    assert (second.title, second.severity) == ("HighLatency", "critical")


def test_severity_mapping_option_and_default():
    payload = group()
    payload["alerts"][0]["labels"]["severity"] = "sev2"
    payload["alerts"][1]["labels"]["severity"] = "P5"
    first, second = source(severity_map={"sev2": "error"}, default_severity="info").parse(request(payload))
    assert (first.severity, second.severity) == ("error", "info")


def test_resolved_alert_is_a_recovery_of_the_same_problem_at_its_end():
    src = source()
    firing = src.parse(request(group()))[0]
    payload = group(status="resolved")
    payload["alerts"][0].update(status="resolved", endsAt="2026-12-05T10:20:00Z")
    resolved = src.parse(request(payload))[0]
    assert resolved.status == "resolved"
    assert resolved.occurred_at == datetime(2026, 12, 5, 10, 20, tzinfo=timezone.utc)
    assert src.fingerprint(resolved) == src.fingerprint(firing)
    assert resolved.external_id != firing.external_id


def test_fingerprint_is_the_label_set_whatever_the_annotations():
    src = source()
    payload = group()
    payload["alerts"][0]["annotations"]["description"] = "p99 is 3.1 s"
    payload["alerts"][0]["labels"] = dict(reversed(list(payload["alerts"][0]["labels"].items())))
    before, after = src.parse(request(group()))[0], src.parse(request(payload))[0]
    assert src.fingerprint(before) == src.fingerprint(after)
    assert src.fingerprint(before) != src.fingerprint(src.parse(request(group()))[1])


def test_a_reminder_has_the_same_idempotency_keys():
    src = source()
    assert [a.external_id for a in src.parse(request(group()))] == [a.external_id for a in src.parse(request(group()))]


def test_a_body_without_alerts_is_refused_whole():
    with pytest.raises(Rejected) as info:
        source().parse(request({"version": "4", "status": "firing"}))
    assert (info.value.status, info.value.code, info.value.fields) == (
        422, "invalid_payload", {"alerts": "expected a JSON object with an alerts list"})


@pytest.mark.parametrize("mutate, field", [
    (lambda p: p["alerts"][1].pop("labels"), "alerts[1].labels"),
    (lambda p: p["alerts"][1].update(status="pending"), "alerts[1].status"),
    (lambda p: p["alerts"][1].update(startsAt="yesterday"), "alerts[1].startsAt"),
    (lambda p: p["alerts"][1].update(startsAt="2026-12-05T10:00:00"), "alerts[1].startsAt"),
    (lambda p: p["alerts"][1]["labels"].pop("alertname"), "alerts[1].labels.alertname"),
])
def test_a_bad_alert_is_refused_alone_naming_its_field(mutate, field):
    payload = group()
    mutate(payload)
    good, bad = source().parse(request(payload))
    assert good.title == "p99 latency over 2 s on api-1"
    assert isinstance(bad, Refused) and bad.code == "invalid_alert" and field in bad.fields


def test_annotations_generator_url_and_fingerprint_are_metadata_not_labels():
    payload = group()
    payload["alerts"][0]["annotations"]["runbook_url"] = "https://runbooks.example/latency"
    payload["alerts"][1]["generatorURL"] = ""  # what Prometheus sends without --web.external-url
    first, second = source().parse(request(payload))
    assert first.labels == payload["alerts"][0]["labels"]
    assert first.annotations == {**payload["alerts"][0]["annotations"], "alertmanager.fingerprint": "c1a9e5d0b7f3a2e4"}
    assert first.links == [Link("Prometheus", "http://prometheus:9090/graph?g0.expr=latency"),
                           Link("Runbook", "https://runbooks.example/latency")]
    assert (second.annotations["alertmanager.fingerprint"], second.links) == ("d4b2f6a1c8e9b3f5", [])


def basic(user: str, password: str) -> dict:
    return {"Authorization": "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()}


@pytest.mark.parametrize("headers, accepted", [
    ({"Authorization": "Bearer t0ken"}, True),
    (basic("alertmanager", "t0ken"), True),
    ({"Authorization": "Bearer wrong"}, False),
    (basic("alertmanager", "wrong"), False),
    (basic("someone-else", "t0ken"), False),
    ({}, False),
])
def test_token_as_bearer_or_basic_password(headers, accepted):
    src = source(token="t0ken", username="alertmanager")
    if accepted:
        src.verify(request(group(), headers))
    else:
        with pytest.raises(Rejected) as info:
            src.verify(request(group(), headers))
        assert info.value.status == 401
