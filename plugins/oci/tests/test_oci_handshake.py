"""Subscription confirmation against a real local endpoint, and the SSRF guard in front of it."""
from __future__ import annotations

import socket

import pytest
from gateway import Rejected, Reply

SUBSCRIPTION = "ocid1.onssubscription.oc1.ap-seoul-1.aaaaaaaaxmj7ucqzd6vsb6lgmxr3ofkmv5t3ed4wx2nnqhcbfz5ngfo2ji4q"
TOPIC = "ocid1.onstopic.oc1.ap-seoul-1.aaaaaaaa7rq6n2d6yfbmxoxiqlk5cvh4yjhmj6pqzq7t3c3gcxnd3kqwbxaq"
CONFIRM_PATH = f"/20181201/subscriptions/{SUBSCRIPTION}/confirmation"
QUERY = "?token=c2VjcmV0LXRva2Vu&protocol=CUSTOM_HTTPS"


def oracle_headers(url: str) -> dict:
    """Headers of ONS's confirmation POST, as Oracle's docs show them."""
    return {
        "X-OCI-NS-MessageType": "SubscriptionConfirmation",
        "X-OCI-NS-ConfirmationURL": url,
        "X-OCI-NS-SubscriptionId": SUBSCRIPTION,
        "X-OCI-NS-TopicOcid": TOPIC,
        "X-OCI-NS-State": "Pending",
    }


@pytest.fixture
def local_source(make_source):
    """A source allowed to confirm against the local stand-in."""
    return make_source(confirm_hosts=["127.0.0.1"], confirm_timeout="10s")  # a stalled machine is not a timeout


def confirmation_forms(url: str) -> dict[str, tuple[dict, dict]]:
    """(body, headers) per way a confirmation arrives."""
    return {
        "header": ({}, oracle_headers(url)),
        "body-ConfirmationURL": (
            {"ConfirmationURL": url},
            {"X-OCI-NS-MessageType": "SubscriptionConfirmation", "X-OCI-NS-SubscriptionId": SUBSCRIPTION,
             "X-OCI-NS-TopicOcid": TOPIC},
        ),
        "spec-body": (
            {"type": "Subscription Confirmation", "subscriptionId": SUBSCRIPTION, "topicId": TOPIC,
             "confirmationUrl": url, "message": "Please confirm your subscription by visiting the URL above"},
            {},
        ),
    }


@pytest.mark.parametrize("form", ["header", "body-ConfirmationURL", "spec-body"])
def test_confirmation_gets_the_url_once_and_records_it_without_token(local_source, local_server, make_request, form):
    local_server.route(CONFIRM_PATH, 200)
    body, headers = confirmation_forms(local_server.url(CONFIRM_PATH + QUERY))[form]

    reply = local_source.handshake(make_request(body, headers))

    assert [(r.method, r.path) for r in local_server.requests] == [("GET", CONFIRM_PATH + QUERY)]
    assert (reply.status, reply.body) == (200, {"status": "confirmed"})
    assert reply.record == {
        "kind": "subscription_confirmation",
        "subscription_id": SUBSCRIPTION,
        "topic": TOPIC,
        "confirmation_url": local_server.url(CONFIRM_PATH),
        "outcome": "confirmed",
        "status_code": 200,
        "error": None,
    }


def test_alarm_message_is_not_a_handshake(local_source, make_request, load_payload):
    request = make_request(load_payload("ok_to_firing.json"), {"X-OCI-NS-MessageType": "Notification"})
    assert local_source.handshake(request) is None


@pytest.mark.parametrize(
    ("confirm_hosts", "url"),
    [
        (None, "http://127.0.0.1:{port}/confirm"),  # default *.oraclecloud.com: loopback not allowed
        (None, "https://evil.example.com/20181201/subscriptions/x/confirmation?token=t"),
        (None, "http://cell1.notification.ap-seoul-1.oci.oraclecloud.com/confirmation"),  # http, not loopback
        (["*"], "http://169.254.169.254/opc/v2/instance/"),  # instance metadata, even if every host is allowed
        (None, "https://127.0.0.1:{port}\\@cell1.notification.ap-seoul-1.oci.oraclecloud.com/"),  # parser confusion
        (None, "https://ons:pw@cell1.notification.ap-seoul-1.oci.oraclecloud.com.evil.example.com/"),
        (["127.0.0.1"], "file:///etc/passwd"),
        (None, "https://" + "a" * 64 + ".notification.ap-seoul-1.oci.oraclecloud.com/"),  # matches the glob
        (None, "https://cell1..oraclecloud.com/"),
    ],
    ids=["loopback-not-listed", "https-evil-host", "http-oracle-host", "http-metadata", "backslash", "userinfo", "file",
         "label-too-long", "label-empty"],
)
def test_refused_confirmation_url_makes_no_request(make_source, local_server, make_request, confirm_hosts, url):
    source = make_source(**({"confirm_hosts": confirm_hosts} if confirm_hosts else {}))
    local_server.route("/confirm", 200)
    url = url.format(port=local_server.port)

    with pytest.raises(Rejected) as refused:
        source.handshake(make_request({}, oracle_headers(url)))

    assert (refused.value.status, refused.value.code) == (400, "confirmation_host_not_allowed")
    assert "allowed host patterns" in refused.value.message
    assert local_server.requests == []


@pytest.mark.parametrize("form", ["header", "body-ConfirmationURL", "spec-body"])
def test_unparsable_confirmation_url_is_scrubbed_then_refused(local_source, local_server, make_request, form):
    """scrub runs before the guard, so it must find the token in a URL that urlsplit cannot parse."""
    body, headers = confirmation_forms("http://[::1:" + CONFIRM_PATH + QUERY)[form]
    request = make_request(body, headers)

    scrubbed_headers, scrubbed_body = local_source.scrub(request)
    assert "c2VjcmV0LXRva2Vu" not in repr(dict(scrubbed_headers)) + repr(scrubbed_body)
    with pytest.raises(Rejected) as refused:
        local_source.handshake(request)
    assert (refused.value.status, refused.value.code) == (400, "confirmation_host_not_allowed")
    assert "URL is malformed" in refused.value.message
    assert local_server.requests == []


def test_refusal_names_the_host_and_the_patterns(make_source, make_request):
    with pytest.raises(Rejected) as refused:
        make_source().handshake(make_request({}, oracle_headers("https://evil.example.com/c?token=t")))
    assert "'evil.example.com'" in refused.value.message
    assert "*.oraclecloud.com" in refused.value.message


def test_confirmation_without_url_is_400(local_source, make_request):
    with pytest.raises(Rejected) as refused:
        local_source.handshake(make_request({}, {"X-OCI-NS-MessageType": "SubscriptionConfirmation"}))
    assert (refused.value.status, refused.value.code) == (400, "missing_confirmation_url")


@pytest.mark.parametrize(
    ("answers", "options", "status_code", "attempts"),
    [
        ([500, 500, 200], {}, 500, 2),
        ([{"status": 200, "delay": 0.6}], {"confirm_timeout": "0.2s"}, None, 2),
        ([404], {}, 404, 1),
        ([{"status": 302, "headers": {"Location": "/elsewhere"}}], {}, 302, 1),
    ],
    ids=["5xx-twice", "timeout-twice", "4xx-no-retry", "redirect-not-followed"],
)
def test_failed_confirmation_replies_502_so_ons_resends(
    make_source, local_server, make_request, answers, options, status_code, attempts
):
    source = make_source(confirm_hosts=["127.0.0.1"], **options)
    local_server.route(CONFIRM_PATH, *answers)

    reply = source.handshake(make_request({}, oracle_headers(local_server.url(CONFIRM_PATH + QUERY))))

    assert [r.path for r in local_server.requests] == [CONFIRM_PATH + QUERY] * attempts
    assert reply.status == 502
    assert reply.body["error"]["code"] == "confirmation_failed"
    assert (reply.record["outcome"], reply.record["status_code"]) == ("failed", status_code)
    assert reply.record["error"]


def test_one_retry_is_enough_after_a_single_5xx(local_source, local_server, make_request):
    local_server.route(CONFIRM_PATH, 503, 200)
    reply = local_source.handshake(make_request({}, oracle_headers(local_server.url(CONFIRM_PATH + QUERY))))
    assert len(local_server.requests) == 2
    assert isinstance(reply, Reply) and (reply.status, reply.record["outcome"]) == (200, "confirmed")


def test_unreachable_endpoint_error_does_not_leak_the_token(local_source, make_request):
    with socket.socket() as probe:  # a loopback port with nothing listening
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    reply = local_source.handshake(make_request({}, oracle_headers(f"http://127.0.0.1:{port}{CONFIRM_PATH}{QUERY}")))

    assert (reply.status, reply.record["outcome"], reply.record["status_code"]) == (502, "failed", None)
    assert "ConnectionError" in reply.record["error"]
    assert "c2VjcmV0LXRva2Vu" not in repr(reply)
