"""Alarm payloads in every accepted form become the same normalized alerts."""
from __future__ import annotations

import datetime as dt
import json

import pytest

from gateway import Alert, Link, Refused, Rejected, Resource

ALARM_ID = "ocid1.alarm.oc1.ap-seoul-1.aaaaaaaa3cpu7x5qk2hzmlj4w6rbyunowhh2iqjmsx7ew5e2rs4kfzwg6c3a"
INSTANCE_ID = "ocid1.instance.oc1.ap-seoul-1.anuwgljr5kmzb2qczhk3yyc2ngq6ol6bzn4xwkc7ulmmtgbrcc5wcyxe3tza"
DEDUPE_KEY = "7e4f5a1c-3b2d-4c8e-9f10-2a6b8c0d4e5f"
QUERY = 'CpuUtilization[1m]{resourceId = "' + INSTANCE_ID + '"}.mean() > 80'
MESSAGE_ID = "5d2c4b1a-9e8f-4a7b-8c6d-1e2f3a4b5c6d"
STREAM_LABELS = {
    "dimension.resourceDisplayName": "web-server-01",
    "dimension.faultDomain": "FAULT-DOMAIN-2",
    "dimension.resourceId": INSTANCE_ID,
    "dimension.availabilityDomain": "QnsC:AP-SEOUL-1-AD-1",
    "dimension.imageId": "ocid1.image.oc1.ap-seoul-1.aaaaaaaavq3zvx5fa3lsbjyg3a3fbyqufqqdffzqsfmw3w3ygn2ao7c2zdtq",
    "dimension.region": "ap-seoul-1",
    "dimension.shape": "VM.Standard.E4.Flex",
}
"""The dimensions of the one metric stream in ok_to_firing.json, as labels."""


@pytest.fixture
def parse(make_source, make_request, load_payload):
    """The alerts one payload file gives, with optional ONS headers."""
    source = make_source()
    return lambda name, headers=None: source.parse(make_request(load_payload(name), headers))


@pytest.fixture
def source(make_source):
    return make_source()


def test_real_alarm_body_maps_every_field(parse):
    [alert] = parse("ok_to_firing.json", {"X-OCI-NS-MessageId": MESSAGE_ID})

    assert alert == Alert(
        status="firing",
        severity="critical",
        title="High CPU on web-server-01",
        description="CPU utilisation above 80% for 1 minute. Runbook: https://wiki.example.com/runbooks/cpu",
        resource=Resource(id=INSTANCE_ID, name="web-server-01", type="oci_computeagent"),
        occurred_at=dt.datetime(2025, 10, 27, 11, 4, 0, 123000, tzinfo=dt.timezone.utc),
        labels={
            "namespace": "oci_computeagent",
            "query": QUERY,
            "region": "ap-seoul-1",
            "alarm_id": ALARM_ID,
            "alarm_status": "FIRING",
            "oci_type": "OK_TO_FIRING",
            "dedupe_key": DEDUPE_KEY,
            "notification_type": "Split messages per metric stream",
            **STREAM_LABELS,
            f"metric.{QUERY.removesuffix(' > 80')}": "92.47",
        },
        links=[Link("OCI alarm", f"https://cloud.oracle.com/monitoring/alarms/{ALARM_ID}?region=ap-seoul-1")],
    )


@pytest.mark.parametrize(
    ("name", "status", "reset"),
    [
        ("ok_to_firing.json", "firing", None),
        ("repeat.json", "firing", None),
        ("firing_to_ok.json", "resolved", None),
        ("reset.json", "resolved", "true"),
    ],
)
def test_message_type_sets_status_and_marks_reset(parse, name, status, reset):
    [alert] = parse(name)
    assert (alert.status, alert.labels.get("reset")) == (status, reset)


def test_one_stream_shares_one_fingerprint_and_its_alarm_is_the_group(parse, source):
    """Firings name their stream; the recoveries (no dimensions) are the alarm's own alert."""
    firing, repeat, ok, reset = (parse(name)[0] for name in
                                 ["ok_to_firing.json", "repeat.json", "firing_to_ok.json", "reset.json"])
    alarm = f"oci:alarm:{ALARM_ID}"
    assert {source.group(alert) for alert in (firing, repeat, ok, reset)} == {alarm}
    assert source.fingerprint(firing) == source.fingerprint(repeat) != alarm
    assert source.fingerprint(firing).startswith(f"{alarm}:")
    assert source.fingerprint(ok) == source.fingerprint(reset) == alarm


def test_recovery_without_dimensions_still_resolves_the_alarm(parse):
    """FIRING_TO_OK may carry no dimensions: nothing about resolving may depend on them."""
    [alert] = parse("firing_to_ok.json")
    assert alert.status == "resolved"
    assert alert.resource == Resource(type="oci_computeagent")
    assert alert.labels["region"] == "ap-seoul-1"  # from the alarm OCID, not a dimension
    assert not any(label.startswith("metric.") for label in alert.labels)


@pytest.mark.parametrize(
    ("name", "occurred_at", "resource"),
    [
        (
            "firing_no_millis.json",
            dt.datetime(2025, 10, 27, 11, 5, tzinfo=dt.timezone.utc),
            Resource(INSTANCE_ID, "web-server-01", "oci_computeagent"),  # resourceID / resourceDisplayname
        ),
        (
            "firing_resource_name_offset.json",
            dt.datetime(2025, 10, 27, 11, 6, tzinfo=dt.timezone.utc),  # 20:06+09:00
            Resource(INSTANCE_ID, "db-primary", "oci_computeagent"),  # resourceName
        ),
    ],
)
def test_timestamp_and_dimension_variants(parse, name, occurred_at, resource):
    [alert] = parse(name)
    assert (alert.occurred_at, alert.occurred_at.utcoffset(), alert.resource) == (occurred_at, dt.timedelta(0), resource)


def test_older_message_without_body_falls_back_to_empty_description(parse):
    """Version 1.3 has neither body nor alarmSummary."""
    [alert] = parse("firing_no_millis.json")
    assert alert.description == ""
    assert alert.labels["region"] == "ap-seoul-1"  # a "Region" dimension, read case-insensitively


def test_envelope_around_the_real_body_gives_the_same_alert(parse, source, load_payload):
    envelope = load_payload("envelope_raw.json")
    assert json.loads(envelope["message"]) == load_payload("ok_to_firing.json")

    [wrapped] = parse("envelope_raw.json")
    [raw] = parse("ok_to_firing.json", {"X-OCI-NS-MessageId": envelope["messageId"]})
    assert wrapped == raw
    assert source.fingerprint(wrapped) == source.fingerprint(raw)


def test_header_message_id_wins_over_the_envelope(source, make_request, load_payload):
    """The message id keys the delivery; the alerts of a grouped message carry none, as they share it."""
    request = make_request(load_payload("envelope_raw.json"), {"x-oci-ns-messageid": "from-header"})
    assert source.delivery_id(request) == "from-header"
    assert [alert.external_id for alert in source.parse(request)] == [None]


def test_spec_flat_form_in_envelope(parse, source):
    [alert] = parse("envelope_flat.json")

    assert alert == Alert(
        status="firing",
        severity="critical",
        title="High CPU Usage Alert",
        resource=Resource(id=INSTANCE_ID, name="web-server-01", type="oci_computeagent"),
        occurred_at=dt.datetime(2024, 1, 15, 10, 30, tzinfo=dt.timezone.utc),
        labels={
            "namespace": "oci_computeagent",
            "query": "CpuUtilization[1m].mean() > 80",
            "region": "ap-seoul-1",
            "alarm_id": ALARM_ID,
            "alarm_status": "FIRING",
            "compartment_id": "ocid1.compartment.oc1..aaaaaaaaq4kf3q7pcyhxbxmfsbszmxwvqpd2ymzc5d5g4fdbrfmxvxx2cq2a",
            "dimension.resourceId": INSTANCE_ID,
            "dimension.resourceDisplayName": "web-server-01",
            "metric.CpuUtilization": "85.5",
        },
    )
    assert source.fingerprint(alert) == (
        f'oci:alarm:{ALARM_ID}:[["resourcedisplayname","web-server-01"],["resourceid","{INSTANCE_ID}"]]')


def test_flat_ok_resolves_with_the_firing_fingerprint(source, make_request, load_payload):
    envelope = load_payload("envelope_flat.json")
    flat = json.loads(envelope["message"])
    flat_ok = {**flat, "status": "OK", "metricData": []}
    [firing] = source.parse(make_request(envelope))
    [resolved] = source.parse(make_request({**envelope, "message": json.dumps(flat_ok)}))
    assert resolved.status == "resolved"
    assert source.fingerprint(resolved) == source.group(resolved) == source.group(firing)


@pytest.mark.parametrize(
    "change",
    [
        {},  # the fixture's own type, RULE_CHANGE
        {"type": None, "alarmMetaData": [{"id": ALARM_ID, "status": "INSUFFICIENT_DATA"}]},
    ],
    ids=["rule-change", "no-alarm-state"],
)
def test_messages_that_are_not_alarm_states_give_no_alert(source, make_request, load_payload, change, caplog):
    caplog.set_level("INFO", logger="gateway_oci.alarm")
    payload = {**load_payload("rule_change.json"), **change}
    assert source.parse(make_request(payload)) == []
    assert "ignored" in caplog.text


def test_an_alarm_without_identity_is_refused_alone(source, make_request, load_payload):
    """A message listing two alarms, one of them unidentifiable: its place holds a Refused, the
    other alarm's streams are alerts."""
    payload = load_payload("ok_to_firing.json")
    del payload["dedupeKey"]
    anonymous = {key: value for key, value in payload["alarmMetaData"][0].items() if key != "id"}
    payload["alarmMetaData"].insert(0, anonymous)

    refused, alert = source.parse(make_request(payload))
    assert refused == Refused({"alarmMetaData[0].id": "missing: need dedupeKey, alarmMetaData[].id or alarmId"})
    assert (alert.labels["alarm_id"], alert.status) == (ALARM_ID, "firing")


def test_alarm_id_alone_is_enough_to_fingerprint(source, make_request, load_payload):
    payload = load_payload("ok_to_firing.json")
    del payload["dedupeKey"]
    [alert] = source.parse(make_request(payload))
    assert source.group(alert) == f"oci:alarm:{ALARM_ID}"
    assert source.fingerprint(alert).startswith(f"oci:alarm:{ALARM_ID}:")


@pytest.mark.parametrize(
    ("payload", "field"),
    [
        ({"type": "Notification", "messageId": "m-1", "message": "{not json"}, "message"),
        ({"type": "Notification", "messageId": "m-1", "message": "[1, 2]"}, "message"),
        ({"type": "Notification", "messageId": "m-1", "message": "[" * 100_000 + "]" * 100_000}, "message"),
        ({"type": "Notification", "messageId": "m-1"}, "message"),
        ([{"dedupeKey": DEDUPE_KEY}], "body"),
    ],
    ids=["message-not-json", "message-not-object", "message-nested-too-deeply", "message-missing", "body-not-object"],
)
def test_malformed_envelope_is_422_naming_the_field(source, make_request, payload, field):
    with pytest.raises(Rejected) as refused:
        source.parse(make_request(payload))
    assert refused.value.status == 422
    assert list(refused.value.fields) == [field]


@pytest.mark.parametrize(
    ("where", "name", "value"),
    [
        ("meta", "metricValues", 5),
        ("meta", "metricValues", [5, "92.47"]),
        ("alarm", "metricData", 5),
        ("meta", "dimensions", [5]),
    ],
    ids=["metricValues-number", "metricValues-of-non-objects", "metricData-number", "dimensions-of-non-objects"],
)
def test_optional_field_of_the_wrong_type_reads_as_missing(source, make_request, load_payload, where, name, value):
    """Only identity and title are required: a garbled decoration must not lose a state change."""
    payload = load_payload("ok_to_firing.json")
    target = payload if where == "alarm" else payload["alarmMetaData"][0]
    target.pop(name, None)
    [missing] = source.parse(make_request(payload))
    target[name] = value
    assert source.parse(make_request(payload)) == [missing]


@pytest.mark.parametrize(
    ("severity", "expected"),
    [("CRITICAL", "critical"), ("ERROR", "error"), ("WARNING", "warning"), ("INFO", "info"), ("FATAL", "info"), (None, "info")],
)
def test_severity_follows_the_spec_table_and_unknown_is_info(source, make_request, load_payload, severity, expected):
    payload = {**load_payload("ok_to_firing.json"), "severity": severity}
    payload["alarmMetaData"][0]["severity"] = severity
    assert source.parse(make_request(payload))[0].severity == expected


@pytest.mark.parametrize(
    ("timestamp", "epoch_millis", "expected"),
    [
        ("garbled", 1761563040123, dt.datetime(2025, 10, 27, 11, 4, 0, 123000, tzinfo=dt.timezone.utc)),
        (None, 1761563040123, dt.datetime(2025, 10, 27, 11, 4, 0, 123000, tzinfo=dt.timezone.utc)),
        (None, None, dt.datetime(2025, 10, 27, 11, 4, 5, tzinfo=dt.timezone.utc)),  # the request's received_at
    ],
)
def test_occurred_at_falls_back_to_epoch_millis_then_receipt(source, make_request, load_payload, timestamp, epoch_millis, expected):
    payload = {**load_payload("ok_to_firing.json"), "timestamp": timestamp, "timestampEpochMillis": epoch_millis}
    assert source.parse(make_request(payload))[0].occurred_at == expected


# -- grouped messages, the spec's table --------------------------------------------------------

def test_grouped_example_gives_one_alert_per_stream_with_its_own_value(parse, source):
    """Oracle's grouped raw example, repaired (metricValues inside alarmMetaData[0]): four streams."""
    alerts = parse("oracle_grouped.json")
    assert [(a.resource.name, a.labels["metric.CpuUtilization[1m].mean()"]) for a in alerts] == [
        ("wordpress", "92"), ("oke-0", "95"), ("oke-2", "93"), ("oke-1", "91")]
    assert len({source.fingerprint(a) for a in alerts}) == 4
    assert {source.group(a) for a in alerts} == {"oci:alarm:ocid1.alarm.oc1.iad.exampleuniqueID"}
    assert {a.labels["region"] for a in alerts} == {"us-ashburn-1"}  # alarmUrl's, as the recovery has it


def test_values_are_not_paired_when_their_count_differs_from_the_streams(source, make_request, load_payload):
    payload = load_payload("oracle_grouped.json")
    del payload["alarmMetaData"][0]["metricValues"][1:]
    alerts = source.parse(make_request(payload))
    assert len(alerts) == 4
    assert not any(name.startswith("metric.") for alert in alerts for name in alert.labels)


def test_flat_form_with_several_streams_gives_one_alert_each(source, make_request, load_payload):
    envelope = load_payload("envelope_flat.json")
    flat = json.loads(envelope["message"])
    second = {**flat["metricData"][0], "value": 81.0,
              "dimensions": {"resourceId": "ocid1.instance.oc1.ap-seoul-1.other", "resourceDisplayName": "web-02"}}
    flat["metricData"].append(second)
    alerts = source.parse(make_request({**envelope, "message": json.dumps(flat)}))
    assert [(a.resource.name, a.labels["metric.CpuUtilization"]) for a in alerts] == [
        ("web-server-01", "85.5"), ("web-02", "81.0")]


def test_the_specs_test_message_takes_the_alarm_id_as_title(parse):
    [alert] = parse("spec_test_message.json")
    assert (alert.title, alert.status, alert.severity) == ("ocid1.alarm.oc1...", "firing", "critical")


@pytest.mark.parametrize("message_type", ["SOMETHING_NEW", "Subscription", 5])
def test_unknown_message_type_is_400(source, make_request, load_payload, message_type):
    with pytest.raises(Rejected) as refused:
        source.parse(make_request({**load_payload("ok_to_firing.json"), "type": message_type}))
    assert (refused.value.status, refused.value.code) == (400, "unknown_message_type")
