"""The contract between the gateway core and its plugins.

Plugins register *types* (classes); the operator's config creates *instances* of them
(one per source key or sink name).  Everything a plugin receives or returns is defined
here, free of Flask and, at run time, of SQLAlchemy (it names SQLAlchemy's ``Connection``
only as the type of ``Transaction.connection``), so a source or an outbox sink can be
written and tested on its own.  Retries, backoff, transactions and storage belong to the
core, never to plugins.
"""
from __future__ import annotations

import base64
import dataclasses
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any, ClassVar, Mapping, Optional
from urllib.parse import urlsplit

from marshmallow import Schema, fields, validate

from gateway.deadline import Deadline
from gateway.fields import Duration, OptionsSchema

if TYPE_CHECKING:
    from sqlalchemy import Connection

SEVERITIES = ("critical", "error", "warning", "info")
"""Normalized severities, most to least urgent."""

ALERT_STATUSES = ("firing", "resolved")

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


@dataclass(frozen=True)
class Link:
    """A vendor page about an alert (the alarm in the vendor's console, a graph, a runbook):
    shown by the API and forwarded by sinks; ``url`` must be absolute http(s)."""

    title: str
    url: str

    @staticmethod
    def allowed(url: Any) -> bool:
        """Whether ``url`` may be a link: absolute http(s) only, since people open it (never ``javascript:``)."""
        try:
            parts = urlsplit(url) if isinstance(url, str) else None
        except ValueError:
            return False
        return parts is not None and parts.scheme in ("http", "https") and bool(parts.netloc)


@dataclass
class Alert:
    """A normalized alert: what every source produces and every sink consumes.

    Plugins fill the vendor-derived fields.  ``labels`` say what the alert is (fingerprints
    and groups are built from them); ``annotations`` and ``links`` only tell people more
    about it (a summary, a runbook, the vendor's own alert id): they are stored, shown and
    forwarded, but nothing is decided on them.  The core fills ``source_key``,
    ``source_type``, ``fingerprint`` (namespaced by source), ``received_at`` (when the
    webhook carrying it arrived), ``raw_request_id`` and ``id`` when it loads a stored
    alert for delivery (inline sinks see them unset).  ``origin`` says where the alert
    came from: ``"webhook"``, or another word for one a plugin hands the pipeline through
    ``Transaction.submit`` (``"manual"``: the recovery the incident store sends on when a
    person resolves an incident).
    """

    status: str
    severity: str
    title: str
    description: str = ""
    resource: Resource = field(default_factory=Resource)
    occurred_at: Optional[datetime] = None
    labels: dict[str, str] = field(default_factory=dict)
    annotations: dict[str, str] = field(default_factory=dict)
    links: list[Link] = field(default_factory=list)
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
class Refused:
    """What ``parse`` returns in place of an alert it cannot make, so that the other alerts of the
    request are still stored: the answer lists it under ``refused`` with its position in the list
    ``parse`` returned.  ``fields`` names each bad field of that alert, as ``Rejected.invalid`` does.
    """

    fields: Mapping[str, str]
    code: str = "invalid_alert"
    message: str = ""

    def describe(self) -> str:
        """``message``, or one made from ``fields``."""
        problems = ", ".join(f"{name} ({problem})" for name, problem in self.fields.items())
        return self.message or f"alert refused: {problems}"


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
    send this one.  ``attempt`` starts at 1.  ``deadline``: when the call must be over.
    ``fingerprint`` is the problem the row is about: the alert's, except on a tracking sink's
    row that a whole group's recovery queued for one member of the group, where it is that
    member's.  For a sink that tracks problems, ``period`` is the open period of ``fingerprint``
    the row belongs to (1, 2, …) and ``refresh`` is True when the core re-delivers the period's
    firing; otherwise they are None and False.
    """

    id: int
    attempt: int
    sink_name: str
    alert: Alert
    deadline: Deadline = field(default_factory=Deadline)
    period: Optional[int] = None
    refresh: bool = False
    fingerprint: str = ""

    def __post_init__(self) -> None:
        if not self.fingerprint:
            object.__setattr__(self, "fingerprint", self.alert.fingerprint)


class ApiError(Exception):
    """An HTTP error, answered as JSON ``{"error": {"code", "message", "fields"?}}``: what the
    API and a plugin's routes raise (``gateway.views`` exports it).

    ``code`` is a short machine-readable reason; ``fields`` maps each bad field to what is
    wrong with it; ``headers`` go on the answer (``Retry-After``, ``WWW-Authenticate``).
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


class Rejected(ApiError):
    """Raised by a source (or the core's ingest) to refuse a webhook request with a client error.

    Its ``code`` is also the label of ``gateway_webhooks_rejected_total``.
    """

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


class PluginError(Exception):
    """A plugin could not be loaded or registered; start-up stops with this message."""


class Transaction:
    """One database transaction of the core's, handed to inline sinks and to plugin routes.

    Inline sinks get the ingest transaction in ``InlineSinkType.apply``; a plugin's routes open
    one with ``gateway.views.transaction``.  What is done through it commits or rolls back whole,
    and the core may run it again on a fresh transaction when it loses a race.  Never commit,
    roll back or close it yourself.
    """

    connection: Connection
    """The SQLAlchemy Core connection, for a plugin's own tables (the incident store's)."""

    def submit(self, alert: Alert, *, incident_id: Optional[int] = None) -> int:
        """Hand the pipeline a new alert: stored, and queued for the outbox sinks its route
        chooses that ``accept`` it, delivered once this transaction commits.  Returns its id.

        ``alert.origin`` must say who made it (``"manual"``, not ``"webhook"``), so that sinks
        forward it only when they opted in.  ``received_at`` defaults to now and ``occurred_at``
        to ``received_at``.  Inline sinks are not applied to it: the plugin that submits it has
        recorded its effect, and ``incident_id`` links it to that incident.  Raises
        ``ValueError`` for an alert the core would refuse from a source.
        """
        raise NotImplementedError


class SourceOptions(OptionsSchema):
    """Options every source accepts; a source type's ``options_schema`` extends it."""

    token = fields.String(load_default=None, allow_none=True, metadata={"secret": True})
    reopen_window = Duration(load_default=None, allow_none=True)


class SinkOptions(OptionsSchema):
    """Options every sink accepts; retries and backoff are applied by the core.

    A delivery is retried for ``max_age`` (counted from when it was queued or re-driven), so
    an outage of the destination shorter than that loses nothing; ``max_attempts`` is an
    opt-in limit by count on top (unset: none).
    """

    max_age = Duration(load_default=86400.0, validate=validate.Range(min=0, min_inclusive=False))
    max_attempts = fields.Integer(load_default=None, allow_none=True, validate=validate.Range(min=1))
    backoff_initial = Duration(load_default=1.0)
    backoff_max = Duration(load_default=300.0)


class SourceType:
    """A webhook format.  Subclass it and register the class from ``register_source_types``.

    The core creates one instance per configured source (``key`` plus validated
    ``options``) and reuses it for every request, so instances must be thread-safe
    and must not keep per-request state.  Per request the core calls, in order:
    ``verify``, ``handshake``, ``parse``, then ``fingerprint`` and ``group`` for each alert.
    """

    name: ClassVar[str]
    """URL segment (``/hooks/<name>/<key>/``) and the ``type:`` of a source in gateway.yaml."""

    display_name: ClassVar[Optional[str]] = None
    """What the console's source-type select shows, e.g. "WhaTap (와탭)"; default ``name``."""

    fingerprint_fields: ClassVar[tuple[str, ...]] = ()
    """What ``fingerprint`` is made from, for people: alert label names, or ``title``.  The
    console shows them, with their values, beside an incident's fingerprint."""

    options_schema: ClassVar[type[Schema]] = SourceOptions
    samples: ClassVar[Optional[str]] = None
    """A directory of sample payloads (JSON files), relative to the module defining the class:
    shown by ``gateway plugins``, run by the conformance kit (``gateway.testing``)."""

    def __init__(self, key: str, options: Mapping[str, Any]):
        self.key = key
        self.options = dict(options)

    def verify(self, request: InboundRequest) -> None:
        """Authenticate the request; raise ``Rejected`` (401/403) to refuse it."""

    def handshake(self, request: InboundRequest) -> Optional[Reply]:
        """Answer a protocol message (a subscription confirmation); ``None`` if it carries alerts."""
        return None

    def handshake_preview(self, request: InboundRequest) -> Optional[str]:
        """What ``handshake`` would do with this request, said without doing it (``gateway try``
        must call nothing out), or ``None`` if the request is no handshake.

        A source whose ``handshake`` calls out or has effects should override it; for one that
        overrides ``handshake`` but not this, a dry run says it cannot tell and skips the handshake.
        """
        return None

    def parse(self, request: InboundRequest) -> list[Alert | Refused]:
        """Turn the request into alerts, one item per vendor alert: a ``Refused`` for one that is
        malformed (the others are kept); raise ``Rejected.invalid`` when the request as a whole is."""
        raise NotImplementedError

    def fingerprint(self, alert: Alert) -> str:
        """A string equal for every alert about the same problem (firing and recovery alike)."""
        raise NotImplementedError

    def group(self, alert: Alert) -> Optional[str]:
        """The problem family the alert belongs to, or ``None`` (the default) for none.

        For a vendor that reports parts of one problem in one message (an OCI alarm's metric
        streams): each part has its own ``fingerprint``, all share a ``group``, and an alert
        whose fingerprint *is* the group speaks for all of them, so its recovery resolves
        every open incident of the group.
        """
        return None

    def delivery_id(self, request: InboundRequest) -> Optional[str]:
        """The vendor's id for this delivery, if it has one; redeliveries of it have one effect.

        ``None`` (the default) leaves idempotency to each alert's ``external_id``; a request
        that yields no alert is then stored again when redelivered.
        """
        return None

    def scrub(self, request: InboundRequest) -> tuple[Mapping[str, str], bytes]:
        """The headers and body the raw journal keeps: blank out secrets a vendor puts in them.

        The core already redacts ``Authorization``, ``X-Webhook-Token`` and ``Cookie``.
        """
        return request.headers, request.body


class SinkType:
    """A destination.  Subclass it and register the class from ``register_sink_types``.

    A ``SinkType`` is an outbox sink: it implements ``deliver``, which the core calls from
    the dispatcher, never on the request path, and retries on ``RetryableError``.  A sink
    that records alerts inside the ingest transaction instead subclasses ``InlineSinkType``.
    """

    name: ClassVar[str]
    options_schema: ClassVar[type[Schema]] = SinkOptions
    samples: ClassVar[Optional[str]] = None
    """A directory of sample alerts (``Alert`` fields) (JSON files), relative to the module defining the class:
    shown by ``gateway plugins``, run by the conformance kit (``gateway.testing``)."""
    tracks_problems: ClassVar[bool] = False
    """Outbox sinks only: the core follows each problem's open periods for this sink (see
    docs/plugins.md, "Problem periods") and tags each delivery with its period."""

    def __init__(self, name: str, options: Mapping[str, Any]):
        self.name = name
        self.options = dict(options)

    def accepts(self, alert: Alert) -> bool:
        """Whether this sink wants the alert at all (e.g. manual resolves are opt-in)."""
        return alert.origin == "webhook"

    def deliver(self, delivery: Delivery) -> None:
        """Send one alert; return on success, raise ``RetryableError`` or ``PermanentError``."""
        raise NotImplementedError

    def refresh_interval(self) -> Optional[float]:
        """Sinks that track problems: seconds after a firing was delivered at which the core
        delivers it again, while its period stays open; None (the default) never does."""
        return None

    def close(self) -> None:
        """Release pooled connections; called a grace period after a reload replaced this instance."""


class InlineSinkType(SinkType):
    """A sink applied inside the ingest transaction, through ``apply`` (the built-in incident store).

    It gets no outbox rows, so the core never calls its ``deliver``.  It must only write
    through the ``Transaction`` it is given.
    """

    def apply(self, tx: Transaction, alert: Alert, settings: Mapping[str, Any]) -> Optional[int]:
        """Record the alert's effect within the ingest transaction; an incident id for the alert row, or None.

        ``settings`` holds ``reopen_window`` (seconds or None), the route's or else the source's.
        Runs before the raw request is stored, which is the duplicate check: a duplicate
        rolls back what this wrote, and ``alert.raw_request_id`` is not known yet.
        """
        raise NotImplementedError
