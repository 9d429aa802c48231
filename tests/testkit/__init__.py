"""A test-only plugin: a minimal source and an HTTP sink, registered the way any plugin is.

The core tests use these instead of the bundled vendors so that they prove the
contract itself: whatever passes here works for a third-party plugin too.
"""
from __future__ import annotations

from datetime import datetime

import requests
from marshmallow import fields

from gateway import (
    Alert, PermanentError, Rejected, Reply, Resource, RetryableError, SinkOptions, SinkType, SourceType, hookimpl,
)


class EchoSource(SourceType):
    """Payload: {"id", "title", "problem", "status", "severity", "at"?, "alerts"?: [...]}."""

    name = "testsrc"

    def verify(self, request):
        token = self.options.get("token")
        if token and request.headers.get("X-Test-Token") != token:
            raise Rejected.unauthorized("wrong or missing X-Test-Token")

    def handshake(self, request):
        if isinstance(request.payload, dict) and request.payload.get("hello"):
            return Reply(200, {"status": "hello"}, record={"kind": "hello", "from": request.payload["hello"]})
        return None

    def parse(self, request):
        payload = request.payload
        if not isinstance(payload, dict):
            raise Rejected.invalid({"$": "expected a JSON object"})
        items = payload.get("alerts", [payload])
        missing = {name: "missing" for name in ("id", "title") if any(not item.get(name) for item in items)}
        if missing:
            raise Rejected.invalid(missing)
        return [
            Alert(
                status=item.get("status", "firing"), severity=item.get("severity", "warning"),
                title=item["title"], description=item.get("description", ""),
                resource=Resource(item.get("resource", ""), item.get("resource", ""), "test"),
                occurred_at=datetime.fromisoformat(item["at"]) if item.get("at") else None,
                labels={"problem": item.get("problem", item["title"])}, external_id=str(item["id"]),
            )
            for item in items
        ]

    def fingerprint(self, alert):
        return alert.labels["problem"]


class HttpSinkOptions(SinkOptions):
    url = fields.String(required=True)
    timeout = fields.Float(load_default=2.0)


class HttpSink(SinkType):
    """POSTs {"delivery", "fingerprint", "status", "title", "origin"}; 5xx retry, other 4xx permanent."""

    name = "testhttp"
    options_schema = HttpSinkOptions

    def accepts(self, alert):
        return True

    def deliver(self, delivery):
        alert = delivery.alert
        body = {"delivery": delivery.id, "attempt": delivery.attempt, "fingerprint": alert.fingerprint,
                "status": alert.status, "title": alert.title, "origin": alert.origin}
        try:
            response = requests.post(self.options["url"], json=body, timeout=self.options["timeout"])
        except requests.RequestException as exc:
            raise RetryableError(f"connection failed: {exc.__class__.__name__}") from exc
        if response.status_code >= 500 or response.status_code == 429:
            retry_after = response.headers.get("Retry-After")
            raise RetryableError(f"answered {response.status_code}", status_code=response.status_code,
                                 retry_after=float(retry_after) if retry_after else None)
        if response.status_code >= 300:
            raise PermanentError(f"answered {response.status_code}", status_code=response.status_code,
                                 response=response.text)


@hookimpl
def register_source_types(register):
    register(EchoSource)


@hookimpl
def register_sink_types(register):
    register(HttpSink)
