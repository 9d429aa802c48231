"""ONS signature checking with a certificate served by the local stand-in."""
from __future__ import annotations

import dataclasses
import json

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from gateway import Rejected

CERT_PATH = "/20181201/certificates/ons-signing.pem"
RSA_ENCRYPTION_OID = bytes.fromhex("06092a864886f70d010101")  # DER of 1.2.840.113549.1.1.1
UNKNOWN_OID = bytes.fromhex("06092a864886f70d010163")  # 1.2.840.113549.1.1.99, assigned to nothing


@pytest.fixture
def alarm_body(load_payload) -> bytes:
    """The alarm exactly as sent: indented, so it differs from the compact re-serialisation."""
    return json.dumps(load_payload("ok_to_firing.json"), indent=2).encode()


@pytest.fixture
def cert_server(local_server, signer):
    local_server.route(CERT_PATH, {"body": signer.pem})
    return local_server


@pytest.fixture
def signing_source(make_source):
    return make_source(verify_signature=True, confirm_hosts=["127.0.0.1"])


def signed_headers(signature: str, cert_url: str) -> dict:
    return {"X-OCI-NS-Signature": signature, "X-OCI-NS-SigningCertURL": cert_url, "X-OCI-NS-SignatureVersion": "1.0"}


def refusal(source, request) -> Rejected:
    with pytest.raises(Rejected) as refused:
        source.verify(request)
    assert refused.value.status == 401
    return refused.value


def test_signature_over_exact_body_is_accepted(signing_source, cert_server, signer, make_request, alarm_body):
    headers = signed_headers(signer.sign(alarm_body), cert_server.url(CERT_PATH))
    assert signing_source.verify(make_request(body=alarm_body, headers=headers)) is None


def test_signature_over_compact_json_is_accepted(signing_source, cert_server, signer, make_request, alarm_body):
    """The internal spec's sketch signs json.dumps(payload, separators=(",", ":"))."""
    compact = json.dumps(json.loads(alarm_body), separators=(",", ":")).encode()
    headers = signed_headers(signer.sign(compact), cert_server.url(CERT_PATH))
    assert signing_source.verify(make_request(body=alarm_body, headers=headers)) is None


def test_signature_over_other_content_is_refused(signing_source, cert_server, signer, make_request, alarm_body):
    tampered = alarm_body.replace(b"CRITICAL", b"INFO")
    headers = signed_headers(signer.sign(alarm_body), cert_server.url(CERT_PATH))
    assert refusal(signing_source, make_request(body=tampered, headers=headers)).code == "invalid_signature"


def with_unknown_key_algorithm(pem: bytes) -> bytes:
    """The certificate with its key's algorithm changed to one no library knows (its signature no longer checks)."""
    der = x509.load_pem_x509_certificate(pem).public_bytes(serialization.Encoding.DER)
    tampered = der.replace(RSA_ENCRYPTION_OID, UNKNOWN_OID, 1)
    return x509.load_der_x509_certificate(tampered).public_bytes(serialization.Encoding.PEM)


@pytest.mark.parametrize("signature", ["not*base64!", "\xff"], ids=["not-base64", "not-ascii"])
def test_signature_that_is_not_base64_is_refused(signing_source, cert_server, make_request, alarm_body, signature):
    headers = signed_headers(signature, cert_server.url(CERT_PATH))
    assert refusal(signing_source, make_request(body=alarm_body, headers=headers)).code == "invalid_signature"


@pytest.mark.parametrize("missing", ["X-OCI-NS-Signature", "X-OCI-NS-SigningCertURL"])
def test_missing_signature_header_is_refused(signing_source, cert_server, signer, make_request, alarm_body, missing):
    headers = signed_headers(signer.sign(alarm_body), cert_server.url(CERT_PATH))
    del headers[missing]
    assert refusal(signing_source, make_request(body=alarm_body, headers=headers)).code == "missing_signature"
    assert cert_server.requests == []


def test_certificate_from_disallowed_host_is_refused_without_fetching(make_source, cert_server, signer, make_request, alarm_body):
    source = make_source(verify_signature=True)  # default *.oraclecloud.com
    headers = signed_headers(signer.sign(alarm_body), cert_server.url(CERT_PATH))
    assert refusal(source, make_request(body=alarm_body, headers=headers)).code == "signing_cert_host_not_allowed"
    assert cert_server.requests == []


def test_certificate_is_fetched_once_and_cached(signing_source, cert_server, signer, make_request, load_payload):
    for name in ("ok_to_firing.json", "firing_to_ok.json"):
        body = json.dumps(load_payload(name)).encode()
        signing_source.verify(make_request(body=body, headers=signed_headers(signer.sign(body), cert_server.url(CERT_PATH))))
    assert [(r.method, r.path) for r in cert_server.requests] == [("GET", CERT_PATH)]


def test_payload_too_deep_to_reserialise_only_matches_the_body(signing_source, cert_server, signer, make_request):
    """The core decodes the body higher up the stack than the plugin re-encodes it: at the limit, only
    the exact body can match.  Nested far past any stack, the payload stands in for one at the limit."""
    depth = 100_000
    payload = []
    for _ in range(depth - 1):
        payload = [payload]
    body = b"[" * depth + b"]" * depth

    def signed(content: bytes):
        headers = signed_headers(signer.sign(content), cert_server.url(CERT_PATH))
        return dataclasses.replace(make_request(body=b"[]", headers=headers), body=body, payload=payload)

    assert signing_source.verify(signed(body)) is None
    assert refusal(signing_source, signed(b"something else")).code == "invalid_signature"  # no RecursionError


@pytest.mark.parametrize("certificate", ["garbled", "unknown-key-algorithm"])
def test_unavailable_certificate_is_refused(signing_source, local_server, signer, make_request, alarm_body, certificate):
    pem = b"-----BEGIN CERTIFICATE-----\nnope\n" if certificate == "garbled" else with_unknown_key_algorithm(signer.pem)
    local_server.route(CERT_PATH, {"status": 200, "body": pem})
    headers = signed_headers(signer.sign(alarm_body), local_server.url(CERT_PATH))
    assert refusal(signing_source, make_request(body=alarm_body, headers=headers)).code == "signing_cert_unavailable"


def test_unsigned_confirmation_is_refused_before_any_handshake(signing_source, cert_server, make_request):
    """verify runs before handshake in the core, so confirmations are covered by the signature too."""
    request = make_request({"ConfirmationURL": cert_server.url("/confirm?token=t")},
                           {"X-OCI-NS-MessageType": "SubscriptionConfirmation"})
    assert refusal(signing_source, request).code == "missing_signature"
    assert cert_server.requests == []


def test_signed_confirmation_passes_and_confirms(signing_source, cert_server, signer, make_request):
    cert_server.route("/confirm", 200)
    body = json.dumps({"ConfirmationURL": cert_server.url("/confirm?token=t")}).encode()
    headers = {"X-OCI-NS-MessageType": "SubscriptionConfirmation", **signed_headers(signer.sign(body), cert_server.url(CERT_PATH))}
    request = make_request(body=body, headers=headers)

    signing_source.verify(request)
    assert signing_source.handshake(request).record["outcome"] == "confirmed"
    assert [r.path for r in cert_server.requests] == [CERT_PATH, "/confirm?token=t"]
