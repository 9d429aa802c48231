"""The database schema (SQLAlchemy 2 typed ORM).  Alembic migrations in ``migrations/`` create it.

Every hot-path query has an index here: ingest looks rows up by (source, external id),
by open-incident fingerprint and by outbox claim order, never by scanning.
"""
from __future__ import annotations

import re
from datetime import datetime, timezone
from typing import Any, Optional

from sqlalchemy import (
    JSON,
    DateTime,
    Double,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Text,
    TypeDecorator,
    bindparam,
    column,
    false,
    func,
    literal_column,
    table,
    text,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from gateway import clock
from gateway.contracts import SEVERITIES
from gateway.fingerprints import GROUP_PREFIX_LENGTH

OPEN_STATUSES = ("triggered", "acknowledged")
_OPEN_LITERALS = [f"'{status}'" for status in OPEN_STATUSES]  # plain words: no quote to escape
OPEN_SQL = f"status IN ({', '.join(_OPEN_LITERALS)})"
"""The open-incident condition as literal SQL: the partial unique index is defined by it, and a
query written the same way can use that index and needs no per-execution IN-list expansion."""


def is_open(status_column):
    """``OPEN_SQL`` on ``status_column``: the same values, inline."""
    return status_column.in_([literal_column(literal) for literal in _OPEN_LITERALS])


def in_group(fingerprint_column) -> tuple:
    """The rows whose fingerprint belongs to the group ``:prefix`` (bind ``group_bounds(prefix)``).

    A group's fingerprints share their prefix (``namespaced_fingerprint``), so they are one
    range of an index on the fingerprint.
    """
    prefix = bindparam("prefix")
    return (fingerprint_column >= prefix, fingerprint_column < bindparam("past"),
            func.substr(fingerprint_column, 1, GROUP_PREFIX_LENGTH) == prefix)


def group_bounds(prefix: str) -> dict[str, str]:
    """The parameters of ``in_group``: past the prefix's hex digits comes ``g``."""
    return {"prefix": prefix, "past": prefix + "g"}


UNSTORABLE_TEXT = re.compile("[\x00\ud800-\udfff]")
"""What no text column can hold on every database: NUL (PostgreSQL refuses it, even to compare)
and unpaired UTF-16 surrogates, which valid JSON may escape but UTF-8 cannot encode."""


def utcnow() -> datetime:
    """Now, by the core's clock (``gateway.clock``)."""
    return clock.now()


class UTCDateTime(TypeDecorator):
    """Timezone-aware UTC datetimes on every backend (SQLite keeps no zone of its own)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: Optional[datetime], dialect) -> Optional[datetime]:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to the database; use timezone-aware UTC")
        value = value.astimezone(timezone.utc)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: Optional[datetime], dialect) -> Optional[datetime]:
        if value is None:
            return None
        if value.tzinfo is None:
            return value.replace(tzinfo=timezone.utc)
        return value.astimezone(timezone.utc)


class Base(DeclarativeBase):
    metadata = MetaData(
        naming_convention={
            "ix": "ix_%(table_name)s_%(column_0_N_name)s",
            "uq": "uq_%(table_name)s_%(column_0_N_name)s",
            "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
            "pk": "pk_%(table_name)s",
        }
    )
    type_annotation_map = {datetime: UTCDateTime, dict[str, Any]: JSON}


class JournaledRequest:
    """What is kept of a webhook request, accepted or refused: credentials redacted, the source's scrub applied."""

    id: Mapped[int] = mapped_column(primary_key=True)
    source_key: Mapped[str] = mapped_column(String(64))
    source_type: Mapped[str] = mapped_column(String(64))
    method: Mapped[str] = mapped_column(String(8))
    path: Mapped[str] = mapped_column(String(512))
    headers: Mapped[dict[str, Any]]
    body: Mapped[bytes] = mapped_column(LargeBinary)
    content_type: Mapped[Optional[str]] = mapped_column(String(255))
    remote_addr: Mapped[Optional[str]] = mapped_column(String(64))
    received_at: Mapped[datetime]


class RawRequest(JournaledRequest, Base):
    """A webhook exactly as received: the API calls these *events*.

    On PostgreSQL the table is partitioned by day of ``received_at`` and its primary key is (id,
    received_at): see ``gateway.store.partitions``."""

    __tablename__ = "raw_requests"
    external_id: Mapped[Optional[str]] = mapped_column(String(255))
    alert_count: Mapped[int] = mapped_column(default=0)

    __table_args__ = (
        Index("ix_raw_requests_source_key_received_at_id", "source_key", "received_at", "id"),  # lists (0022)
        Index("ix_raw_requests_received_at", "received_at"),
        # The idempotency guard, not unique (none can span PostgreSQL's partitions: ingest serializes a
        # delivery id instead); the id first, for ``/api/events?external_id=``; all its check reads (0022).
        Index("ix_raw_requests_external_id_source_key_received_at", "external_id", "source_key", "received_at"),
    )


class RefusedRequest(JournaledRequest, Base):
    """A webhook a known source or the core refused with a 4xx, and why: the console's source page
    and ``/api/sources/<key>/requests`` show it, ``gateway replay`` can run it again.

    Kept as the raw journal keeps a request (credentials redacted, the source's ``scrub``
    applied), the last ``global.keep_refused`` per source.  ``verified``: the source's
    ``verify`` had passed when it was refused, so a replay may run it through ``parse``.
    """

    __tablename__ = "refused_requests"
    verified: Mapped[bool]
    status: Mapped[int]
    code: Mapped[str] = mapped_column(String(64))
    message: Mapped[str] = mapped_column(Text)

    __table_args__ = (
        Index("ix_refused_requests_source_key_id", "source_key", "id"),
        Index("ix_refused_requests_received_at", "received_at"),
    )


class AlertRow(Base):
    """A normalized alert, linked to the request it came in and the incident it joined.

    ``annotations`` and ``links`` (``[{"title", "url"}]``) are the vendor's metadata; NULL on
    rows stored before migration 0007.
    """

    __tablename__ = "alerts"
    id: Mapped[int] = mapped_column(primary_key=True)
    raw_request_id: Mapped[Optional[int]]
    """The request it came in; no foreign key (none can point into a partitioned table), and retention
    may have removed the request since."""
    source_key: Mapped[str] = mapped_column(String(64))
    source_type: Mapped[str] = mapped_column(String(64))
    fingerprint: Mapped[str] = mapped_column(String(64))
    external_id: Mapped[Optional[str]] = mapped_column(String(255))
    status: Mapped[str] = mapped_column(String(16))
    severity: Mapped[str] = mapped_column(String(16))
    title: Mapped[str] = mapped_column(Text)
    description: Mapped[str] = mapped_column(Text, default="")
    resource_id: Mapped[str] = mapped_column(String(512), default="")
    resource_name: Mapped[str] = mapped_column(String(512), default="")
    resource_type: Mapped[str] = mapped_column(String(128), default="")
    occurred_at: Mapped[datetime]
    labels: Mapped[dict[str, Any]]
    annotations: Mapped[Optional[dict[str, Any]]]
    links: Mapped[Optional[list[dict[str, Any]]]] = mapped_column(JSON)
    origin: Mapped[str] = mapped_column(String(16), default="webhook")
    incident_id: Mapped[Optional[int]] = mapped_column(ForeignKey("incidents.id"))
    received_at: Mapped[datetime]

    __table_args__ = (
        Index("ix_alerts_raw_request_id", "raw_request_id"),
        Index("ix_alerts_incident_id_id", "incident_id", "id"),  # an incident's alerts in order (0014)
        # Idempotency per alert: a source's alert with a vendor id is stored once (migration 0007).
        Index("uq_alerts_source_key_external_id", "source_key", "external_id", unique=True),
    )


SEVERITY_RANK = {name: rank for rank, name in enumerate(SEVERITIES)}
"""critical 0 ... info 3: what "severity only rises" and the incident list's severity sort compare."""
SEVERITY_RANK_SQL = "(CASE severity " + " ".join(f"WHEN '{n}' THEN {r}" for n, r in SEVERITY_RANK.items()) + " END)"
"""``SEVERITY_RANK`` of an incident's severity in SQL text: literals, not parameters, so that the
list's severity sort and the index on it (0021) are the same expression to the planner."""


class Incident(Base):
    """One problem, deduplicated by fingerprint: triggered → acknowledged → resolved → closed."""

    __tablename__ = "incidents"
    id: Mapped[int] = mapped_column(primary_key=True)
    fingerprint: Mapped[str] = mapped_column(String(64))
    source_key: Mapped[str] = mapped_column(String(64))
    source_type: Mapped[str] = mapped_column(String(64))
    title: Mapped[str] = mapped_column(Text)
    description: Mapped[str] = mapped_column(Text, default="")
    severity: Mapped[str] = mapped_column(String(16))
    status: Mapped[str] = mapped_column(String(16))
    resource_id: Mapped[str] = mapped_column(String(512), default="")
    resource_name: Mapped[str] = mapped_column(String(512), default="")
    resource_type: Mapped[str] = mapped_column(String(128), default="")
    event_count: Mapped[int] = mapped_column(default=1)
    first_seen_at: Mapped[datetime]
    last_seen_at: Mapped[datetime]
    created_at: Mapped[datetime]
    last_event_at: Mapped[datetime]
    acknowledged_at: Mapped[Optional[datetime]]
    resolved_at: Mapped[Optional[datetime]]
    closed_at: Mapped[Optional[datetime]]

    __table_args__ = (
        # Exactly one open incident per fingerprint, enforced by the database itself.
        Index(
            "uq_incidents_open_fingerprint",
            "fingerprint",
            unique=True,
            sqlite_where=text(OPEN_SQL),
            postgresql_where=text(OPEN_SQL),
        ),
        Index("ix_incidents_fingerprint_resolved_at", "fingerprint", "resolved_at"),
        # The incident list's filters, and their counts.
        Index("ix_incidents_status", "status"),
        Index("ix_incidents_severity", "severity"),
        # A source's incidents in the default sort: its page is a range, not a sort (0012).
        Index("ix_incidents_source_key_last_event_at_id", "source_key", "last_event_at", "id"),
        # The list's default sort, newest activity first, each filter applied along it.  Every
        # repeat moves last_event_at, so each repeat rewrites index entries (why migration 0002
        # dropped it); at a million incidents the list cannot sort them all per page (0009).
        Index("ix_incidents_last_event_at_id", "last_event_at", "id"),
        # The console's severity and event-count sorts within its status tab, walked up to the page (0021).
        Index("ix_incidents_status_severity_rank_id", "status", text(SEVERITY_RANK_SQL), text("id DESC")),
        Index("ix_incidents_status_event_count_id", "status", "event_count", "id"),
    )


INCIDENT_TEXT = "title || ' ' || description || ' ' || resource_name"
"""An incident's searched text as one expression: PostgreSQL's trigram index on it (0016) holds
every text a search may find in one of the three columns, so one index scan gives the candidates."""

TRIGRAM_INDEXES = {
    "ix_incidents_text_trgm": ("incidents", INCIDENT_TEXT),
    "ix_timeline_entries_note_trgm": ("timeline_entries", "note"),
}
"""The incident search's indexes, PostgreSQL only (GIN, pg_trgm, migrations 0009 and 0016), so not
in the models; SQLite has ``SEARCH_TABLES`` instead."""

incidents_search = table("incidents_search", column("rowid"))
comments_search = table("comments_search", column("rowid"))
SEARCH_TABLES = ("incidents_search", "comments_search")
"""The incident search's indexes on SQLite: FTS5 trigram tables (migration 0015), filled by
triggers, so not in the models either.  Their rowid is an incident's id, and a comment's
timeline entry id; ``incident_comments`` is the view of the comments they index."""


def is_search_table(name: str) -> bool:
    """Whether ``name`` is one of ``SEARCH_TABLES`` or a table FTS5 keeps for one (``_data``, ``_idx``...)."""
    return any(name == t or name.startswith(t + "_") for t in SEARCH_TABLES)


class GroupRecovery(Base):
    """The latest recovery that spoke for a whole alert group (``whole_group``), per group.

    A member's firing from before it, delivered later, opens no incident, even for a member
    that was never open; it is counted on ``incident_id``, the incident that recovery joined.
    """

    __tablename__ = "group_recoveries"
    fingerprint: Mapped[str] = mapped_column(String(64), primary_key=True)
    """The group's own fingerprint (the recovery's)."""
    recovered_at: Mapped[datetime]
    incident_id: Mapped[Optional[int]] = mapped_column(ForeignKey("incidents.id"))


COMMENTS_SQL = "kind = 'commented'"
"""The timeline entries that are comments, as SQL: a query that names this literal text (not a bound
parameter) can read ``ix_timeline_entries_comments_incident_id``; SQLite's planner needs it so."""


class TimelineEntry(Base):
    """An incident's history, in order: created, webhook_received, status_changed, commented, reopened."""

    __tablename__ = "timeline_entries"
    id: Mapped[int] = mapped_column(primary_key=True)
    incident_id: Mapped[int] = mapped_column(ForeignKey("incidents.id"))
    kind: Mapped[str] = mapped_column(String(32))
    at: Mapped[datetime]
    actor: Mapped[str] = mapped_column(String(255))
    from_status: Mapped[Optional[str]] = mapped_column(String(16))
    to_status: Mapped[Optional[str]] = mapped_column(String(16))
    note: Mapped[Optional[str]] = mapped_column(Text)

    __table_args__ = (
        Index("ix_timeline_entries_incident_id_id", "incident_id", "id"),
        # An incident's comments alone, for a broad search's test of each incident it walks (0020).
        Index("ix_timeline_entries_comments_incident_id", "incident_id",
              sqlite_where=text(COMMENTS_SQL), postgresql_where=text(COMMENTS_SQL)),
    )


PENDING_SQL = "status = 'pending'"
"""The pending-row condition of the outbox's partial indexes (the dispatcher's claim names it so)."""
CLAIMABLE_SQL = "status = 'pending' AND blocked = false"
"""The rows the claim walks: pending and not known to wait behind an earlier row of their key."""


class DeliveryRow(Base):
    """The outbox: one row per (alert, external sink), delivered by the dispatcher.

    ``requeued_at``: when an operator last re-drove the row; its retries run for the sink's
    ``max_age`` from then, or else from ``created_at``.  ``blocked``: the row waits behind an
    earlier pending row of its ordering key, which unblocks it when done (``ordering``).
    """

    __tablename__ = "deliveries"
    id: Mapped[int] = mapped_column(primary_key=True)
    alert_id: Mapped[int] = mapped_column(ForeignKey("alerts.id"))
    sink_name: Mapped[str] = mapped_column(String(64))
    ordering_key: Mapped[str] = mapped_column(String(64))
    status: Mapped[str] = mapped_column(String(16), default="pending")
    attempts: Mapped[int] = mapped_column(default=0)
    next_attempt_at: Mapped[datetime]
    claimed_by: Mapped[Optional[str]] = mapped_column(String(128))
    claimed_until: Mapped[Optional[datetime]]
    last_error: Mapped[Optional[str]] = mapped_column(Text)
    created_at: Mapped[datetime]
    finished_at: Mapped[Optional[datetime]]
    requeued_at: Mapped[Optional[datetime]]
    blocked: Mapped[bool] = mapped_column(server_default=false())

    __table_args__ = (
        # The claim: a sink's unblocked pending rows by when they are due, and per ordering key
        # the earliest pending row.  Partial, so they hold only the backlog, and a plan on a
        # table without statistics still finds them (migrations 0004, 0018).
        Index("ix_deliveries_claimable_sink_name_next_attempt_at_id", "sink_name", "next_attempt_at", "id",
              sqlite_where=text(CLAIMABLE_SQL), postgresql_where=text(CLAIMABLE_SQL)),
        Index("ix_deliveries_pending_sink_name_ordering_key_id", "sink_name", "ordering_key", "id",
              sqlite_where=text(PENDING_SQL), postgresql_where=text(PENDING_SQL)),
        Index("ix_deliveries_sink_name_ordering_key_status", "sink_name", "ordering_key", "status"),
        Index("ix_deliveries_status", "status"),
        # An incident's deliveries, through its alerts (the console's incident page).
        Index("ix_deliveries_alert_id", "alert_id"),
    )


class DeliveryAttempt(Base):
    """Every try of a delivery: when, how long, what came back."""

    __tablename__ = "delivery_attempts"
    id: Mapped[int] = mapped_column(primary_key=True)
    delivery_id: Mapped[int] = mapped_column(ForeignKey("deliveries.id"))
    started_at: Mapped[datetime]
    duration_ms: Mapped[int] = mapped_column(Integer)
    outcome: Mapped[str] = mapped_column(String(16))
    status_code: Mapped[Optional[int]]
    error: Mapped[Optional[str]] = mapped_column(Text)
    worker: Mapped[str] = mapped_column(String(128))

    __table_args__ = (Index("ix_delivery_attempts_delivery_id", "delivery_id"),)


class SinkProblem(Base):
    """Where one problem (fingerprint) stands for one outbox sink that tracks problems.

    ``period`` counts the problem's open periods for that sink: 1 when it first fired, one
    more each time it fires again after a recovery.  ``resolved_at`` is when its last
    period ended, so a firing older than that is known to be stale.
    """

    __tablename__ = "sink_problems"
    sink_name: Mapped[str] = mapped_column(String(64), primary_key=True)
    fingerprint: Mapped[str] = mapped_column(String(64), primary_key=True)
    period: Mapped[int]
    open: Mapped[bool]
    first_seen_at: Mapped[datetime]
    last_seen_at: Mapped[datetime]
    resolved_at: Mapped[Optional[datetime]]


class ProblemDelivery(Base):
    """The problem period an outbox row of a problem-tracking sink belongs to, and whether
    the core queued it as a refresh (a re-delivery of the period's firing)."""

    __tablename__ = "problem_deliveries"
    delivery_id: Mapped[int] = mapped_column(ForeignKey("deliveries.id", ondelete="CASCADE"), primary_key=True)
    period: Mapped[int]
    refresh: Mapped[bool]


class SourceRow(Base):
    """A source created through the API rather than declared in gateway.yaml."""

    __tablename__ = "sources"
    key: Mapped[str] = mapped_column(String(64), primary_key=True)
    type: Mapped[str] = mapped_column(String(64))
    name: Mapped[str] = mapped_column(String(255))
    enabled: Mapped[bool] = mapped_column(default=True)
    options: Mapped[dict[str, Any]]
    created_at: Mapped[datetime]
    updated_at: Mapped[datetime]


class Handshake(Base):
    """A protocol exchange a source answered itself (an OCI subscription confirmation)."""

    __tablename__ = "handshakes"
    id: Mapped[int] = mapped_column(primary_key=True)
    source_key: Mapped[str] = mapped_column(String(64))
    raw_request_id: Mapped[Optional[int]]
    """As ``AlertRow.raw_request_id``: the request, unless retention removed it."""
    received_at: Mapped[datetime]
    status: Mapped[int]
    record: Mapped[dict[str, Any]]

    __table_args__ = (Index("ix_handshakes_source_key_id", "source_key", "id"),)


class User(Base):
    """A console user; ``role`` is viewer, operator or admin (see gateway.users.ROLES)."""

    __tablename__ = "users"
    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(64), unique=True)
    role: Mapped[str] = mapped_column(String(16))
    password_hash: Mapped[str] = mapped_column(String(255))
    enabled: Mapped[bool] = mapped_column(default=True)
    language: Mapped[Optional[str]] = mapped_column(String(8))
    timezone: Mapped[Optional[str]] = mapped_column(String(64))
    created_at: Mapped[datetime]


class ApiToken(Base):
    """A personal API token: only its SHA-256 is kept; it acts as its user, with the user's role."""

    __tablename__ = "api_tokens"
    id: Mapped[int] = mapped_column(primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id"))
    name: Mapped[str] = mapped_column(String(255))
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    created_at: Mapped[datetime]
    revoked_at: Mapped[Optional[datetime]]

    __table_args__ = (Index("ix_api_tokens_user_id", "user_id"),)


class SignInFailure(Base):
    """One failed sign-in, kept in the database so every worker process counts the same ones."""

    __tablename__ = "sign_in_failures"
    id: Mapped[int] = mapped_column(primary_key=True)
    username: Mapped[str] = mapped_column(String(64))
    at: Mapped[datetime]

    __table_args__ = (Index("ix_sign_in_failures_username_at", "username", "at"),)


class Schedule(Base):
    """A job that runs at most once per period across every process (the retention purge):
    the process that moves ``due_at`` forward, while it has passed, runs it."""

    __tablename__ = "schedules"
    name: Mapped[str] = mapped_column(String(64), primary_key=True)
    due_at: Mapped[datetime]
    holder: Mapped[Optional[str]] = mapped_column(String(128))


class RateBucket(Base):
    """A source's token bucket (``rate_limit``), shared by every worker and process.

    ``updated_at`` is epoch seconds (a float), so the refill is plain arithmetic in one
    statement on every database."""

    __tablename__ = "rate_buckets"
    source_key: Mapped[str] = mapped_column(String(64), primary_key=True)
    tokens: Mapped[float] = mapped_column(Double)
    updated_at: Mapped[float] = mapped_column(Double)
    allowed: Mapped[bool]
