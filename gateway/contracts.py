"""The contract between the gateway core and its plugins.

Plugins register *types* (classes); the operator's config creates *instances* of them
(one per source key or sink name).  Everything a plugin receives or returns is defined
here, free of Flask and SQLAlchemy, so a plugin can be written and tested on its own.
Retries, backoff, transactions and storage belong to the core, never to plugins.
"""
from __future__ import annotations

import base64
import dataclasses
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, ClassVar, Mapping, Optional

from marshmallow import Schema, fields, validate

from gateway.fields import Duration

SEVERITIES = ("critical", "error", "warning", "info")
"""Normalized severities, most to least urgent."""

STATUSES = ("firing", "resolved")

DELIVERY_LEASE_SECONDS = 120.0
"""How long a dispatcher holds an outbox row for one ``deliver`` call.

A delivery that runs longer may be taken over and sent again by another dispatcher, so
a sink's timeouts must keep ``deliver`` well within it.
"""


class Headers(Mapping[str, str]):
    """Read-only, case-insensitive HTTP headers (vendors vary the casing)."""

    def __init__(self, items: Mapping[str, str] | None = None):
        self._items = {k.lower(): v for k, v in (items or {}).items()}

    def __getitem__(self, name: str) -> str:
        return self._items[name.lower()]

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and name.lower() in self._items

    def __iter__(self):
        return iter(self._items)

    def __len__(self) -> int:
        return len(self._items)

    def __repr__(self) -> str:
        return f"Headers({self._items!r})"

    def basic_credentials(self) -> Optional[tuple[str, str]]:
        """``(user, password)`` from ``Authorization: Basic ...``, or None when there is none.

        Credentials that do not decode come back as ``("", "")``, so they fail any comparison.
        """
        scheme, _, encoded = self.get("Authorization", "").strip().partition(" ")
        if scheme.lower() != "basic" or not encoded.strip():
            return None
        try:
            user, _, password = base64.b64decode(encoded.strip(), validate=True).decode("utf-8").partition(":")
        except ValueError:  # not base64 (binascii.Error), not ASCII, or not UTF-8 once decoded
            return "", ""
        return user, password


@dataclass(frozen=True)
class InboundRequest:
    """One webhook delivery as the core received it.

    ``body`` holds the exact bytes (signatures are computed over them); ``payload`` is
    the body already decoded as JSON by the core, which answers 400 before any plugin
    runs when the body is not JSON.
    """

    method: str
    path: str
    headers: Headers
    body: bytes
    payload: Any
    remote_addr: str
    received_at: datetime


@dataclass
class Resource:
    """What the alert is about: a host, an agent, a cloud resource."""

    id: str = ""
    name: str = ""
    type: str = ""


@dataclass
class Alert:
    """A normalized alert: what every source produces and every sink consumes.

    Plugins fill the vendor-derived fields.  The core fills ``source_key``,
    ``source_type``, ``fingerprint`` (namespaced by source), ``received_at`` (when the
    webhook carrying it arrived), ``raw_request_id`` and ``id`` when it loads a stored
    alert for delivery (inline sinks see them unset), and ``origin`` is ``"manual"`` for the recovery the core emits when a person
    resolves an incident.
    """

    status: str
    severity: str
    title: str
    description: str = ""
    resource: Resource = field(default_factory=Resource)
    occurred_at: Optional[datetime] = None
    labels: dict[str, str] = field(default_factory=dict)
    external_id: Optional[str] = None
    source_key: str = ""
    source_type: str = ""
    fingerprint: str = ""
    received_at: Optional[datetime] = None
    raw_request_id: Optional[int] = None
    id: Optional[int] = None
    origin: str = "webhook"

    def replace(self, **changes: Any) -> "Alert":
        return dataclasses.replace(self, **changes)


@dataclass(frozen=True)
class Reply:
    """A response a source sends itself, for protocol messages that carry no alert.

    ``record`` is stored by the core (and shown under ``/api/sources/<key>/handshakes``)
    so operators can see, for example, which OCI subscription was confirmed.
    """

    status: int = 200
    body: Mapping[str, Any] = field(default_factory=dict)
    headers: Mapping[str, str] = field(default_factory=dict)
    record: Optional[Mapping[str, Any]] = None


@dataclass(frozen=True)
class Delivery:
    """One outbox row handed to an outbox sink's ``deliver``.

    ``id`` is stable across retries: a sink that can send an idempotency key should
    send this one.  ``attempt`` starts at 1.
    """

    id: int
    attempt: int
    sink_name: str
    alert: Alert


class Rejected(Exception):
    """Raised by a source to refuse a request with a client error.

    ``code`` is a short machine-readable reason (also the metrics label);
    ``fields`` maps each missing or invalid payload field to what is wrong with it.
    """

    def __init__(
        self,
        status: int,
        code: str,
        message: str,
        *,
        fields: Mapping[str, str] | None = None,
        headers: Mapping[str, str] | None = None,
    ):
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.fields = dict(fields or {})
        self.headers = dict(headers or {})

    @classmethod
    def unauthorized(cls, message: str, code: str = "unauthorized", **kw: Any) -> "Rejected":
        return cls(401, code, message, **kw)

    @classmethod
    def invalid(cls, fields: Mapping[str, str]) -> "Rejected":
        """A 422 naming every bad field: ``{"title": "missing"}``."""
        names = ", ".join(f"{name} ({problem})" for name, problem in fields.items())
        return cls(422, "invalid_payload", f"payload rejected: {names}", fields=fields)


class DeliveryError(Exception):
    """Base of the errors a sink raises from ``deliver``."""

    def __init__(self, message: str, *, status_code: int | None = None, response: str | None = None):
        super().__init__(message)
        self.status_code = status_code
        self.response = response


class RetryableError(DeliveryError):
    """The destination may accept this later: the core retries with backoff.

    ``retry_after`` (seconds) overrides the computed backoff, e.g. from ``Retry-After``.
    """

    def __init__(self, message: str, *, retry_after: float | None = None, **kw: Any):
        super().__init__(message, **kw)
        self.retry_after = retry_after


class PermanentError(DeliveryError):
    """The destination will never accept this delivery: the row goes dead at once."""


class SourceOptions(Schema):
    """Options every source accepts; a source type's ``options_schema`` extends it."""

    token = fields.String(load_default=None, allow_none=True, metadata={"secret": True})
    reopen_window = Duration(load_default=None, allow_none=True)


class SinkOptions(Schema):
    """Options every sink accepts; retries and backoff are applied by the core."""

    max_attempts = fields.Integer(load_default=8, validate=validate.Range(min=1))
    backoff_initial = Duration(load_default=1.0)
    backoff_max = Duration(load_default=300.0)


class SourceType:
    """A webhook format.  Subclass it and register the class from ``register_source_types``.

    The core creates one instance per configured source (``key`` plus validated
    ``options``) and reuses it for every request, so instances must be thread-safe
    and must not keep per-request state.  Per request the core calls, in order:
    ``verify``, ``handshake``, ``parse``, then ``fingerprint`` for each alert.
    """

    name: ClassVar[str]
    """URL segment (``/hooks/<name>/<key>/``) and the ``type:`` of a source in gateway.yaml."""

    display_name: ClassVar[Optional[str]] = None
    """What the console's source-type select shows, e.g. "WhaTap (와탭)"; default ``name``."""

    fingerprint_fields: ClassVar[tuple[str, ...]] = ()
    """What ``fingerprint`` is made from, for people: alert label names, or ``title``.  The
    console shows them, with their values, beside an incident's fingerprint."""

    options_schema: ClassVar[type[Schema]] = SourceOptions

    def __init__(self, key: str, options: Mapping[str, Any]):
        self.key = key
        self.options = dict(options)

    def verify(self, request: InboundRequest) -> None:
        """Authenticate the request; raise ``Rejected`` (401/403) to refuse it."""

    def handshake(self, request: InboundRequest) -> Optional[Reply]:
        """Answer a protocol message (a subscription confirmation); ``None`` if it carries alerts."""
        return None

    def parse(self, request: InboundRequest) -> list[Alert]:
        """Turn the request into alerts; raise ``Rejected.invalid`` naming each bad field."""
        raise NotImplementedError

    def fingerprint(self, alert: Alert) -> str:
        """A string equal for every alert about the same problem (firing and recovery alike)."""
        raise NotImplementedError

    def delivery_id(self, request: InboundRequest) -> Optional[str]:
        """The vendor's id for this delivery, if it has one; redeliveries of it have one effect.

        ``None`` (the default) keys idempotency on the alerts' ``external_id`` instead; a
        request that yields no alert is then stored again when redelivered.
        """
        return None

    def scrub(self, request: InboundRequest) -> tuple[Mapping[str, str], bytes]:
        """The headers and body the raw journal keeps: blank out secrets a vendor puts in them.

        The core already redacts ``Authorization``, ``X-Webhook-Token`` and ``Cookie``.
        """
        return request.headers, request.body


class SinkType:
    """A destination.  Subclass it and register the class from ``register_sink_types``.

    Outbox sinks (the default) implement ``deliver``; the core calls it from the
    dispatcher, never on the request path, and retries on ``RetryableError``.
    A sink with ``inline = True`` is instead applied inside the ingest transaction
    through ``apply`` (the built-in incident store); it must only write to the
    session it is given.
    """

    name: ClassVar[str]
    options_schema: ClassVar[type[Schema]] = SinkOptions
    inline: ClassVar[bool] = False

    def __init__(self, name: str, options: Mapping[str, Any]):
        self.name = name
        self.options = dict(options)

    def accepts(self, alert: Alert) -> bool:
        """Whether this sink wants the alert at all (e.g. manual resolves are opt-in)."""
        return alert.origin == "webhook"

    def deliver(self, delivery: Delivery) -> None:
        """Send one alert; return on success, raise ``RetryableError`` or ``PermanentError``."""
        raise NotImplementedError

    def apply(self, session: Any, alert: Alert, settings: Mapping[str, Any]) -> Any:
        """Inline sinks only: record the alert's effect within the ingest transaction.

        Runs before the raw request is stored, which is the duplicate check: a duplicate
        rolls back what this wrote, and ``alert.raw_request_id`` is not known yet.
        """
        raise NotImplementedError

    def close(self) -> None:
        """Release pooled connections; called a grace period after a reload replaced this instance."""
