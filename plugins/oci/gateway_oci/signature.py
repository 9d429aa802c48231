"""Optional ONS message-signature check (``X-OCI-NS-Signature`` + ``X-OCI-NS-SigningCertURL``).

Oracle does not publish what is signed (see the README).  Following the internal spec,
the signature is RSA PKCS#1 v1.5 over SHA-256, accepted when it matches the exact body
bytes or the compact JSON re-serialisation the spec's sketch signs.
"""
from __future__ import annotations

import base64
import json
import threading
from typing import Iterator, Sequence

import requests
from cryptography import x509
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding, rsa

from gateway import InboundRequest, Rejected
from gateway_oci.hosts import url_problem


class CertificateCache:
    """Public keys of signing certificates by URL: fetched once, shared by every request.

    Bounded (oldest entry dropped first) because the URL comes from the request; only
    allow-listed hosts ever get here.
    """

    def __init__(self, timeout: float, max_entries: int = 32):
        self._timeout = timeout
        self._max_entries = max_entries
        self._keys: dict[str, rsa.RSAPublicKey] = {}
        self._lock = threading.Lock()

    def public_key(self, url: str) -> rsa.RSAPublicKey:
        with self._lock:
            key = self._keys.get(url)
        if key is None:
            key = self._fetch(url)  # outside the lock: a slow host must not stall other requests
            with self._lock:
                while len(self._keys) >= self._max_entries:
                    del self._keys[next(iter(self._keys))]
                self._keys[url] = key
        return key

    def _fetch(self, url: str) -> rsa.RSAPublicKey:
        try:
            response = requests.get(url, timeout=self._timeout, allow_redirects=False)
            response.raise_for_status()
            key = x509.load_pem_x509_certificate(response.content).public_key()
        except (requests.RequestException, ValueError, UnsupportedAlgorithm) as exc:
            raise _refused("signing_cert_unavailable", f"signing certificate unavailable: {type(exc).__name__}") from exc
        if not isinstance(key, rsa.RSAPublicKey):
            raise _refused("signing_cert_unavailable", "signing certificate does not hold an RSA key")
        return key


def verify_signature(request: InboundRequest, certificates: CertificateCache, allowed_hosts: Sequence[str]) -> None:
    """Raise a 401 ``Rejected`` unless the request carries a valid ONS signature."""
    signature_b64 = request.headers.get("X-OCI-NS-Signature", "").strip()
    cert_url = request.headers.get("X-OCI-NS-SigningCertURL", "").strip()
    if not (signature_b64 and cert_url):
        raise _refused("missing_signature", "X-OCI-NS-Signature and X-OCI-NS-SigningCertURL are required")
    problem = url_problem(cert_url, allowed_hosts)
    if problem:
        raise _refused("signing_cert_host_not_allowed", f"signing certificate URL refused: {problem}")
    try:
        signature = base64.b64decode(signature_b64, validate=True)
    except ValueError as exc:  # binascii.Error, or a plain ValueError for non-ASCII text
        raise _refused("invalid_signature", "X-OCI-NS-Signature is not base64") from exc

    key = certificates.public_key(cert_url)
    for signed in _signed_candidates(request):
        try:
            key.verify(signature, signed, padding.PKCS1v15(), hashes.SHA256())
            return
        except InvalidSignature:
            continue
    raise _refused("invalid_signature", "X-OCI-NS-Signature does not match the message")


def _signed_candidates(request: InboundRequest) -> Iterator[bytes]:
    """The exact body first, then, only if that did not verify, the spec's
    ``json.dumps(payload, separators=(",", ":"))`` when it differs from the body.

    A payload the core could just decode may be too deep to encode here, further down the
    stack; no alarm is that deep, so it only has the exact body to match.
    """
    yield request.body
    try:
        compact = json.dumps(request.payload, separators=(",", ":")).encode("utf-8")
    except RecursionError:
        return
    if compact != request.body:
        yield compact


def _refused(code: str, message: str) -> Rejected:
    return Rejected.unauthorized(message, code=code)
