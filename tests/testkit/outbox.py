"""The outbox tests' gateway: a ``testsrc`` source routed to the incident store and ``testhttp``
sinks on a test receiver, driven by a dispatcher of the test's own (``OutboxDriver``)."""
from __future__ import annotations

import itertools
from datetime import datetime

from testkit.support import OutboxDriver

WORKER = "test-worker"
FAST = {"backoff_initial": 0.05, "backoff_max": 0.2, "timeout": 2}


def config(**sinks: dict) -> str:
    """gateway.yaml: source ``src`` (testsrc), the incident store and these testhttp sinks, all on the root route."""
    lines = ["sources:", "  - key: src", "    type: testsrc", "sinks:", "  - name: itms", "    type: itms"]
    for name, options in sinks.items():
        lines += [f"  - name: {name}", "    type: testhttp"]
        lines += [f"    {key}: {value}" for key, value in {**FAST, **options}.items()]
    lines += ["route:", f"  sinks: [itms, {', '.join(sinks)}]"]
    return "\n".join(lines) + "\n"


def at(text: str) -> datetime:
    return datetime.fromisoformat(text)


class Gateway(OutboxDriver):
    """Alerts from the test source, with the problem as their fingerprint."""

    def __init__(self, app, lease: float):
        super().__init__(app, WORKER, lease)
        self._ids = itertools.count(1)

    def post(self, problem: str, status: str = "firing") -> int:
        """Ingest one alert (its fingerprint is ``problem``); returns the alert id."""
        r = self.client.post("/hooks/testsrc/src/", json={
            "id": str(next(self._ids)), "title": f"{problem} {status}", "problem": problem, "status": status})
        assert r.status_code == 202, r.json
        return r.json["alerts"][0]

    def row(self, alert_id: int, sink: str) -> dict:
        (found,) = [row for row in self.deliveries(sink=sink) if row["alert_id"] == alert_id]
        return found


def gateway_maker(make_app, receiver):
    """The ``gateway`` fixture's value: gateway(lease=5, **sinks), sinks mapping a name to options
    (``path`` on the receiver, default ``/NAME``)."""

    def make(lease: float = 5.0, **sinks) -> Gateway:
        sinks = {name: dict(options) for name, options in (sinks or {"hook": {}}).items()}
        for name, options in sinks.items():
            options.setdefault("url", f"{receiver.url}{options.pop('path', '/' + name)}")
        return Gateway(make_app(config(**sinks)), lease)

    return make
