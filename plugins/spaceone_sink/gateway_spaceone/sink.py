"""Forwards alerts to a SpaceONE (Cloudforet) monitoring webhook as api-direct events.

The SpaceONE webhook must use ``plugin-api-direct-mon-webhook``: the HTTP body we POST
becomes the plugin's ``data`` and is taken as one ``EventInfo``.  SpaceONE matches an
event to an alert only through an event of the same ``event_key`` received in the last
600 seconds, so the sink tracks problems (``SinkType.tracks_problems``): each open period
of a problem has its own key, and the core re-sends the period's firing every
``refresh_interval`` so that its RECOVERY still finds the alert, however long it lasts.
A recovery of a whole group (an OCI alarm's OK naming no stream) comes once per open member,
each under that member's key (``Delivery.fingerprint``).
"""
from __future__ import annotations

import json
import logging
import re
import time
from datetime import datetime, timezone
from email.utils import parsedate_to_datetime
from typing import Any, Mapping, Optional
from urllib.parse import urlsplit

import requests
from marshmallow import ValidationError, fields, validate

from gateway import (
    DELIVERY_DEADLINE_SECONDS,
    Alert,
    Delivery,
    Duration,
    PermanentError,
    RetryableError,
    SinkOptions,
    SinkType,
)
from gateway.http import JsonEndpoint

log = logging.getLogger(__name__)

SEVERITY = {"critical": "CRITICAL", "error": "ERROR", "warning": "WARNING", "info": "INFO"}
"""Normalized severity -> SpaceONE severity; anything else is ``NOT_AVAILABLE``."""

EVENT_TYPE = {"firing": "ALERT", "resolved": "RECOVERY"}

PROVIDERS = {"oci": "oracle_cloud", "whatap": "whatap"}
"""Source type -> Cloudforet's provider id; another source type is sent as itself."""

MATCH_WINDOW = 600.0
"""Seconds SpaceONE looks back for an event of the same key (its ``SAME_EVENT_TIME``)."""

WEBHOOK_DISABLED = "ERROR_WEBHOOK_STATE_DISABLED"

WEBHOOK_PATH = re.compile(r"^/monitoring/v1/webhook/(?P<webhook_id>[^/]+)/(?P<access_key>[^/]+)/events/?$")
"""The path SpaceONE returns as ``webhook_url`` when a webhook is created."""

RESPONSE_LIMIT = 2000
"""Characters of a response body kept on a delivery error."""

POOL_SIZE = 10
"""Connections kept per sink: one host, used by several dispatcher threads at most."""

MAX_TIMEOUT = DELIVERY_DEADLINE_SECONDS
"""Largest ``timeout``: the core cuts every delivery at its deadline anyway."""

_HEADER_NAME = re.compile(r"^[!#$%&'*+.^_`|~0-9A-Za-z-]+$")


def _validate_url(url: str) -> None:
    """Reject what can never work; only warn about an unusual path (proxies may rewrite it)."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https"):
        raise ValidationError(f"must be an http(s) URL, got scheme {parts.scheme or '(none)'!r}")
    if not parts.hostname:
        raise ValidationError("must name a host, e.g. https://monitoring-webhook.example.com/...")
    if not WEBHOOK_PATH.match(parts.path):
        log.warning(
            "spaceone sink url path %r does not look like "
            "/monitoring/v1/webhook/<webhook_id>/<access_key>/events",
            _redact_path(parts.path),
        )


def _validate_headers(headers: Mapping[str, str]) -> None:
    """Catch header values ``requests`` would refuse at send time, so config check reports them."""
    for name, value in headers.items():
        if not _HEADER_NAME.match(name):
            raise ValidationError(f"{name!r} is not a valid header name")
        if "\r" in value or "\n" in value:
            raise ValidationError(f"header {name!r} must not contain a line break")


class SpaceoneOptions(SinkOptions):
    url = fields.String(required=True, validate=_validate_url, metadata={"secret": True})
    timeout = Duration(load_default=10.0, validate=[
        validate.Range(min=0, min_inclusive=False),
        validate.Range(max=MAX_TIMEOUT, error=(
            f"must be at most {MAX_TIMEOUT:g}s, the deadline the gateway sets on every delivery")),
    ])
    headers = fields.Dict(keys=fields.String(), values=fields.String(), load_default=dict,
                          validate=_validate_headers)
    verify_tls = fields.Boolean(load_default=True)
    forward_manual_resolve = fields.Boolean(load_default=True)
    account = fields.String(load_default=None, allow_none=True)
    providers = fields.Dict(keys=fields.String(), values=fields.String(validate=validate.Length(min=1)),
                            load_default=dict)
    refresh_interval = Duration(load_default=300.0, validate=validate.Range(
        min=0, max=MATCH_WINDOW, max_inclusive=False,
        error=f"must be below {MATCH_WINDOW:g}s (10m): SpaceONE forgets an alert's key after that; 0 turns it off"))


def _redact_path(path: str) -> str:
    """Hide the access key (or, for an unknown path shape, the whole path)."""
    match = WEBHOOK_PATH.match(path)
    if match:
        return f"/monitoring/v1/webhook/{match['webhook_id']}/***/events"
    return "/***" if path not in ("", "/") else path


def _text(value: Any) -> str:
    """SpaceONE keeps additional_info as string->string; JSON-encode structured values."""
    if isinstance(value, str):
        return value
    if isinstance(value, (bool, int, float, list, tuple, dict)):
        return json.dumps(value, ensure_ascii=False, default=str)
    return str(value)


def _occurred_at(alert: Alert) -> str:
    """ISO 8601 in UTC; a naive time is taken as UTC, a missing one as now."""
    when = alert.occurred_at or datetime.now(timezone.utc)
    if when.tzinfo is None:
        when = when.replace(tzinfo=timezone.utc)
    return when.astimezone(timezone.utc).isoformat()


def event_key(fingerprint: str, period: Optional[int] = None) -> str:
    """The problem's fingerprint, with its open period: each period is its own SpaceONE alert."""
    return fingerprint if period is None else f"{fingerprint}-{period}"


def event_body(alert: Alert, *, period: Optional[int] = None, fingerprint: Optional[str] = None,
               account: Optional[str] = None, providers: Optional[Mapping[str, str]] = None) -> dict:
    """The api-direct ``EventInfo`` for an alert of the problem ``fingerprint`` (default: the
    alert's; a group's recovery is sent once per member, under each member's) in its ``period``
    (None: the bare fingerprint); ``account`` and ``providers`` (over ``PROVIDERS``) come from options.

    api-direct's event model has no field for metadata but ``additional_info`` (string to
    string): each link goes there as its title -> url, then each annotation and each label,
    a later one winning over an earlier one of the same name."""
    additional_info = {link.title: link.url for link in alert.links}
    additional_info.update((k, _text(v)) for mapping in (alert.annotations, alert.labels)
                           for k, v in mapping.items() if v is not None)
    additional_info.update(
        source_key=alert.source_key, source_type=alert.source_type, origin=alert.origin
    )
    body = {
        "event_key": event_key(fingerprint or alert.fingerprint, period),
        "event_type": EVENT_TYPE[alert.status],
        "title": alert.title,
        "description": alert.description,
        "severity": SEVERITY.get(alert.severity, "NOT_AVAILABLE"),
        "resource": {
            "resource_id": alert.resource.id or "",
            "name": alert.resource.name or "",
            "resource_type": alert.resource.type or "",
        },
        "rule": alert.labels.get("query") or alert.labels.get("metric_name") or alert.title,
        "occurred_at": _occurred_at(alert),
        "additional_info": additional_info,
        "provider": {**PROVIDERS, **(providers or {})}.get(alert.source_type, alert.source_type),
    }
    if account:
        body["account"] = account
    return body


def parse_retry_after(value: Optional[str], now: Optional[float] = None) -> Optional[float]:
    """``Retry-After`` as seconds from now: delta-seconds or an HTTP-date; ``None`` if unusable."""
    if value is None:
        return None
    value = value.strip()
    try:
        seconds = float(value)
    except ValueError:
        try:
            when = parsedate_to_datetime(value)
        except (TypeError, ValueError, IndexError):
            return None
        if when.tzinfo is None:
            when = when.replace(tzinfo=timezone.utc)
        seconds = when.timestamp() - (time.time() if now is None else now)
    if seconds != seconds or seconds in (float("inf"), float("-inf")):
        return None
    return max(0.0, seconds)


def _error_code(response: requests.Response) -> Optional[str]:
    """SpaceONE's error code: its REST layer answers ``{"detail": {"code": ..., "message": ...}}``."""
    try:
        detail = response.json().get("detail")
    except (ValueError, AttributeError):
        return None
    return detail.get("code") if isinstance(detail, dict) else None


class SpaceoneSink(SinkType):
    """Outbox sink: one POST per delivery; the core retries on ``RetryableError``."""

    name = "spaceone"
    samples = "samples"
    options_schema = SpaceoneOptions
    tracks_problems = True

    def __init__(self, name: str, options: Mapping[str, Any]):
        super().__init__(name, options)
        parts = urlsplit(self.options["url"])
        self._redacted_url = f"{parts.scheme}://{parts.netloc}{_redact_path(parts.path)}"
        self._secrets = [s for s in (self.options["url"], parts.path, parts.query) if s and s != "/"]
        self._endpoint = JsonEndpoint(self.options["url"], verify_tls=self.options["verify_tls"],
                                      headers=self.options.get("headers"), pool_size=POOL_SIZE)

    def accepts(self, alert: Alert) -> bool:
        if alert.origin == "manual":
            return bool(self.options.get("forward_manual_resolve"))
        return alert.origin == "webhook"

    def refresh_interval(self) -> Optional[float]:
        return self.options["refresh_interval"] or None

    def event_body(self, delivery: Delivery) -> dict:
        return event_body(delivery.alert, period=delivery.period, fingerprint=delivery.fingerprint,
                          account=self.options.get("account"), providers=self.options.get("providers"))

    def deliver(self, delivery: Delivery) -> None:
        timeout = self.options["timeout"]
        try:
            # The whole call ends by the delivery's deadline, even if the reply trickles in.
            response = self._endpoint.post(self.event_body(delivery), delivery.deadline,
                                           timeout=min(timeout, delivery.deadline.remaining()),
                                           headers={"X-Gateway-Delivery-Id": str(delivery.id)})
        except requests.Timeout as exc:
            raise RetryableError(f"SpaceONE did not answer within {timeout:g}s ({self._redacted_url}): "
                                 f"{self._redact(exc)}") from None
        except requests.RequestException as exc:
            raise RetryableError(f"could not reach SpaceONE ({self._redacted_url}): "
                                 f"{self._redact(exc)}") from None

        status = response.status_code
        if 200 <= status < 300:
            return
        text = response.text[:RESPONSE_LIMIT]
        message = f"SpaceONE answered {status}: {text[:200] or '(empty body)'}"
        if status == 400 and _error_code(response) == WEBHOOK_DISABLED:
            raise RetryableError(f"the SpaceONE webhook is disabled; retrying until it is enabled. {message}",
                                 status_code=status, response=text)
        if status == 429 or status >= 500:
            raise RetryableError(
                message,
                retry_after=parse_retry_after(response.headers.get("Retry-After")),
                status_code=status,
                response=text,
            )
        raise PermanentError(message, status_code=status, response=text)

    def _redact(self, exc: Exception) -> str:
        """``requests`` errors quote the URL, whose path carries the webhook's access key."""
        text = f"{exc.__class__.__name__}: {exc}"
        for secret in self._secrets:
            text = text.replace(secret, "***")
        return text

    def close(self) -> None:
        self._endpoint.close()
