"""WhaTap "Webhook JSON" notifications as gateway alerts.

WhaTap publishes no schema; the field list comes from consumers of the live feed
(``formats.md`` section 1), so unknown keys are ignored and every optional key may be
absent or null.  WhaTap signs nothing, so a shared token is the only authentication.
"""
from __future__ import annotations

import hashlib
import hmac
import json
import re
from datetime import datetime, timedelta, timezone
from typing import Any, Optional

from gateway import Alert, InboundRequest, Rejected, Resource, SourceOptions, SourceType

SEVERITY_BY_LEVEL = {
    "critical": "critical",
    "fatal": "critical",
    "error": "error",
    "warning": "warning",
    "warn": "warning",
    "info": "info",
}
DEFAULT_SEVERITY = "warning"
"""For a missing or unknown ``level``: it still deserves attention, but must not page as critical."""

_RECOVERED_PREFIX = re.compile(r"^\s*RECOVERED(?:\s*:\s*|\s+)", re.IGNORECASE)
_EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)
_WWW_AUTHENTICATE = {"WWW-Authenticate": 'Basic realm="gateway", charset="UTF-8"'}


class WhatapOptions(SourceOptions):
    """WhaTap needs nothing beyond the common ``token`` and ``reopen_window``."""


class WhatapSource(SourceType):
    name = "whatap"
    display_name = "WhaTap (와탭)"
    fingerprint_fields = ("pcode", "oid", "metric_name", "title")
    options_schema = WhatapOptions

    def verify(self, request: InboundRequest) -> None:
        """Accept the token from ``X-Webhook-Token`` or, for senders that cannot set headers,
        as the HTTP Basic password (any user)."""
        token = self.options.get("token")
        if not token:
            return
        presented = request.headers.get("X-Webhook-Token") or (request.headers.basic_credentials() or ("", ""))[1]
        if not presented:
            raise Rejected.unauthorized(
                "missing token: send it in the X-Webhook-Token header or as the HTTP Basic password",
                code="missing_token",
                headers=_WWW_AUTHENTICATE,
            )
        if not hmac.compare_digest(presented.encode("utf-8"), token.encode("utf-8")):
            raise Rejected.unauthorized(
                "invalid token: it does not match this source's token",
                code="invalid_token",
                headers=_WWW_AUTHENTICATE,
            )

    def parse(self, request: InboundRequest) -> list[Alert]:
        payload = request.payload
        if not isinstance(payload, dict):
            raise Rejected.invalid({"$": "expected a JSON object"})

        errors: dict[str, str] = {}

        def read(key: str, convert, required: bool = False) -> Any:
            value = payload.get(key)
            if value is None or (required and isinstance(value, str) and not value.strip()):
                if required:
                    errors[key] = "missing"
                return None
            try:
                return convert(value)
            except ValueError as exc:
                errors[key] = str(exc)
                return None

        title = read("title", _text, required=True)
        pcode = read("pcode", _integer, required=True)
        uuid = read("uuid", _text)
        occurred_at = read("time", _epoch_millis)
        text = {key: read(key, _text) for key in (
            "projectName", "oid", "oname", "message", "level", "status",
            "metricName", "metricValue", "metricThreshold",
        )}
        if errors:
            raise Rejected.invalid(errors)

        status = (text["status"] or "").strip().lower()
        labels = {
            "pcode": str(pcode),
            "project_name": text["projectName"],
            "oid": text["oid"],
            "oname": text["oname"],
            "level": text["level"],
            "status": text["status"],
            "metric_name": text["metricName"],
            "metric_value": text["metricValue"],
            "metric_threshold": text["metricThreshold"],
            "uuid": uuid,
        }
        return [Alert(
            status="resolved" if _is_recovery(status, title, text["message"]) else "firing",
            severity=SEVERITY_BY_LEVEL.get((text["level"] or "").strip().lower(), DEFAULT_SEVERITY),
            title=title,
            description=text["message"] or "",
            resource=Resource(id=text["oid"] or "", name=text["oname"] or "", type="whatap.Agent"),
            occurred_at=occurred_at if occurred_at is not None else request.received_at,
            labels={k: v for k, v in labels.items() if v is not None},
            external_id=f"{uuid}:{status}" if uuid else _notification_key(payload, status),
        )]

    def fingerprint(self, alert: Alert) -> str:
        """sha256 of ``pcode, oid, metricName, title`` (the guide's dedupe key).

        A recovery may prefix its title with ``RECOVERED:``; that prefix is dropped so the
        recovery lands on its alert's incident.
        """
        labels = alert.labels
        key = [
            "whatap",
            labels.get("pcode", ""),
            labels.get("oid", ""),
            labels.get("metric_name", ""),
            _RECOVERED_PREFIX.sub("", alert.title, count=1),
        ]
        canonical = json.dumps(key, ensure_ascii=False, separators=(",", ":"))
        return hashlib.sha256(canonical.encode("utf-8")).hexdigest()


def _notification_key(payload: dict, status: str) -> str:
    """The idempotency key of a body without ``uuid`` (WhaTap's published format has none): the
    fields that tell one notification from another, so a redelivery of it is a duplicate."""
    key = [payload.get(name) for name in ("pcode", "oid", "metricName", "title")] + [status, payload.get("time")]
    canonical = json.dumps(key, ensure_ascii=False, separators=(",", ":"), default=str)
    return "notification:" + hashlib.sha256(canonical.encode("utf-8", "surrogatepass")).hexdigest()


_TEMPLATE_RECOVERY = re.compile(r"^\s*Event Message\s*:\s*RECOVERED\b", re.IGNORECASE | re.MULTILINE)
"""WhaTap's Common Alert Template puts the event message on a ``Key: Value`` line of its own."""


def _is_recovery(status: str, title: str, message: Optional[str]) -> bool:
    """Only ``on`` means firing; WhaTap's stateful recoveries may instead (or also) say
    ``RECOVERED:`` at the start of the text, or on the template's ``Event Message:`` line."""
    if status not in ("", "on"):
        return True
    if any(text.lstrip().upper().startswith("RECOVERED") for text in (title, message or "")):
        return True
    return bool(message and _TEMPLATE_RECOVERY.search(message))


def _text(value: Any) -> str:
    """Strings as-is; numbers as text, since WhaTap sends e.g. ``metricValue`` either way."""
    if isinstance(value, str):
        return value
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return str(value)
    raise ValueError("must be a string")


def _integer(value: Any) -> int:
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    if isinstance(value, str) and value.strip().isascii() and value.strip().isdecimal():
        return int(value)
    raise ValueError("must be an integer")


def _epoch_millis(value: Any) -> datetime:
    try:
        if isinstance(value, bool) or not isinstance(value, (int, float, str)):
            raise ValueError
        millis = float(value) if isinstance(value, str) else value
        return _EPOCH + timedelta(milliseconds=millis)
    except (OverflowError, ValueError):
        raise ValueError("must be a number (epoch milliseconds)") from None
