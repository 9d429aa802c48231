"""A SpaceONE stand-in: a real HTTP server on 127.0.0.1 that treats events the way SpaceONE does.

It follows the code, not a summary of it:

- cloudforet-io/monitoring ``interface/rest/v1/event.py``: ``POST /monitoring/v1/webhook/
  {webhook_id}/{access_key}/events`` answers ``{}`` once the events are stored.
- ``service/event_service.py``: a wrong access key is 403 ``ERROR_PERMISSION_DENIED``; a
  webhook in state DISABLED is ``ERROR_WEBHOOK_STATE_DISABLED`` (an ``ERROR_INVALID_ARGUMENT``,
  400); a body the plugin cannot parse becomes an ERROR alert and the answer is still 200.
  An event joins the alert of the latest non-RECOVERY event of its key created in the last
  600 s (``manager/event_manager.py``, ``SAME_EVENT_TIME``), unless that alert is RESOLVED;
  a RECOVERY resolves it only when the project's ``recovery_mode`` is AUTO.  With no such
  alert, a RECOVERY is skipped and anything else opens a new alert.
- python-core ``fastapi/api.py``: errors answer ``{"detail": {"code", "message"}}``.
- plugin-api-direct-mon-webhook ``model/event_response_model.py``: ``event_key`` and
  ``title`` are required, ``event_type`` and ``severity`` take fixed values;
  ``info/event_info.py`` passes on no ``image_url``.

"Now" is the gateway's own clock (``gateway.clock``), so a test moves both together.
"""
from __future__ import annotations

import itertools
import json
import re
import threading
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Optional

from gateway import clock

MATCH_WINDOW = timedelta(seconds=600)
EVENT_TYPES = ("ALERT", "RECOVERY", "ERROR")
SEVERITIES = ("CRITICAL", "ERROR", "WARNING", "INFO", "NOT_AVAILABLE")
PASSED_ON = ("event_key", "event_type", "title", "description", "severity", "provider", "account", "resource",
             "rule", "occurred_at", "additional_info")
"""What api-direct's EventInfo carries to the monitoring service."""
PATH = re.compile(r"^/monitoring/v1/webhook/(?P<webhook_id>[^/]+)/(?P<access_key>[^/]+)/events/?$")


@dataclass
class SpaceoneAlert:
    alert_id: int
    event_key: str
    title: str
    state: str  # TRIGGERED, RESOLVED or ERROR
    events: list[dict] = field(default_factory=list)


class SpaceoneStandIn:
    """One project with one api-direct webhook; ``state`` and ``recovery_mode`` can be changed."""

    def __init__(self, webhook_id: str = "webhook-3f9a", access_key: str = "AccessKey16chars"):
        self.webhook_id, self.access_key = webhook_id, access_key
        self.state = "ENABLED"
        self.recovery_mode = "AUTO"
        self.failures: list[int] = []
        """Statuses to answer before handling the next requests (an outage), one per request."""
        self.alerts: list[SpaceoneAlert] = []
        self.events: list[dict] = []
        self.requests: list[dict] = []
        self._ids = itertools.count(1)
        self._lock = threading.Lock()
        stand_in = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_POST(self):
                raw = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                with stand_in._lock:
                    status, body = stand_in._receive(self.path, raw)
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}/monitoring/v1/webhook/{self.webhook_id}/{self.access_key}/events"

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    def open_alerts(self) -> list[SpaceoneAlert]:
        return [a for a in self.alerts if a.state == "TRIGGERED"]

    # -- the monitoring service --------------------------------------------------------

    def _receive(self, path: str, raw: bytes) -> tuple[int, dict]:
        now = clock.now()
        try:
            data = json.loads(raw)
        except ValueError:
            data = None
        self.requests.append({"at": now, "path": path, "json": data})
        if self.failures:
            return self.failures.pop(0), {"detail": {"code": "ERROR_UNKNOWN", "message": "unavailable"}}
        match = PATH.match(path)
        if match is None or match["webhook_id"] != self.webhook_id:
            return _error(400, "ERROR_NOT_FOUND", f"Value not found. (webhook_id = {match and match['webhook_id']})")
        if match["access_key"] != self.access_key:
            return _error(403, "ERROR_PERMISSION_DENIED", "Permission denied.")
        if self.state == "DISABLED":
            return _error(400, "ERROR_WEBHOOK_STATE_DISABLED",
                          f"Webhook state is disabled. (webhook_id = {self.webhook_id})")
        if data is None:
            return _error(500, "ERROR_UNKNOWN", "JSON Parsing Error: Request body requires JSON format.")
        event = _parse(data)
        if event is None:  # the plugin failed: SpaceONE raises an ERROR alert of its own and answers 200
            event = {"event_key": f"error-{next(self._ids)}", "event_type": "ERROR", "severity": "CRITICAL",
                     "title": "Webhook Event Parsing Error - api-direct"}
        self._create_event(event, now)
        return 200, {}

    def _create_event(self, event: dict, now: datetime) -> None:
        event = {**event, "created_at": now}
        match = self._latest(event["event_key"], now)
        if match is not None and match.state != "RESOLVED":
            if event["event_type"] == "RECOVERY" and self.recovery_mode == "AUTO":
                match.state = "RESOLVED"
            alert = match
        elif event["event_type"] == "RECOVERY":
            return  # "Skip health event"
        else:
            alert = SpaceoneAlert(next(self._ids), event["event_key"], event["title"],
                                  "ERROR" if event["event_type"] == "ERROR" else "TRIGGERED")
            self.alerts.append(alert)
        event["alert"] = alert
        alert.events.append(event)
        self.events.append(event)

    def _latest(self, event_key: str, now: datetime) -> Optional[SpaceoneAlert]:
        for event in reversed(self.events):
            if (event["event_key"] == event_key and event["event_type"] != "RECOVERY"
                    and event["created_at"] >= now - MATCH_WINDOW):
                return event["alert"]
        return None


def _error(status: int, code: str, message: str) -> tuple[int, dict]:
    return status, {"detail": {"code": code, "message": message}}


def _parse(data) -> Optional[dict]:
    """api-direct's EventModel: the event it passes on, or None when validation fails."""
    if not isinstance(data, dict):
        return None
    event = {key: data[key] for key in PASSED_ON if key in data}
    event.setdefault("event_type", "ALERT")
    strings = ("event_key", "title", "description", "rule", "provider", "account")
    if (not all(isinstance(event.get(key), str) and event[key] for key in ("event_key", "title"))
            or any(key in event and not isinstance(event[key], str) for key in strings)
            or event["event_type"] not in EVENT_TYPES
            or event.get("severity") not in (None, *SEVERITIES)
            or not isinstance(event.get("resource", {}), dict)
            or not isinstance(event.get("additional_info", {}), dict)
            or not all(isinstance(v, str) for v in event.get("additional_info", {}).values())):
        return None
    if "occurred_at" in event:
        try:
            datetime.fromisoformat(event["occurred_at"])
        except (TypeError, ValueError):
            return None
    return event
