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
    """Payload: {"id", "title", "problem", "group"?, "status", "severity", "at"?, "alerts"?: [...]}.

    ``{"crash": true}`` makes ``parse`` fail the way a buggy plugin would (not ``Rejected``).
    An ``X-Delivery-Id`` header is the delivery's own id, as OCI's message id is.
    """

    name = "testsrc"

    def verify(self, request):
        token = self.options.get("token")
        if token and request.headers.get("X-Test-Token") != token:
            raise Rejected.unauthorized("wrong or missing X-Test-Token")

    def delivery_id(self, request):
        return request.headers.get("X-Delivery-Id")

    def handshake(self, request):
        if isinstance(request.payload, dict) and request.payload.get("hello"):
            return Reply(200, {"status": "hello"}, record={"kind": "hello", "from": request.payload["hello"]})
        return None

    def handshake_preview(self, request):
        hello = self.handshake(request)  # it calls nothing out: answering is its own preview
        return f"a hello from {hello.record['from']}: answered {hello.status}" if hello else None

    def parse(self, request):
        payload = request.payload
        if not isinstance(payload, dict):
            raise Rejected.invalid({"$": "expected a JSON object"})
        if payload.get("crash"):
            raise KeyError("a plugin bug")
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
                labels={"problem": item.get("problem", item["title"]), **({"group": item["group"]} if "group" in item else {})},
                external_id=str(item["id"]),
            )
            for item in items
        ]

    def fingerprint(self, alert):
        return alert.labels["problem"]

    def group(self, alert):
        return alert.labels.get("group")


class HttpSinkOptions(SinkOptions):
    url = fields.String(required=True)
    timeout = fields.Float(load_default=2.0)
    broken_accepts = fields.Boolean(load_default=False)  # a sink with a bug on the ingest path


class HttpSink(SinkType):
    """POSTs {"delivery", "fingerprint", "status", "title", "origin"}; 5xx retry, other 4xx permanent."""

    name = "testhttp"
    options_schema = HttpSinkOptions

    def accepts(self, alert):
        if self.options["broken_accepts"]:
            raise ValueError(f"a sink bug on {alert.title!r}")
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


# -- helpers for tests that need more than fixtures (other processes, other distributions) --


def write_distribution(directory, name: str, entry_points: dict[str, str], modules: dict[str, str] | None = None):
    """Make ``directory`` hold an installed distribution (``*.dist-info``), as pip would leave it.

    ``entry_points`` maps names in the ``gateway`` group to modules; ``modules`` maps module
    names to their source.  Put ``directory`` on ``sys.path`` (or ``PYTHONPATH``) to install it.
    """
    from pathlib import Path

    directory = Path(directory)
    info = directory / f"{name.replace('-', '_')}-1.0.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: 1.0\n")
    lines = "".join(f"{ep} = {module}\n" for ep, module in entry_points.items())
    (info / "entry_points.txt").write_text(f"[gateway]\n{lines}")
    for module, source in (modules or {}).items():
        (directory / f"{module}.py").write_text(source)
    return directory


def install_testkit(directory):
    """Install this module as the distribution ``gateway-testkit``, for ``gateway`` subprocesses and the CLI."""
    return write_distribution(directory, "gateway-testkit", {"testkit": "testkit"})


def metric(text: str, name: str, **labels: str) -> float:
    """One sample's value from Prometheus text (0 when absent: counters start unseen)."""
    from prometheus_client.parser import text_string_to_metric_families

    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name and sample.labels == labels:
                return sample.value
    return 0.0


def post_when_released(database_url: str, config_path: str, barrier, results, posts: list) -> None:
    """Run in a spawned process: build an app of its own, wait for the others, then make its POSTs.

    ``posts`` holds ``(path, body bytes, headers)``; the answers go to ``results`` as one list.
    """
    import sys

    from gateway.app import create_app

    app = create_app({"DATABASE_URL": database_url, "CONFIG": config_path, "TESTING": True},
                     extra_plugins=[sys.modules[__name__]])
    client = app.test_client()
    barrier.wait(timeout=60)
    results.put([(r.status_code, r.get_json())
                 for r in (client.post(path, data=body, headers=headers) for path, body, headers in posts)])
    app.extensions["gateway"].engine.dispose()


def race(database_url: str, config_path: str, batches: list[list]) -> list[tuple[int, dict]]:
    """Post each batch from a process of its own, all released at once (gunicorn workers are
    processes); returns every answer.  A batch is a list of ``(path, body bytes, headers)``."""
    import multiprocessing

    ctx = multiprocessing.get_context("spawn")
    barrier, results = ctx.Barrier(len(batches)), ctx.Queue()
    processes = [ctx.Process(target=post_when_released, args=(database_url, config_path, barrier, results, batch))
                 for batch in batches]
    for process in processes:
        process.start()
    answers = [answer for _ in processes for answer in results.get(timeout=120)]
    for process in processes:
        process.join(timeout=30)
        assert process.exitcode == 0
    return answers
