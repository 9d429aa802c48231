"""Prometheus Alertmanager webhook notifications (``webhook_configs``, payload version 4) as alerts.

One notification carries a group of alerts; each becomes an alert of its own, identified by
its label set, which is what Alertmanager itself identifies an alert by, and a malformed one
is refused alone.  Alertmanager sends no delivery id and re-sends a whole group, byte for
byte, on every ``repeat_interval``, so each alert's idempotency key is its label fingerprint,
status and the time its firing began.  Annotations, ``generatorURL`` and Alertmanager's own
fingerprint are metadata (annotations and links), never labels.
"""
from __future__ import annotations

import hashlib
import hmac
import json
from datetime import datetime
from typing import Any, Optional

from marshmallow import fields, validate

from gateway import SEVERITIES, Alert, InboundRequest, Link, Refused, Rejected, Resource, SourceOptions, SourceType

DEFAULT_SEVERITY_MAP = {
    "critical": "critical", "page": "critical", "fatal": "critical",
    "error": "error", "high": "error", "major": "error",
    "warning": "warning", "warn": "warning", "medium": "warning", "minor": "warning",
    "info": "info", "informational": "info", "low": "info", "none": "info",
}
"""``labels.severity`` values in common use in Prometheus rule sets, lower-cased."""

FINGERPRINT_ANNOTATION = "alertmanager.fingerprint"
"""Where Alertmanager's own fingerprint goes: a dotted name, which no rule's annotation can have."""

_CHALLENGE = {"WWW-Authenticate": 'Bearer realm="gateway", Basic realm="gateway"'}


class AlertmanagerOptions(SourceOptions):
    """``token`` is checked as the bearer credential (``http_config.authorization``) or the Basic password."""

    username = fields.String(load_default=None, allow_none=True)
    severity_map = fields.Dict(keys=fields.String(), values=fields.String(validate=validate.OneOf(SEVERITIES)),
                               load_default=dict)
    default_severity = fields.String(load_default="warning", validate=validate.OneOf(SEVERITIES))
    resource_label = fields.String(load_default="instance", validate=validate.Length(min=1))


class AlertmanagerSource(SourceType):
    name = "alertmanager"
    samples = "samples"
    options_schema = AlertmanagerOptions

    def verify(self, request: InboundRequest) -> None:
        token = self.options.get("token")
        if not token:
            return
        scheme, _, credentials = request.headers.get("Authorization", "").strip().partition(" ")
        if scheme.lower() == "bearer":
            presented, user = credentials.strip(), None
        else:
            user, presented = request.headers.basic_credentials() or (None, "")
        if not presented:
            raise Rejected.unauthorized("missing credentials: send the token as a bearer token or Basic password",
                                        code="missing_token", headers=_CHALLENGE)
        expected_user = self.options.get("username")
        if not hmac.compare_digest(presented.encode(), token.encode()) or (
                expected_user is not None and user is not None and user != expected_user):
            raise Rejected.unauthorized("invalid credentials for this source", code="invalid_token",
                                        headers=_CHALLENGE)

    def parse(self, request: InboundRequest) -> list[Alert | Refused]:
        """One item per ``alerts[]`` entry, in order: an alert, or a ``Refused`` naming its bad fields."""
        payload = request.payload
        if not isinstance(payload, dict) or not isinstance(payload.get("alerts"), list):
            raise Rejected.invalid({"alerts": "expected a JSON object with an alerts list"})
        return [self._alert(item, f"alerts[{index}]") for index, item in enumerate(payload["alerts"])]

    def _alert(self, item: Any, where: str) -> Alert | Refused:
        if not isinstance(item, dict):
            return Refused({where: "expected an object"})
        labels = item.get("labels")
        if not isinstance(labels, dict) or not labels or not all(isinstance(v, str) for v in labels.values()):
            return Refused({f"{where}.labels": "expected a non-empty object of strings"})
        errors: dict[str, str] = {}
        raw_annotations = item.get("annotations") if isinstance(item.get("annotations"), dict) else {}
        annotations = {name: value for name, value in raw_annotations.items() if isinstance(value, str)}
        status = item.get("status")
        if status not in ("firing", "resolved"):
            errors[f"{where}.status"] = "must be firing or resolved"
        started = _time(item.get("startsAt"), f"{where}.startsAt", errors)
        ended = _time(item.get("endsAt"), f"{where}.endsAt", errors) if status == "resolved" else None
        title = _first_text(annotations.get("summary"), annotations.get("title"), labels.get("alertname"))
        if not title:
            errors[f"{where}.labels.alertname"] = "missing (and no summary annotation)"
        if errors:
            return Refused(errors)
        if isinstance(item.get("fingerprint"), str) and item["fingerprint"]:
            annotations[FINGERPRINT_ANNOTATION] = item["fingerprint"]
        severity = (labels.get("severity") or "").strip().lower()
        target = labels.get(self.options["resource_label"], "")
        return Alert(
            status=status,
            severity={**DEFAULT_SEVERITY_MAP, **self.options["severity_map"]}.get(
                severity, self.options["default_severity"]),
            title=title,
            description=_first_text(annotations.get("description"), annotations.get("message")) or "",
            resource=Resource(id=target, name=target, type=labels.get("job", "")),
            occurred_at=ended or started,
            labels=dict(labels),
            annotations=annotations,
            links=[Link(title, url) for title, url in (
                ("Prometheus", item.get("generatorURL")), ("Runbook", annotations.get("runbook_url")))
                if Link.allowed(url)],
            external_id=f"{label_fingerprint(labels)}:{status}:{item.get('startsAt')}",
        )

    def fingerprint(self, alert: Alert) -> str:
        """The alert's label set, as Alertmanager identifies an alert; firing and resolved share it."""
        return label_fingerprint(alert.labels)


def label_fingerprint(labels: dict[str, str]) -> str:
    canonical = json.dumps(sorted(labels.items()), ensure_ascii=False, separators=(",", ":"))
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()


def _time(value: Any, where: str, errors: dict[str, str]) -> Optional[datetime]:
    if not isinstance(value, str):
        errors[where] = "missing"
        return None
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        errors[where] = "must be an RFC 3339 time"
        return None
    if moment.tzinfo is None:
        errors[where] = "must carry a time zone"
        return None
    return moment


def _first_text(*values: Any) -> Optional[str]:
    return next((v.strip() for v in values if isinstance(v, str) and v.strip()), None)
