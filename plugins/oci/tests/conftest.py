"""Shared fixtures: requests as the core builds them, configured sources, and a real local
HTTP server standing in for OCI (confirmation endpoint, certificate host)."""
from __future__ import annotations

import base64
import datetime as dt
import json
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import urlsplit

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from cryptography.x509.oid import NameOID

from gateway import Headers, InboundRequest
from gateway_oci import OciSource
from gateway_oci.options import OciOptions

PAYLOADS = Path(__file__).parents[1] / "gateway_oci" / "samples"
RECEIVED_AT = dt.datetime(2025, 10, 27, 11, 4, 5, tzinfo=dt.timezone.utc)


@pytest.fixture
def load_payload():
    """A sample payload (gateway_oci/samples), decoded."""
    return lambda name: json.loads((PAYLOADS / name).read_text())


@pytest.fixture
def make_request():
    """An InboundRequest as the core builds it: ``body`` holds exact bytes, ``payload`` the JSON."""

    def make(payload=None, headers=None, body: bytes | None = None) -> InboundRequest:
        if body is None:
            body = json.dumps(payload).encode()
        return InboundRequest(
            method="POST",
            path="/hooks/oci/oci-seoul/",
            headers=Headers(headers or {}),
            body=body,
            payload=json.loads(body),
            remote_addr="203.0.113.9",
            received_at=RECEIVED_AT,
        )

    return make


@pytest.fixture
def make_source():
    """An OciSource whose options went through the schema, as the core loads them."""
    return lambda **options: OciSource("oci-seoul", OciOptions().load(options))


@dataclass
class Answer:
    status: int = 200
    body: bytes = b'{"ok": true}'
    headers: dict = field(default_factory=dict)
    delay: float = 0.0


@dataclass
class Received:
    method: str
    path: str


class LocalServer:
    """OCI's stand-in on 127.0.0.1: answers scripted routes and records every request it gets."""

    def __init__(self):
        self.requests: list[Received] = []
        self._routes: dict[str, list[Answer]] = {}
        self._lock = threading.Lock()
        self._httpd = _Server(("127.0.0.1", 0), _Handler)
        self._httpd.owner = self
        self.port = self._httpd.server_address[1]
        threading.Thread(target=self._httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()

    def stop(self) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()

    def url(self, path_and_query: str) -> str:
        return f"http://127.0.0.1:{self.port}{path_and_query}"

    def route(self, path: str, *answers: int | dict) -> None:
        """Answer ``path`` with ``answers`` in turn (a status, or ``Answer`` fields); the last one repeats."""
        self._routes[path] = [Answer(a) if isinstance(a, int) else Answer(**a) for a in answers]

    def next_answer(self, path: str) -> Answer:
        with self._lock:
            answers = self._routes.get(urlsplit(path).path)
            if not answers:
                return Answer(404, b"{}")
            return answers.pop(0) if len(answers) > 1 else answers[0]


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request, client_address):
        """A client that timed out closes the socket mid-answer; that is expected here."""


class _Handler(BaseHTTPRequestHandler):
    def _answer(self):
        server: LocalServer = self.server.owner
        server.requests.append(Received(self.command, self.path))
        answer = server.next_answer(self.path)
        time.sleep(answer.delay)
        self.send_response(answer.status)
        for name, value in answer.headers.items():
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(answer.body)))
        self.end_headers()
        self.wfile.write(answer.body)

    do_GET = do_POST = do_CONNECT = _answer

    def log_message(self, *args):
        pass


@pytest.fixture
def local_server(monkeypatch):
    """A running LocalServer that also catches anything meant for the internet.

    It is made the HTTP(S) proxy for every host but loopback, so a request the SSRF
    guard should have stopped shows up in ``requests`` (as a proxied GET or a CONNECT)
    instead of leaving the machine.
    """
    server = LocalServer()
    for var in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "https_proxy", "all_proxy"):
        monkeypatch.setenv(var, server.url(""))
    for var in ("NO_PROXY", "no_proxy"):
        monkeypatch.setenv(var, "127.0.0.1,localhost,::1")
    yield server
    server.stop()


@dataclass
class Signer:
    pem: bytes
    key: rsa.RSAPrivateKey

    def sign(self, data: bytes) -> str:
        return base64.b64encode(self.key.sign(data, padding.PKCS1v15(), hashes.SHA256())).decode()


@pytest.fixture(scope="session")
def signer() -> Signer:
    """A fresh RSA key and self-signed certificate, standing in for ONS's signing certificate."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "notification.ap-seoul-1.oci.oraclecloud.com")])
    now = dt.datetime.now(dt.timezone.utc)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name).issuer_name(name).public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(days=1)).not_valid_after(now + dt.timedelta(days=30))
        .sign(key, hashes.SHA256())
    )
    return Signer(cert.public_bytes(serialization.Encoding.PEM), key)
