"""The event body: what SpaceONE's api-direct webhook plugin stores and dedupes on."""
from datetime import datetime, timedelta, timezone

import pytest

from gateway import Alert, Delivery, Link
from gateway_spaceone import event_body


def test_firing_alert_exact_body(make_alert):
    assert event_body(make_alert()) == {
        "event_key": "9f2c1e0b7a4d4c1e8b3f6a2d5c7e9f01",
        "event_type": "ALERT",
        "title": "CPU 사용률 임계값 초과",
        "description": "web-01 CPU 95% (임계값 90%)",
        "severity": "CRITICAL",
        "resource": {"resource_id": "agent-7", "name": "web-01", "resource_type": "whatap.Agent"},
        "rule": "cpu",
        "occurred_at": "2024-01-15T10:30:00.123000+00:00",
        "additional_info": {
            "pcode": "12345",
            "metric_name": "cpu",
            "metric_value": "95.0",
            "source_key": "whatap-prod",
            "source_type": "whatap",
            "origin": "webhook",
        },
        "provider": "whatap",
    }


def test_recovery_shares_event_key_and_keeps_severity(make_alert):
    """SpaceONE resolves only an open alert with the same event_key; a mismatch is skipped."""
    firing, resolved = make_alert(), make_alert(status="resolved", severity="warning")
    assert event_body(resolved)["event_key"] == event_body(firing)["event_key"]
    assert event_body(resolved)["event_type"] == "RECOVERY"
    assert event_body(resolved)["severity"] == "WARNING"


@pytest.mark.parametrize("severity, expected", [
    ("critical", "CRITICAL"), ("error", "ERROR"), ("warning", "WARNING"), ("info", "INFO"),
    ("fatal", "NOT_AVAILABLE"), ("", "NOT_AVAILABLE"),
])
def test_severity_mapping(make_alert, severity, expected):
    assert event_body(make_alert(severity=severity))["severity"] == expected


def test_additional_info_is_strings_only(make_alert):
    """SpaceONE rejects non-string additional_info values, whatever a source put in labels."""
    alert = make_alert(labels={"n": 3, "f": 0.5, "b": True, "d": {"k": "값"}, "none": None, "s": "x"})
    info = event_body(alert)["additional_info"]
    assert info == {
        "n": "3", "f": "0.5", "b": "true", "d": '{"k": "값"}', "s": "x",
        "source_key": "whatap-prod", "source_type": "whatap", "origin": "webhook",
    }
    assert all(isinstance(v, str) for v in info.values())


def test_annotations_and_links_are_forwarded_in_additional_info(make_alert):
    """api-direct's event model keeps nothing else: links as title -> url, annotations as they are,
    labels winning over both on a shared name."""
    alert = make_alert(labels={"pcode": "12345", "runbook": "label"},
                       annotations={"summary": "CPU 95%", "runbook": "annotation"},
                       links=[Link("Graph", "https://prometheus.example/graph?g0.expr=up"),
                              Link("summary", "https://x.example/")])
    info = event_body(alert)["additional_info"]
    assert info == {"Graph": "https://prometheus.example/graph?g0.expr=up", "summary": "CPU 95%", "runbook": "label",
                    "pcode": "12345", "source_key": "whatap-prod", "source_type": "whatap", "origin": "webhook"}


def test_core_fields_win_over_colliding_labels(make_alert):
    info = event_body(make_alert(labels={"origin": "forged", "source_key": "other"}))["additional_info"]
    assert (info["origin"], info["source_key"]) == ("webhook", "whatap-prod")


def test_rule_prefers_query_then_metric_name_then_title(make_alert):
    oci = make_alert(labels={"query": "CpuUtilization[1m].mean() > 80", "metric_name": "cpu"})
    assert event_body(oci)["rule"] == "CpuUtilization[1m].mean() > 80"
    assert event_body(make_alert(labels={"metric_name": "cpu"}))["rule"] == "cpu"
    assert event_body(make_alert(labels={}))["rule"] == "CPU 사용률 임계값 초과"


def test_empty_resource_keeps_all_three_string_keys():
    body = event_body(Alert(status="firing", severity="info", title="t", fingerprint="ab"))
    assert body["resource"] == {"resource_id": "", "name": "", "resource_type": ""}


def test_occurred_at_is_converted_to_utc(make_alert):
    seoul = timezone(timedelta(hours=9))
    body = event_body(make_alert(occurred_at=datetime(2024, 1, 15, 19, 30, tzinfo=seoul)))
    assert body["occurred_at"] == "2024-01-15T10:30:00+00:00"


def test_naive_occurred_at_is_taken_as_utc(make_alert):
    body = event_body(make_alert(occurred_at=datetime(2024, 1, 15, 10, 30)))
    assert body["occurred_at"] == "2024-01-15T10:30:00+00:00"


def test_missing_occurred_at_falls_back_to_now(make_alert):
    before = datetime.now(timezone.utc)
    sent = datetime.fromisoformat(event_body(make_alert(occurred_at=None))["occurred_at"])
    assert sent.tzinfo is not None
    assert before <= sent <= datetime.now(timezone.utc)


def test_account_only_when_set_and_no_image_url(make_alert):
    """api-direct's EventInfo has no image_url: it would be dropped, so it is never sent."""
    assert "account" not in event_body(make_alert())
    body = event_body(make_alert(), account="prod-account")
    assert body["account"] == "prod-account" and "image_url" not in body


@pytest.mark.parametrize("source_type, providers, expected", [
    ("oci", None, "oracle_cloud"), ("whatap", None, "whatap"), ("testsrc", None, "testsrc"),
    ("oci", {"oci": "oci_custom"}, "oci_custom"), ("testsrc", {"testsrc": "acme"}, "acme"),
])
def test_provider_is_cloudforets_id_and_overridable(make_alert, source_type, providers, expected):
    assert event_body(make_alert(source_type=source_type), providers=providers)["provider"] == expected


def test_each_open_period_has_its_own_event_key(make_alert):
    alert = make_alert()
    assert event_body(alert)["event_key"] == alert.fingerprint
    assert event_body(alert, period=1)["event_key"] == f"{alert.fingerprint}-1"
    assert event_body(alert, period=2)["event_key"] == f"{alert.fingerprint}-2"


def test_a_group_recovery_is_keyed_by_the_member_it_ends(make_alert):
    """A recovery of a whole group reaches each member's SpaceONE alert under that member's key."""
    recovery = make_alert(status="resolved")
    body = event_body(recovery, period=2, fingerprint="member-fp")
    assert (body["event_key"], body["event_type"]) == ("member-fp-2", "RECOVERY")


def test_sink_event_body_uses_options(make_sink, make_alert):
    sink = make_sink(url="https://so.example.com/monitoring/v1/webhook/w/k/events", account="acc-1")
    body = sink.event_body(Delivery(id=1, attempt=1, sink_name="spaceone-test", alert=make_alert()))
    assert body["account"] == "acc-1"
