"""WhaTap source: the wire format in formats.md section 1 and the rules in the ITMS guide."""
import base64
import hmac
import importlib.metadata
import json
from datetime import datetime, timezone
from pathlib import Path

import pytest

import gateway_whatap
from gateway import Alert, Headers, InboundRequest, Rejected, Resource, SourceOptions
from gateway.plugins import build_registry
from gateway_whatap import WhatapSource

PAYLOADS = Path(__file__).parents[1] / "gateway_whatap" / "samples"
RECEIVED_AT = datetime(2025, 1, 2, 3, 4, 5, tzinfo=timezone.utc)
TOKEN = "s3:cr3t-와탭"  # a colon, so Basic must split user:password at the first one


def load(name):
    return json.loads((PAYLOADS / f"{name}.json").read_text(encoding="utf-8"))


def make_request(payload, headers=None):
    body = json.dumps(payload, ensure_ascii=False).encode("utf-8")
    return InboundRequest(
        method="POST",
        path="/hooks/whatap/whatap-prod/",
        headers=Headers({"Content-Type": "application/json", **(headers or {})}),
        body=body,
        payload=json.loads(body),
        remote_addr="203.0.113.7",
        received_at=RECEIVED_AT,
    )


def source(token=None):
    return WhatapSource("whatap-prod", WhatapSource.options_schema().load({"token": token}))


def parse(payload):
    alerts = source().parse(make_request(payload))
    assert len(alerts) == 1
    return alerts[0]


def rejection(payload):
    with pytest.raises(Rejected) as info:
        source().parse(make_request(payload))
    assert (info.value.status, info.value.code) == (422, "invalid_payload")
    return info.value.fields


def with_fields(name, **changes):
    payload = load(name)
    payload.update(changes)
    return payload


def basic(user, password):
    return "Basic " + base64.b64encode(f"{user}:{password}".encode("utf-8")).decode("ascii")


# --- field mapping -------------------------------------------------------------------


def test_maps_every_field_of_the_documented_example():
    assert parse(load("warning")) == Alert(
        status="firing",
        severity="warning",
        title="Alert Title",
        description="Sample warning message",
        resource=Resource(id="1234567890", name="WAS-01", type="whatap.Agent"),
        occurred_at=datetime(2020, 1, 1, 1, 0, tzinfo=timezone.utc),
        labels={
            "pcode": "1234",
            "project_name": "Sample project",
            "oid": "1234567890",
            "oname": "WAS-01",
            "level": "Warning",
            "status": "on",
            "metric_name": "cpu",
            "metric_value": "99.99",
            "metric_threshold": "90",
            "uuid": "3f1c2a9e-7b4d-4e0a-9c61-0d5f8e2b7a10",
        },
        external_id="3f1c2a9e-7b4d-4e0a-9c61-0d5f8e2b7a10:on",
    )


def test_critical_alert_keeps_milliseconds_and_negative_oid():
    alert = parse(load("critical"))
    assert (alert.status, alert.severity) == ("firing", "critical")
    assert alert.occurred_at == datetime(2025, 1, 1, 3, 0, 0, 123000, tzinfo=timezone.utc)
    assert alert.resource == Resource(id="-2087423641", name="pay-api-7f9c", type="whatap.Agent")
    assert alert.labels["metric_value"] == "97.3"


def test_korean_text_passes_through_unchanged():
    alert = parse(load("korean"))
    assert alert.title == "CPU 사용률 경고"
    assert alert.description == "서버 CPU 사용률이 90%를 초과했습니다. (현재 93.5%)"
    assert alert.resource.name == "웹서버-01"
    assert alert.labels["project_name"] == "와탭 실운영 환경"


def test_unknown_keys_are_ignored():
    assert parse(load("extra_keys")) == parse(load("warning"))


@pytest.mark.parametrize("name", ["optional_null", "optional_absent"])
def test_optional_keys_may_be_null_or_absent(name):
    assert parse(load(name)) == Alert(
        status="firing",
        severity="warning",
        title="Agent inactive",
        description="",
        resource=Resource(id="", name="", type="whatap.Agent"),
        occurred_at=RECEIVED_AT,
        labels={"pcode": "1234", "uuid": "0a1b2c3d-4e5f-4a6b-8c7d-9e0f1a2b3c4d"},
        external_id="0a1b2c3d-4e5f-4a6b-8c7d-9e0f1a2b3c4d:",
    )


def test_numbers_sent_as_numbers_or_strings_give_the_same_labels():
    other_types = with_fields("warning", pcode=" 1234", metricValue=99.99, metricThreshold=90, oid="1234567890")
    assert parse(other_types).labels == parse(load("warning")).labels
    assert fingerprint(other_types) == fingerprint(load("warning"))


def test_time_as_numeric_string_is_accepted():
    assert parse(with_fields("warning", time="1577840400000")).occurred_at == datetime(2020, 1, 1, 1, tzinfo=timezone.utc)


# --- validation ----------------------------------------------------------------------


@pytest.mark.parametrize("payload", [[load("warning")], "on", 1234, None, True])
def test_a_payload_that_is_not_an_object_is_rejected(payload):
    assert rejection(payload) == {"$": "expected a JSON object"}


@pytest.mark.parametrize("field", ["title", "pcode"])
@pytest.mark.parametrize("how", ["absent", "null", "empty", "blank"])
def test_each_required_field_is_named_when_missing(field, how):
    payload = load("warning")
    if how == "absent":
        del payload[field]
    else:
        payload[field] = {"null": None, "empty": "", "blank": "  "}[how]
    assert rejection(payload) == {field: "missing"}


def test_all_missing_required_fields_are_named_at_once():
    payload = {k: v for k, v in load("warning").items() if k not in ("title", "pcode", "uuid")}
    assert rejection(payload) == {"title": "missing", "pcode": "missing"}


@pytest.mark.parametrize("value", ["12a", "12.5", 12.5, True, [1234], {"code": 1234}, "-1"])
def test_pcode_must_be_an_integer(value):
    assert rejection(with_fields("warning", pcode=value)) == {"pcode": "must be an integer"}


@pytest.mark.parametrize("value", ["yesterday", "", True, [1577840400000], {"ms": 1}, 1e300, "nan"])
def test_time_must_be_a_usable_number(value):
    assert rejection(with_fields("warning", time=value)) == {"time": "must be a number (epoch milliseconds)"}


@pytest.mark.parametrize("field", ["title", "uuid", "oid", "oname", "message", "level", "status", "metricValue"])
def test_text_fields_reject_objects_lists_and_booleans(field):
    for value in ({"a": 1}, ["a"], False):
        assert rejection(with_fields("warning", **{field: value})) == {field: "must be a string"}


def test_missing_and_wrongly_typed_fields_are_reported_together():
    payload = with_fields("warning", pcode="abc", time="soon", level=["Critical"])
    del payload["title"]
    assert rejection(payload) == {
        "title": "missing",
        "pcode": "must be an integer",
        "time": "must be a number (epoch milliseconds)",
        "level": "must be a string",
    }


# --- authentication ------------------------------------------------------------------


def verify(token, headers):
    source(token).verify(make_request(load("warning"), headers))


def unauthorized(token, headers):
    with pytest.raises(Rejected) as info:
        verify(token, headers)
    assert info.value.status == 401
    assert info.value.headers["WWW-Authenticate"].startswith("Basic ")
    return info.value


@pytest.mark.parametrize("headers", [{}, {"X-Webhook-Token": "anything"}, {"Authorization": basic("u", "x")}])
def test_without_a_configured_token_everything_passes(headers):
    verify(None, headers)
    verify("", headers)


@pytest.mark.parametrize("name", ["X-Webhook-Token", "x-webhook-token", "X-WEBHOOK-TOKEN"])
def test_the_right_token_header_passes(name):
    verify(TOKEN, {name: TOKEN})


@pytest.mark.parametrize("user", ["whatap", "", "와탭"])
def test_the_token_as_basic_password_passes_whatever_the_user(user):
    verify(TOKEN, {"Authorization": basic(user, TOKEN)})


@pytest.mark.parametrize("headers", [
    {"X-Webhook-Token": TOKEN + "x"},
    {"X-Webhook-Token": TOKEN[:-1]},
    {"X-Webhook-Token": TOKEN.upper()},
    {"Authorization": basic("whatap", "wrong")},
    {"X-Webhook-Token": "wrong", "Authorization": basic("whatap", TOKEN)},
])
def test_a_wrong_token_is_invalid(headers):
    rejected = unauthorized(TOKEN, headers)
    assert rejected.code == "invalid_token"
    assert "invalid token" in rejected.message


@pytest.mark.parametrize("headers", [
    {},
    {"X-Webhook-Token": ""},
    {"Authorization": f"Bearer {TOKEN}"},
    {"Authorization": "Basic !!not-base64!!"},
    {"Authorization": "Basic \xff\xfe"},  # not even ASCII: b64decode raises a plain ValueError
    {"Authorization": basic("whatap", "")},
])
def test_no_usable_token_is_missing(headers):
    rejected = unauthorized(TOKEN, headers)
    assert rejected.code == "missing_token"
    assert "X-Webhook-Token" in rejected.message


def test_tokens_are_compared_in_constant_time(monkeypatch):
    calls = []
    original = hmac.compare_digest

    def spy(a, b):
        calls.append((a, b))
        return original(a, b)

    monkeypatch.setattr(hmac, "compare_digest", spy)
    verify(TOKEN, {"X-Webhook-Token": TOKEN})
    unauthorized(TOKEN, {"Authorization": basic("u", "wrong")})
    assert calls == [(TOKEN.encode(), TOKEN.encode()), (b"wrong", TOKEN.encode())]


# --- recovery and severity -----------------------------------------------------------


@pytest.mark.parametrize("status, expected", [
    ("on", "firing"), ("ON", "firing"), ("On", "firing"), (" on ", "firing"), (None, "firing"),
    ("off", "resolved"), ("OFF", "resolved"), ("resolved", "resolved"), ("RESOLVED", "resolved"),
    ("ok", "resolved"), ("OK", "resolved"), ("recovered", "resolved"), ("closed", "resolved"),
])
def test_only_status_on_is_firing(status, expected):
    assert parse(with_fields("warning", status=status)).status == expected


def test_status_off_fixture_is_a_recovery():
    assert parse(load("recovered_off")).status == "resolved"


def test_recovered_prefix_resolves_even_with_status_on():
    assert parse(load("recovered_message")).status == "resolved"


@pytest.mark.parametrize("field, text, expected", [
    ("message", "RECOVERED: Memory is too high. Less than 10%", "resolved"),
    ("message", "recovered: memory ok", "resolved"),
    ("title", "Recovered CPU", "resolved"),
    ("title", "  RECOVERED: CPU", "resolved"),
    ("message", "Memory was RECOVERED", "firing"),
    # The Common Alert Template: a multi-line Key: Value block.
    ("message", "Project Name: 샘플\nEvent Message: RECOVERED: Memory is too high. Less than 10%\nStateful: true", "resolved"),
    ("message", "Project Name: 샘플\nEvent Message: Memory is too high\nStateful: true", "firing"),
    ("title", "Not recovered yet", "firing"),
])
def test_recovered_prefix_rule(field, text, expected):
    assert parse(with_fields("warning", status="on", **{field: text})).status == expected


@pytest.mark.parametrize("level, severity", [
    ("Critical", "critical"), ("CRITICAL", "critical"), ("Fatal", "critical"), ("fatal", "critical"),
    ("Warning", "warning"), ("WARN", "warning"), ("Warn", "warning"),
    ("Info", "info"), ("info", "info"),
    ("Error", "error"), ("ERROR", "error"),
    # Unknown or missing: still worth attention, never a page.
    ("Disaster", "warning"), ("", "warning"), (None, "warning"),
])
def test_severity_mapping(level, severity):
    alert = parse(with_fields("warning", level=level))
    assert alert.severity == severity
    assert alert.labels.get("level") == level


def test_severity_is_kept_on_recovery():
    assert parse(load("recovered_off")).severity == "critical"


# --- fingerprint and external id -----------------------------------------------------


def fingerprint(payload):
    return source().fingerprint(parse(payload))


def test_an_alert_and_its_recoveries_share_a_fingerprint():
    alert = fingerprint(load("critical"))
    assert fingerprint(load("recovered_off")) == alert
    assert fingerprint(load("recovered_message")) == alert
    assert fingerprint(with_fields("critical", title="recovered " + load("critical")["title"])) == alert


@pytest.mark.parametrize("changes", [
    {"oid": 1}, {"metricName": "cpu"}, {"title": "Heap usage is too high"}, {"pcode": 31338},
])
def test_a_different_target_metric_title_or_project_is_a_different_problem(changes):
    assert fingerprint(with_fields("critical", **changes)) != fingerprint(load("critical"))


def test_fingerprint_ignores_what_is_not_in_the_dedupe_key():
    changed = with_fields(
        "critical", uuid="other", time=1, oname="renamed", message="other", level="Info",
        metricValue="1", projectName="renamed",
    )
    assert fingerprint(changed) == fingerprint(load("critical"))


def test_fingerprint_is_stable_across_releases():
    # Computed once; changing it re-keys every open incident, so it must be a deliberate change.
    assert fingerprint(load("warning")) == "f6fbaae5283e98a19f8cc6c65c5d868510dc4329ebc2bbff24553eb4bc7a4bfc"
    assert fingerprint(load("korean")) == "5fb46d44f5d23d96a5eb5810919c894148abbaae61e29eca389844cac58b035b"


def test_external_id_is_uuid_and_status():
    resend = parse(with_fields("critical", time=1735704000000))
    assert resend.external_id == parse(load("critical")).external_id == "a0e4b6d2-51c8-4f3e-8d27-6c9b1f04e3aa:on"
    assert parse(with_fields("critical", status="OFF")).external_id == "a0e4b6d2-51c8-4f3e-8d27-6c9b1f04e3aa:off"
    assert parse(load("recovered_off")).external_id == "c7d1e9f0-2b3a-4c5d-9e8f-7a6b5c4d3e2f:off"


def test_published_format_without_uuid_is_accepted():
    """WhaTap's published webhook JSON has no uuid (formats.md section 1, W1's example, verbatim)."""
    assert parse(load("published")) == Alert(
        status="firing", severity="warning", title="Alert Title", description="Sample warning message",
        resource=Resource(id="1234567890", name="WAS-01", type="whatap.Agent"),
        occurred_at=datetime(2020, 1, 1, 1, 0, tzinfo=timezone.utc),
        labels={"pcode": "1234", "project_name": "Sample project", "oid": "1234567890", "oname": "WAS-01",
                "level": "Warning", "status": "on", "metric_name": "cpu", "metric_value": "99.99",
                "metric_threshold": "90"},
        external_id=parse(load("published")).external_id,
    )


@pytest.mark.parametrize("how", ["absent", "null", "empty"])
def test_without_uuid_the_key_is_the_notification_itself(how):
    """pcode, oid, metricName, title, status and time tell notifications apart; a redelivery is the same one."""
    body = load("published")
    if how != "absent":
        body["uuid"] = {"null": None, "empty": ""}[how]
    key = parse(body).external_id
    assert key.startswith("notification:") and key == parse(load("published")).external_id
    # What the key is made of, each change making another notification; other fields change nothing.
    changed = [dict(body, **{name: value}) for name, value in (
        ("pcode", 1235), ("oid", 1234567891), ("metricName", "mem"), ("title", "Other"), ("status", "off"),
        ("time", 1577840460000))]
    assert len({parse(other).external_id for other in changed} | {key}) == len(changed) + 1
    assert parse(dict(body, message="reworded", metricValue="98", level="Critical")).external_id == key


# --- packaging -----------------------------------------------------------------------


def test_options_extend_the_common_source_options():
    assert issubclass(WhatapSource.options_schema, SourceOptions)
    assert WhatapSource.options_schema().load({"token": "t", "reopen_window": "10m"}) == {
        "token": "t", "reopen_window": 600.0,
    }


def test_discoverable_through_the_entry_point(monkeypatch):
    (ep,) = [ep for ep in importlib.metadata.entry_points(group="gateway") if ep.name == "whatap"]
    assert ep.value == "gateway_whatap"
    assert ep.load() is gateway_whatap
    # Other plugins are disabled so that their state cannot fail this test.
    others = [e.name for e in importlib.metadata.entry_points(group="gateway") if e.name != "whatap"]
    monkeypatch.setenv("GATEWAY_DISABLE_PLUGINS", ",".join(others))
    registry = build_registry()
    assert registry.source_types["whatap"] is WhatapSource
    assert [p.distribution for p in registry.plugins if "whatap" in p.source_types] == ["gateway-whatap"]
