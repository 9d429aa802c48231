"""OCI Notifications end to end: POST /hooks/oci/<key>/ through the whole gateway, on both databases.

The ``receiver`` fixture (a real HTTP server on 127.0.0.1) stands in for OCI: it is the
confirmation endpoint and the signing-certificate host, and its request log proves what
the gateway did or did not fetch.  Payloads are the plugin's own fixtures, read by path.
"""
from __future__ import annotations

import base64
import datetime as dt
import json
import textwrap
import time
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from cryptography.x509.oid import NameOID
from click.testing import CliRunner
from sqlalchemy import select, update

from gateway.cli import main as cli
from gateway.pipeline.transaction import DUPLICATE_WINDOW
from gateway.store.models import AlertRow, RawRequest

PAYLOADS = Path(__file__).resolve().parents[1] / "plugins" / "oci" / "gateway_oci" / "samples"
HOOK = "/hooks/oci/oci-seoul/"
SUBSCRIPTION = "ocid1.onssubscription.oc1.ap-seoul-1.aaaaaaaaxmj7ucqzd6vsb6lgmxr3ofkmv5t3ed4wx2nnqhcbfz5ngfo2ji4q"
TOPIC = "ocid1.onstopic.oc1.ap-seoul-1.aaaaaaaa7rq6n2d6yfbmxoxiqlk5cvh4yjhmj6pqzq7t3c3gcxnd3kqwbxaq"
CONFIRM_PATH = f"/20181201/subscriptions/{SUBSCRIPTION}/confirmation"
TOKEN = "c2VjcmV0LXRva2Vu"
CONFIRM_QUERY = f"?token={TOKEN}&protocol=CUSTOM_HTTPS"
CERT_PATH = "/20181201/certificates/ons-signing.pem"
ENVELOPE_MESSAGE_ID = "5d2c4b1a-9e8f-4a7b-8c6d-1e2f3a4b5c6d"  # messageId inside envelope_raw.json


def payload_bytes(name: str) -> bytes:
    return (PAYLOADS / name).read_bytes()


def basic(user: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


class Oci:
    """OCI Notifications as the gateway sees it: POSTs with Basic auth and X-OCI-NS-* headers."""

    def __init__(self, app):
        self.app = app
        self.http = app.test_client()

    def post(self, body, *, message_id=None, headers=None, auth=("ons", "pw")):
        """``body``: a payload file name, a dict (sent as JSON) or exact bytes."""
        if isinstance(body, str):
            body = payload_bytes(body)
        elif isinstance(body, dict):
            body = json.dumps(body).encode()
        sent = {}
        if message_id:
            sent["X-OCI-NS-MessageId"] = message_id
        if auth:
            sent["Authorization"] = basic(*auth)
        sent.update(headers or {})
        return self.http.post(HOOK, data=body, headers=sent, content_type="application/json")

    def alert_rows(self):
        """Every stored alert, oldest first, with its request's ``message_id`` (the API has no alert listing)."""
        with self.app.extensions["gateway"].engine.connect() as conn:
            return conn.execute(select(AlertRow.__table__, RawRequest.external_id.label("message_id"))
                                .join(RawRequest, RawRequest.id == AlertRow.raw_request_id)
                                .order_by(AlertRow.id)).all()


@pytest.fixture
def make_oci(make_app):
    """make_oci(**options) -> Oci for an ``oci-seoul`` source (Basic ons/pw) routed to the incident store.

    ``confirm_hosts`` defaults to the local receiver's host; pass ``confirm_hosts=None``
    to keep the plugin's default (``*.oraclecloud.com``).
    """

    def make(**options) -> Oci:
        options = {"confirm_hosts": ["127.0.0.1"], **options}
        lines = "".join(f"    {key}: {json.dumps(value)}\n" for key, value in options.items() if value is not None)
        yaml_text = textwrap.dedent("""\
            sources:
              - key: oci-seoul
                type: oci
                username: ons
                password: pw
            """) + lines + textwrap.dedent("""\
            sinks:
              - name: itms
                type: itms
            route:
              sinks: [itms]
            """)
        return Oci(make_app(yaml_text))

    return make


@pytest.fixture
def oci(make_oci):
    return make_oci()


def the_incident(api) -> dict:
    """The only incident, with its timeline."""
    listing = api.get("/api/incidents").json
    assert listing["total"] == 1, listing
    return api.get(f"/api/incidents/{listing['items'][0]['id']}").json


# -- subscription confirmation -----------------------------------------------------------

def confirmation(form: str, url: str) -> tuple[dict, dict]:
    """(body, headers) of a confirmation POST: Oracle's headers, Oracle's body key, or the spec's body."""
    return {
        "header": ({}, {"X-OCI-NS-MessageType": "SubscriptionConfirmation", "X-OCI-NS-ConfirmationURL": url,
                        "X-OCI-NS-SubscriptionId": SUBSCRIPTION, "X-OCI-NS-TopicOcid": TOPIC,
                        "X-OCI-NS-State": "Pending"}),
        "body": ({"ConfirmationURL": url}, {"X-OCI-NS-SubscriptionId": SUBSCRIPTION, "X-OCI-NS-TopicOcid": TOPIC}),
        "spec": ({"type": "Subscription Confirmation", "subscriptionId": SUBSCRIPTION, "topicId": TOPIC,
                  "confirmationUrl": url, "message": "Please confirm your subscription"}, {}),
    }[form]


FORMS = ["header", "body", "spec"]


@pytest.mark.parametrize("form", FORMS)
def test_confirmation_gets_the_url_once_and_is_listed(oci, receiver, api, form):
    body, headers = confirmation(form, receiver.url + CONFIRM_PATH + CONFIRM_QUERY)

    response = oci.post(body, headers=headers)

    assert (response.status_code, response.json) == (200, {"status": "confirmed"})
    assert [(r["method"], r["path"]) for r in receiver.requests] == [("GET", CONFIRM_PATH + CONFIRM_QUERY)]
    handshakes = api.get("/api/sources/oci-seoul/handshakes").json
    assert handshakes["total"] == 1
    [handshake] = handshakes["items"]
    assert handshake["status"] == 200
    age = dt.datetime.now(dt.timezone.utc) - dt.datetime.fromisoformat(handshake["received_at"])
    assert dt.timedelta(0) <= age < dt.timedelta(minutes=1)
    assert handshake["record"] == {
        "kind": "subscription_confirmation", "subscription_id": SUBSCRIPTION, "topic": TOPIC,
        "confirmation_url": receiver.url + CONFIRM_PATH, "outcome": "confirmed", "status_code": 200, "error": None,
    }
    assert api.get("/api/incidents").json["total"] == 0


def test_confirmation_host_outside_confirm_hosts_is_refused_and_never_requested(make_oci, receiver, api):
    """The default confirm_hosts (*.oraclecloud.com) must stop a URL pointing anywhere else, here the receiver."""
    oci = make_oci(confirm_hosts=None)
    body, headers = confirmation("header", receiver.url + CONFIRM_PATH + CONFIRM_QUERY)

    response = oci.post(body, headers=headers)

    assert response.status_code == 400
    error = response.json["error"]
    assert error["code"] == "confirmation_host_not_allowed"
    assert error["message"] == ("confirmation URL refused: host '127.0.0.1' is not allowed "
                                "(allowed host patterns: *.oraclecloud.com)")
    assert receiver.requests == []
    assert api.get("/api/sources/oci-seoul/handshakes").json["total"] == 0


def test_failed_confirmation_answers_502_so_ons_resends_and_is_listed_as_failed(oci, receiver, api):
    receiver.answer(500, 500)
    body, headers = confirmation("header", receiver.url + CONFIRM_PATH + CONFIRM_QUERY)

    response = oci.post(body, headers=headers)

    assert response.status_code == 502
    assert response.json["error"] == {"code": "confirmation_failed",
                                      "message": "confirmation URL answered HTTP 500 (after one retry)"}
    assert len(receiver.requests) == 2
    [handshake] = api.get("/api/sources/oci-seoul/handshakes").json["items"]
    assert handshake["status"] == 502
    assert (handshake["record"]["outcome"], handshake["record"]["status_code"]) == ("failed", 500)


@pytest.mark.parametrize("transient_failures", [0, 1], ids=["healthy", "one-503-then-healthy"])
def test_confirmation_answers_within_ocis_five_seconds(oci, receiver, transient_failures):
    """ONS waits 5 s for the answer, and the confirmation GET happens inside it (default 3 s timeout, one retry)."""
    receiver.answer(*[503] * transient_failures)
    receiver.delay = 0.3  # a slow but healthy endpoint
    body, headers = confirmation("header", receiver.url + CONFIRM_PATH + CONFIRM_QUERY)

    started = time.monotonic()
    response = oci.post(body, headers=headers)
    elapsed = time.monotonic() - started

    assert (response.status_code, response.json) == (200, {"status": "confirmed"})
    assert [r["status"] for r in receiver.requests] == [503] * transient_failures + [200]
    assert elapsed < 5.0


@pytest.mark.parametrize("form", [*FORMS, "alarm"])
def test_subscription_tokens_are_not_kept_in_the_raw_journal(oci, receiver, api, form):
    """The confirmation URL's token confirms the subscription; the unsubscribe URL's (on every message) cancels it."""
    if form == "alarm":
        unsubscribe = f"{receiver.url}/20181201/subscriptions/{SUBSCRIPTION}/unsubscription{CONFIRM_QUERY}"
        response = oci.post("ok_to_firing.json", message_id="msg-1", headers={"X-OCI-NS-UnsubscribeURL": unsubscribe})
    else:
        body, headers = confirmation(form, receiver.url + CONFIRM_PATH + CONFIRM_QUERY)
        response = oci.post(body, headers=headers)
    assert response.status_code in (200, 202)

    [event] = api.get("/api/events").json["items"]
    assert TOKEN not in json.dumps(event["headers"])
    assert TOKEN.encode() not in api.get(event["raw_url"]).data


# -- alarms and incidents ------------------------------------------------------------------

@pytest.mark.parametrize(
    ("sequence", "resolved_at"),
    [
        (["ok_to_firing.json", "repeat.json", "firing_to_ok.json", "reset.json"], "2025-10-27T11:15:00.789000+00:00"),
        (["ok_to_firing.json", "repeat.json", "reset.json"], "2025-10-27T11:30:00.001000+00:00"),
    ],
    ids=["firing-repeat-ok-reset", "firing-repeat-reset"],
)
def test_one_alarm_lifecycle_is_one_incident_that_ends_resolved(oci, api, sequence, resolved_at):
    """FIRING_TO_OK and RESET carry no dimensions; they must resolve the incident all the same."""
    for number, name in enumerate(sequence, 1):
        response = oci.post(name, message_id=f"msg-{number}")
        assert response.status_code == 202, response.json
        assert len(response.json["alerts"]) == 1

    incident = the_incident(api)
    assert incident["status"] == "resolved"
    assert incident["event_count"] == len(sequence)
    assert incident["resolved_at"] == resolved_at
    assert (incident["first_seen_at"], incident["last_seen_at"]) == (
        "2025-10-27T11:04:00.123000+00:00", "2025-10-27T11:30:00.001000+00:00" if "firing_to_ok.json" in sequence  # the RESET after the OK
        else "2025-10-27T11:09:00.456000+00:00")
    assert (incident["title"], incident["severity"]) == ("High CPU on web-server-01", "critical")
    assert incident["resource"] == {
        "id": "ocid1.instance.oc1.ap-seoul-1.anuwgljr5kmzb2qczhk3yyc2ngq6ol6bzn4xwkc7ulmmtgbrcc5wcyxe3tza",
        "name": "web-server-01", "type": "oci_computeagent"}
    assert [(e["kind"], e["from_status"], e["to_status"]) for e in incident["timeline"]][:3] == [
        ("created", None, None), ("webhook_received", None, None), ("status_changed", "triggered", "resolved")]

    rows = oci.alert_rows()
    assert [(r.message_id, r.status, r.labels["oci_type"]) for r in rows] == [
        (f"msg-{n}", status, name.removesuffix(".json").upper())
        for n, (name, status) in enumerate(zip(sequence, ["firing", "firing", "resolved", "resolved"]), 1)]
    # A RESET after the recovery changes no state; it is counted on the incident it follows, whose problem
    # is now known to be over until 11:30 (a firing from before that, delivered late, opens nothing).
    assert [r.incident_id for r in rows] == [incident["id"]] * len(rows)
    assert rows[-1].labels["reset"] == "true"


def test_envelope_and_raw_body_of_one_alarm_join_one_incident(oci, api):
    assert oci.post("envelope_raw.json").status_code == 202  # no header: the envelope's messageId stands in
    assert oci.post("ok_to_firing.json", message_id="msg-raw").status_code == 202

    assert the_incident(api)["event_count"] == 2
    rows = oci.alert_rows()
    assert [r.message_id for r in rows] == [ENVELOPE_MESSAGE_ID, "msg-raw"]
    assert rows[0].fingerprint == rows[1].fingerprint
    assert rows[0].labels == rows[1].labels


@pytest.mark.parametrize(("name", "message_id"), [("ok_to_firing.json", "msg-1"), ("envelope_raw.json", None)],
                         ids=["header-message-id", "envelope-message-id"])
def test_redelivered_message_has_exactly_one_effect(oci, api, name, message_id):
    """ONS retries a message for up to two hours with the same message id."""
    first = oci.post(name, message_id=message_id)
    again = oci.post(name, message_id=message_id)

    assert first.status_code == 202 and len(first.json["alerts"]) == 1
    assert (again.status_code, again.json) == (200, {"status": "duplicate"})
    assert the_incident(api)["event_count"] == 1
    assert api.get("/api/events").json["total"] == 1
    assert len(oci.alert_rows()) == 1


def test_a_message_id_dedupes_for_a_day_and_a_replay_of_its_request_for_ever(oci, api, database_url, tmp_path):
    """OCI's alerts carry no ids of their own: the message id is their only key.  ONS stops retrying
    after two hours, so past ``DUPLICATE_WINDOW`` the same id is a new message; ``gateway replay``
    of the stored request is no retry, and stays a duplicate of it however old."""
    assert oci.post("ok_to_firing.json", message_id="msg-old").status_code == 202
    journal = RawRequest.__table__
    with oci.app.extensions["gateway"].engine.begin() as conn:
        received = conn.execute(select(journal.c.received_at)).scalar_one()
        conn.execute(update(journal).values(received_at=received - DUPLICATE_WINDOW - dt.timedelta(days=2)))

    config = tmp_path / "oci.yaml"  # the oci fixture's file is rewritten by the api fixture's app
    config.write_text("sources:\n  - {key: oci-seoul, type: oci, username: ons, password: pw}\n"
                      "sinks:\n  - {name: itms, type: itms}\nroute: {sinks: [itms]}\n")
    replayed = CliRunner().invoke(cli, ["replay"], env={"GATEWAY_DATABASE_URL": database_url,
                                                        "GATEWAY_CONFIG": str(config)})
    assert replayed.exit_code == 0, replayed.output
    assert replayed.stdout.splitlines()[0].endswith(": accepted (1 alert) -> duplicate")
    assert len(oci.alert_rows()) == 1

    assert oci.post("ok_to_firing.json", message_id="msg-old").status_code == 202
    assert the_incident(api)["event_count"] == 2


@pytest.mark.parametrize(
    ("name", "occurred_at", "resource_name"),
    [
        ("ok_to_firing.json", "2025-10-27T11:04:00.123000+00:00", "web-server-01"),
        ("firing_no_millis.json", "2025-10-27T11:05:00+00:00", "web-server-01"),  # also resourceDisplayname casing
        ("firing_resource_name_offset.json", "2025-10-27T11:06:00+00:00", "db-primary"),  # +09:00, resourceName
    ],
)
def test_alarm_time_with_or_without_milliseconds(oci, api, name, occurred_at, resource_name):
    assert oci.post(name, message_id="msg-1").status_code == 202

    incident = the_incident(api)
    assert (incident["first_seen_at"], incident["last_seen_at"]) == (occurred_at, occurred_at)
    assert incident["resource"]["name"] == resource_name
    assert oci.alert_rows()[0].occurred_at.isoformat() == occurred_at


def test_unknown_message_type_is_an_event_but_changes_no_incident(oci, api):
    assert oci.post("ok_to_firing.json", message_id="msg-1").status_code == 202

    response = oci.post("rule_change.json", message_id="msg-2")

    assert (response.status_code, response.json) == (
        202, {"status": "accepted", "alerts": [], "refused": [], "duplicates": []})
    events = api.get("/api/events", query_string={"source": "oci-seoul"}).json
    assert events["total"] == 2
    assert events["items"][0]["alert_count"] == 0
    assert json.loads(api.get(events["items"][0]["raw_url"]).data)["type"] == "RULE_CHANGE"
    incident = the_incident(api)
    assert (incident["status"], incident["event_count"]) == ("triggered", 1)
    assert len(oci.alert_rows()) == 1

    # No alert, yet the message id still makes a redelivery a duplicate.
    assert oci.post("rule_change.json", message_id="msg-2").json == {"status": "duplicate"}
    assert api.get("/api/events", query_string={"source": "oci-seoul"}).json["total"] == 2


# -- authentication ------------------------------------------------------------------------

@pytest.mark.parametrize(("auth", "code"), [(None, "unauthorized"), (("ons", "wrong"), "invalid_credentials"),
                                            (("other", "pw"), "invalid_credentials")],
                         ids=["missing", "wrong-password", "wrong-user"])
@pytest.mark.parametrize("message", ["alarm", "confirmation"])
def test_basic_auth_missing_or_wrong_is_401_with_a_challenge(oci, receiver, api, auth, code, message):
    """Confirmations too: a stranger must not make the gateway fetch URLs."""
    if message == "alarm":
        response = oci.post("ok_to_firing.json", message_id="msg-1", auth=auth)
    else:
        body, headers = confirmation("header", receiver.url + CONFIRM_PATH + CONFIRM_QUERY)
        response = oci.post(body, headers=headers, auth=auth)

    assert response.status_code == 401
    assert response.headers["WWW-Authenticate"] == 'Basic realm="gateway"'
    assert response.json["error"]["code"] == code
    assert receiver.requests == []
    assert api.get("/api/events").json["total"] == 0


# -- signatures ----------------------------------------------------------------------------

@pytest.fixture(scope="module")
def signing_key():
    """(private key, PEM certificate) standing in for ONS's signing certificate."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "notification.ap-seoul-1.oci.oraclecloud.com")])
    now = dt.datetime.now(dt.timezone.utc)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(days=1)).not_valid_after(now + dt.timedelta(days=30))
            .sign(key, hashes.SHA256()))
    return key, cert.public_bytes(serialization.Encoding.PEM)


@pytest.mark.parametrize(
    ("confirm_hosts", "signed", "status", "code", "cert_fetches"),
    [
        (["127.0.0.1"], "body", 202, None, 1),
        (["127.0.0.1"], "other", 401, "invalid_signature", 1),
        (None, "body", 401, "signing_cert_host_not_allowed", 0),  # default *.oraclecloud.com
    ],
    ids=["valid", "invalid", "disallowed-cert-host"],
)
def test_signature(make_oci, receiver, api, signing_key, confirm_hosts, signed, status, code, cert_fetches):
    key, pem = signing_key
    receiver.default = (200, {"Content-Type": "application/x-pem-file"}, pem.decode())
    oci = make_oci(verify_signature=True, confirm_hosts=confirm_hosts)
    body = payload_bytes("ok_to_firing.json")
    signed_bytes = body if signed == "body" else payload_bytes("repeat.json")
    signature = key.sign(signed_bytes, padding.PKCS1v15(), hashes.SHA256())

    response = oci.post(body, message_id="msg-1", headers={
        "X-OCI-NS-Signature": base64.b64encode(signature).decode(),
        "X-OCI-NS-SigningCertURL": receiver.url + CERT_PATH, "X-OCI-NS-SignatureVersion": "1.0"})

    assert response.status_code == status, response.json
    assert [(r["method"], r["path"]) for r in receiver.requests] == [("GET", CERT_PATH)] * cert_fetches
    if code:
        assert response.json["error"]["code"] == code
        assert api.get("/api/events").json["total"] == 0
    else:
        assert the_incident(api)["event_count"] == 1


# -- grouped notifications, the spec's table, Oracle's published examples ---------------------

GROUPED_STREAMS = ["wordpress", "oke-0", "oke-2", "oke-1"]


def split_messages() -> list[dict]:
    """Oracle's grouped example as a split subscription sends it: one message per stream."""
    grouped = json.loads(payload_bytes("oracle_grouped.json"))
    meta = grouped["alarmMetaData"][0]
    messages = []
    for number, (dimensions, value) in enumerate(zip(meta["dimensions"], meta["metricValues"])):
        messages.append({**grouped, "dedupeKey": f"stream-{number}", "notificationType": "Split messages per metric stream",
                         "alarmMetaData": [{**meta, "dimensions": [dimensions], "metricValues": [value],
                                            "totalMetricsFiring": 1}]})
    return messages


def incidents_by_resource(api) -> dict:
    return {i["resource"]["name"]: i for i in api.get("/api/incidents", query_string={"per_page": 100}).json["items"]}


def test_grouped_message_gives_each_stream_its_own_incident_resource_and_value(oci, api):
    response = oci.post("oracle_grouped.json", message_id="grouped-1")
    assert response.status_code == 202, response.json
    assert len(response.json["alerts"]) == 4

    found = incidents_by_resource(api)
    assert sorted(found) == sorted(GROUPED_STREAMS)
    assert len({i["fingerprint"] for i in found.values()}) == 4
    values = {r.resource_name: r.labels["metric.CpuUtilization[1m].mean()"] for r in oci.alert_rows()}
    assert values == {"wordpress": "92", "oke-0": "95", "oke-2": "93", "oke-1": "91"}
    assert {r.labels["region"] for r in oci.alert_rows()} == {"us-ashburn-1"}


def test_split_and_grouped_subscriptions_give_the_same_incidents(oci, api):
    for number, message in enumerate(split_messages()):
        assert oci.post(message, message_id=f"split-{number}").status_code == 202
    split = {name: i["fingerprint"] for name, i in incidents_by_resource(api).items()}
    repeat = {**json.loads(payload_bytes("oracle_grouped.json")), "type": "REPEAT",
              "timestamp": "2023-05-17T15:39:23.852Z", "timestampEpochMillis": 1684337963852}
    assert oci.post(repeat, message_id="grouped-repeat").status_code == 202

    found = incidents_by_resource(api)
    assert {name: i["fingerprint"] for name, i in found.items()} == split
    assert {i["event_count"] for i in found.values()} == {2}


def test_recovery_without_dimensions_resolves_every_stream_of_the_alarm_same_region(oci, api):
    assert oci.post("oracle_grouped.json", message_id="grouped-1").status_code == 202
    assert oci.post("oracle_grouped_ok.json", message_id="grouped-ok").status_code == 202

    assert {i["status"] for i in incidents_by_resource(api).values()} == {"resolved"}
    assert api.get("/api/incidents").json["total"] == 4
    firing, recovery = oci.alert_rows()[0], oci.alert_rows()[-1]
    assert recovery.labels["region"] == firing.labels["region"] == "us-ashburn-1"  # not the OCID's "iad"


def test_recovery_with_dimensions_resolves_only_those_streams(oci, api):
    assert oci.post("oracle_grouped.json", message_id="grouped-1").status_code == 202
    ok = json.loads(payload_bytes("oracle_grouped.json"))
    ok["type"], ok["timestamp"] = "FIRING_TO_OK", "2023-05-17T15:44:23.852Z"
    meta = ok["alarmMetaData"][0]
    meta["dimensions"], meta["metricValues"] = meta["dimensions"][:2], meta["metricValues"][:2]
    assert oci.post(ok, message_id="ok-two").status_code == 202

    statuses = {name: i["status"] for name, i in incidents_by_resource(api).items()}
    assert statuses == {"wordpress": "resolved", "oke-0": "resolved", "oke-2": "triggered", "oke-1": "triggered"}


def test_the_real_seoul_capture_is_one_stream_with_its_own_value(oci, api):
    assert oci.post("capture_grouped_seoul.json", message_id="seoul-1").status_code == 202
    [incident] = api.get("/api/incidents").json["items"]
    assert incident["resource"] == {"id": "OCID1.AUTONOMOUSDATABASE.OC1.AP-SEOUL-1.ANUWGLJRExxxxxx",
                                    "name": "ARAMCODEVAUTONOMOUS", "type": "oci_autonomous_database"}
    [row] = oci.alert_rows()
    assert [v for k, v in row.labels.items() if k.startswith("metric.")] == ["0.00"]


def test_oracles_raw_example_as_published_is_not_json_and_is_400(oci, api):
    """The docs' raw grouped example has a stray '}]'; it is answered 400, as any invalid JSON is."""
    response = oci.post((PAYLOADS / "oracle_grouped_raw_as_published.txt").read_bytes(), message_id="raw")
    assert (response.status_code, response.json["error"]["code"]) == (400, "invalid_json")
    assert api.get("/api/events").json["total"] == 0


def test_the_specs_own_test_message_takes_the_alarm_id_as_title(oci, api):
    response = oci.post("spec_test_message.json")
    assert response.status_code == 202, response.json
    [incident] = api.get("/api/incidents").json["items"]
    assert (incident["title"], incident["severity"], incident["status"]) == (
        "ocid1.alarm.oc1...", "critical", "triggered")


def test_a_message_type_the_spec_does_not_know_is_400(oci, api):
    body = {**json.loads(payload_bytes("ok_to_firing.json")), "type": "SOMETHING_NEW"}
    response = oci.post(body, message_id="unknown-type")
    assert (response.status_code, response.json["error"]["code"]) == (400, "unknown_message_type")
    envelope = {"type": "Heartbeat", "messageId": "m-9", "message": "{}"}
    assert oci.post(envelope).status_code == 400
    assert api.get("/api/events").json["total"] == 0


@pytest.mark.parametrize(("status", "severity", "expected"), [
    ("FIRING", "CRITICAL", ("triggered", "critical")), ("FIRING", "ERROR", ("triggered", "error")),
    ("FIRING", "WARNING", ("triggered", "warning")), ("FIRING", "INFO", ("triggered", "info")),
    ("FIRING", "FATAL", ("triggered", "info")), ("OK", "INFO", None), ("INSUFFICIENT_DATA", "CRITICAL", None),
])
def test_the_spec_table_of_states_and_severities(oci, api, status, severity, expected):
    """FIRING -> ALERT, OK -> RECOVERY, INSUFFICIENT_DATA -> NONE (stored, no incident); unknown severity -> INFO."""
    message = {"alarmId": "ocid1.alarm.oc1.ap-seoul-1.aaaaaaaaspec", "displayName": "High CPU Usage Alert",
               "status": status, "severity": severity, "timestamp": "2024-01-15T10:30:00.000Z"}
    response = oci.post({"type": "Notification", "messageId": f"m-{status}-{severity}", "message": json.dumps(message)})
    assert response.status_code == 202, response.json
    items = api.get("/api/incidents", query_string={"status": "triggered"}).json["items"]
    assert [(i["status"], i["severity"]) for i in items] == ([expected] if expected else [])
    assert api.get("/api/events").json["total"] == 1


def test_a_grouped_firing_delivered_after_its_alarms_recovery_opens_nothing(oci, api):
    """ONS redelivers for up to 2 h: the OK (15:44) may arrive before the firing (15:34) it ends."""
    assert oci.post("oracle_grouped_ok.json", message_id="grouped-ok").status_code == 202
    assert oci.post("oracle_grouped.json", message_id="grouped-1").status_code == 202
    assert api.get("/api/incidents", query_string={"status": "triggered"}).json["total"] == 0
    [kept] = api.get("/api/incidents").json["items"]  # the alarm's recovery, which every stream's firing joined
    assert (kept["status"], kept["event_count"], kept["resolved_at"]) == (
        "resolved", 5, "2023-05-17T15:44:23.852000+00:00")
