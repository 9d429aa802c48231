"""``gateway plugin new``: a plugin distribution in the layout of docs/plugins.md, whose tests pass at once.

The generated type is a worked example to edit, not a stub: a source of a small JSON format
(``id``, ``title``, ``host``, ``check``, ``state``, ``level``) or a sink that POSTs JSON, with
the kit's contract suite and a mapping test already passing on the shipped samples.
"""
from __future__ import annotations

import json
import re
from pathlib import Path
from string import Template

NAME = re.compile(r"^[a-z][a-z0-9_]{0,40}$")

PYPROJECT = """\
[build-system]
requires = ["setuptools>=64"]
build-backend = "setuptools.build_meta"
"""

SETUP_CFG = """\
[metadata]
name = gateway-$name
version = 0.1.0
description = $title $kind for the alert integration gateway

[options]
packages = $package
python_requires = >=3.11
install_requires =
    alert-gateway$requires

[options.package_data]
$package = samples/*

[options.entry_points]
gateway =
    $name = $package
"""

INIT = '''\
"""$title $kind for the alert integration gateway."""
from gateway import hookimpl
from $package.$module import $cls

__all__ = ["$cls", "$hook"]


@hookimpl
def $hook(register):
    register($cls)
'''

SOURCE = '''\
"""$title webhooks as gateway alerts.  Edit the mapping to the vendor's format (README.md)."""
from __future__ import annotations

import hmac
import json

from gateway import Alert, InboundRequest, Rejected, Resource, SourceOptions, SourceType

SEVERITY_BY_LEVEL = {"critical": "critical", "error": "error", "warning": "warning", "info": "info"}


class ${cls}Options(SourceOptions):
    """The common ``token`` (checked in ``verify``) and ``reopen_window``; add the vendor's options here."""


class $cls(SourceType):
    name = "$name"
    options_schema = ${cls}Options
    samples = "samples"

    def verify(self, request: InboundRequest) -> None:
        """The token as a bearer token: the core keeps ``Authorization`` out of the raw journal."""
        token = self.options.get("token")
        presented = request.headers.get("Authorization", "").removeprefix("Bearer ")
        if token and not hmac.compare_digest(presented.encode(), token.encode()):
            raise Rejected.unauthorized("wrong or missing bearer token", code="invalid_token")

    def parse(self, request: InboundRequest) -> list[Alert]:
        payload = request.payload
        if not isinstance(payload, dict):
            raise Rejected.invalid({"$$": "expected a JSON object"})
        missing = {key: "missing" for key in ("id", "title", "check") if not isinstance(payload.get(key), str)
                   or not payload[key]}
        if missing:
            raise Rejected.invalid(missing)
        host = payload.get("host") if isinstance(payload.get("host"), str) else ""
        return [Alert(
            status="resolved" if payload.get("state") == "ok" else "firing",
            severity=SEVERITY_BY_LEVEL.get(str(payload.get("level")).lower(), "warning"),
            title=payload["title"],
            resource=Resource(id=host, name=host, type="$name.Host"),
            labels={"check": payload["check"]},
            external_id=payload["id"],
        )]

    def fingerprint(self, alert: Alert) -> str:
        """The check on its host: a firing and its recovery share it, times and values do not count."""
        return json.dumps([alert.resource.id, alert.labels["check"]])
'''

SINK = '''\
"""Delivers gateway alerts to $title as JSON.  Edit ``body`` to the destination's format (README.md)."""
from __future__ import annotations

from typing import Any, Mapping

import requests
from marshmallow import fields

from gateway import (
    DELIVERY_DEADLINE_SECONDS, Alert, Delivery, Duration, PermanentError, RetryableError, SinkOptions, SinkType,
)
from gateway.http import JsonEndpoint


class ${cls}Options(SinkOptions):
    url = fields.String(required=True, metadata={"secret": True})
    timeout = Duration(load_default=10.0)


def body(alert: Alert) -> dict:
    return {"fingerprint": alert.fingerprint, "status": alert.status, "severity": alert.severity,
            "title": alert.title, "description": alert.description, "resource": alert.resource.name,
            "labels": alert.labels, "occurred_at": alert.occurred_at.isoformat() if alert.occurred_at else None}


class $cls(SinkType):
    name = "$name"
    options_schema = ${cls}Options
    samples = "samples"

    def __init__(self, name: str, options: Mapping[str, Any]):
        super().__init__(name, options)
        self._endpoint = JsonEndpoint(self.options["url"])  # pooled, cut at each delivery's deadline, no retries

    def deliver(self, delivery: Delivery) -> None:
        timeout = min(self.options["timeout"], DELIVERY_DEADLINE_SECONDS, delivery.deadline.remaining())
        try:
            response = self._endpoint.post(body(delivery.alert), delivery.deadline, timeout,
                                           headers={"Idempotency-Key": str(delivery.id)})
        except requests.RequestException as exc:
            raise RetryableError(f"could not reach $title: {exc.__class__.__name__}") from None
        if response.status_code == 429 or response.status_code >= 500:
            raise RetryableError(f"$title answered {response.status_code}", status_code=response.status_code)
        if response.status_code >= 300:
            raise PermanentError(f"$title answered {response.status_code}", status_code=response.status_code,
                                 response=response.text[:500])

    def close(self) -> None:
        self._endpoint.close()
'''

SOURCE_TESTS = '''\
"""The kit's contract on the samples, and the mapping of one sample."""
from gateway.testing import SourceContract
from $package import $cls


class Test${cls}Contract(SourceContract):
    source_type = $cls
    options = {"token": "t0ken"}
    headers = {"Authorization": "Bearer t0ken"}
    refused_headers = [{}, {"Authorization": "Bearer wrong"}]
    recoveries = [("firing.json", "resolved.json")]


def test_the_firing_sample_maps_to_one_alert():
    contract = Test${cls}Contract()
    alert, = contract.source().parse(contract.request(contract.load_samples()["firing.json"], contract.headers))
    assert (alert.status, alert.severity, alert.title) == ("firing", "critical", "Disk almost full on web-1")
    assert (alert.resource.id, alert.labels, alert.external_id) == ("web-1", {"check": "disk"}, "evt-1001")
'''

SINK_TESTS = '''\
"""The kit's contract against a real receiver on 127.0.0.1, and the body it receives."""
from gateway.testing import SinkContract
from $package import $cls


class Test${cls}Contract(SinkContract):
    sink_type = $cls
    retryable_statuses = (429, 500, 502, 503, 504)
    permanent_statuses = (400, 401, 403, 404, 422)

    def options(self, url):
        return {"url": url + "/events"}


def test_the_destination_receives_the_alert(receiver):
    contract = Test${cls}Contract()
    sink, delivery = contract.sink(receiver), next(contract.deliveries())
    sink.deliver(delivery)
    sink.close()
    sent, = receiver.requests
    assert (sent["path"], sent["headers"]["Idempotency-Key"]) == ("/events", str(delivery.id))
    assert (sent["json"]["status"], sent["json"]["title"]) == ("firing", "Disk almost full on web-1")
'''

SOURCE_SAMPLES = {
    "firing.json": {"id": "evt-1001", "title": "Disk almost full on web-1", "host": "web-1", "check": "disk",
                    "state": "alerting", "level": "critical"},
    "resolved.json": {"id": "evt-1002", "title": "Disk almost full on web-1", "host": "web-1", "check": "disk",
                      "state": "ok", "level": "critical"},
}

SINK_SAMPLES = {
    "disk_critical.json": {"status": "firing", "severity": "critical", "title": "Disk almost full on web-1",
                           "resource": {"id": "web-1", "name": "web-1", "type": "host"},
                           "labels": {"check": "disk"}, "occurred_at": "2025-01-02T03:04:05+00:00"},
}

SOURCE_README = """\
# gateway-$name

Source type `$name`: receives $title webhooks at `POST /hooks/$name/<source_key>/`.

## Configuration

```yaml
sources:
  - key: $name-prod
    type: $name
    token: $${${NAME}_TOKEN}
```

| option | default | meaning |
|---|---|---|
| `token` | none | compared with the bearer token (`Authorization: Bearer <token>`); unset = no check |
| `reopen_window` | none | as for every source |

## Mapping

| $title field | becomes |
|---|---|
| `title` (required) | `title` |
| `state` `ok` / anything else | `status` resolved / firing |
| `level` | `severity` (`critical`, `error`, `warning`, `info`; else warning) |
| `host` | `resource.id` and `resource.name` |
| `check` (required) | `labels.check` |
| `id` (required) | `external_id` (idempotency key) |

**Fingerprint.** The host and the check: a firing and its recovery share it.

## Try it

    gateway try $name $package/samples/firing.json --header "Authorization:Bearer t0ken"

## Tests

`pytest tests` runs the gateway's conformance kit on `$package/samples/` and the mapping test.
"""

SINK_README = """\
# gateway-$name

Sink type `$name`: POSTs each alert to $title as JSON.

## Configuration

```yaml
sinks:
  - name: $name
    type: $name
    url: $${${NAME}_URL}
```

| option | default | meaning |
|---|---|---|
| `url` | required, secret | where alerts are POSTed |
| `timeout` | `10s` | per attempt, within the gateway's delivery deadline |
| `max_age`, `max_attempts`, `backoff_initial`, `backoff_max` | | as for every sink |

## Mapping

| alert field | body field |
|---|---|
| `fingerprint` | `fingerprint` |
| `status`, `severity`, `title`, `description` | the same names |
| `resource.name` | `resource` |
| `labels` | `labels` |
| `occurred_at` | `occurred_at` (ISO 8601) |

Answers: 2xx delivered; 429 and 5xx retried; any other status is permanent (dead at once).

## Tests

`pytest tests` runs the gateway's conformance kit against a real receiver on 127.0.0.1.
"""


def write_plugin(name: str, directory: Path, sink: bool = False) -> list[Path]:
    """Write the distribution ``gateway-<name>`` into ``directory`` (new or empty); the files written."""
    if not NAME.match(name):
        raise ValueError(f"plugin name {name!r}: use lower-case letters, digits and _ (starting with a letter)")
    if directory.exists() and any(directory.iterdir()):
        raise ValueError(f"{directory} is not empty")
    package, title = f"gateway_{name}", name.replace("_", " ").title().replace(" ", "")
    kind, module = ("sink", "sink") if sink else ("source", "source")
    values = dict(name=name, NAME=name.upper(), package=package, Title=title, title=title, kind=kind, module=module,
                  cls=title + kind.title(), hook=f"register_{kind}_types",
                  requires="\n    requests>=2.31" if sink else "")
    files = {
        "pyproject.toml": PYPROJECT,
        "setup.cfg": SETUP_CFG,
        "README.md": SINK_README if sink else SOURCE_README,
        f"{package}/__init__.py": INIT,
        f"{package}/{module}.py": SINK if sink else SOURCE,
        f"tests/test_{name}_{kind}.py": SINK_TESTS if sink else SOURCE_TESTS,
    }
    samples = SINK_SAMPLES if sink else SOURCE_SAMPLES
    written = []
    for relative, template in files.items():
        written.append(_write(directory / relative, Template(template).substitute(values)))
    for file_name, sample in samples.items():
        written.append(_write(directory / package / "samples" / file_name, json.dumps(sample, indent=2) + "\n"))
    return written


def _write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path
