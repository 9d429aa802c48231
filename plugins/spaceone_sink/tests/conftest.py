"""Fixtures: a real HTTP server on 127.0.0.1 standing in for SpaceONE, alerts, sinks."""
from __future__ import annotations

import json
import threading
from collections import deque
from dataclasses import dataclass, field
from datetime import datetime, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from gateway import Alert, Resource
from gateway_spaceone import SpaceoneOptions, SpaceoneSink

WEBHOOK_PATH = "/monitoring/v1/webhook/webhook-abc123/AccessKey16chars/events"


@dataclass
class Recorded:
    path: str
    headers: dict[str, str]
    body: object


@dataclass
class Scripted:
    status: int = 200
    headers: dict[str, str] = field(default_factory=dict)
    body: str = "{}"
    delay: float = 0.0
    drop: bool = False


class FakeSpaceone:
    """Answers each POST with the next scripted response (200 ``{}`` once the queue is empty)."""

    def __init__(self):
        self.requests: list[Recorded] = []
        self._script: deque[Scripted] = deque()
        self._stop = threading.Event()
        fake = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self):
                raw = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                fake.requests.append(Recorded(self.path, dict(self.headers), json.loads(raw)))
                reply = fake._script.popleft() if fake._script else Scripted()
                if reply.drop or (reply.delay and fake._stop.wait(reply.delay)):
                    self.close_connection = True
                    return
                payload = reply.body.encode()
                self.send_response(reply.status)
                for name, value in reply.headers.items():
                    self.send_header(name, value)
                if reply.status not in (204, 304):
                    self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                if reply.status not in (204, 304):
                    self.wfile.write(payload)

            def log_message(self, *args):
                pass

        class Server(ThreadingHTTPServer):
            block_on_close = False

            def handle_error(self, request, client_address):
                pass  # the client hung up after a deliberate timeout

        self._server = Server(("127.0.0.1", 0), Handler)
        self._thread = threading.Thread(target=self._server.serve_forever, args=(0.05,), daemon=True)
        self._thread.start()

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}{WEBHOOK_PATH}"

    def respond(self, status=200, headers=None, body="{}", delay=0.0, drop=False) -> None:
        """Queue one answer; ``delay`` sleeps before it, ``drop`` hangs up without one."""
        self._script.append(Scripted(status, dict(headers or {}), body, delay, drop))

    def stop(self) -> None:
        self._stop.set()
        self._server.shutdown()
        self._server.server_close()


@pytest.fixture
def spaceone():
    server = FakeSpaceone()
    yield server
    server.stop()


@pytest.fixture
def make_sink():
    """Builds sinks from raw options through the schema, as the core's config loader would."""
    sinks = []

    def make(**raw):
        sink = SpaceoneSink("spaceone-test", SpaceoneOptions().load(raw))
        sinks.append(sink)
        return sink

    yield make
    for sink in sinks:
        sink.close()


@pytest.fixture
def make_alert():
    def make(**changes):
        alert = Alert(
            status="firing",
            severity="critical",
            title="CPU 사용률 임계값 초과",
            description="web-01 CPU 95% (임계값 90%)",
            resource=Resource(id="agent-7", name="web-01", type="whatap.Agent"),
            occurred_at=datetime(2024, 1, 15, 10, 30, 0, 123000, tzinfo=timezone.utc),
            labels={"pcode": "12345", "metric_name": "cpu", "metric_value": "95.0"},
            source_key="whatap-prod",
            source_type="whatap",
            fingerprint="9f2c1e0b7a4d4c1e8b3f6a2d5c7e9f01",
            origin="webhook",
        )
        return alert.replace(**changes)

    return make
