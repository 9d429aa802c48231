"""Requests run again through the current plugins, by ingest's own path: ``gateway replay`` (stored
requests, accepted or refused) and ``gateway try`` (a payload from a file, always rolled back).

Both reach ``ingest._receive`` with the plugin wrapped (``_Rerun``) and a ``commit`` that looks at
what the transaction stored before it ends: committed for a replay, rolled back for a dry run.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Callable, Mapping, Optional

from sqlalchemy import Connection, delete, func, select

from gateway.contracts import Alert, ApiError, Headers, InboundRequest, Rejected, SourceType
from gateway.pipeline import ingest
from gateway.pipeline.runtime import ActiveSource, Runtime
from gateway.pipeline.transaction import DUPLICATE_WINDOW, in_transaction
from gateway.store.lists import one_of
from gateway.store.models import AlertRow, DeliveryRow, Handshake, RawRequest, RefusedRequest


@dataclass
class StoredAlert:
    """One alert as a transaction stored it, and what it did."""

    id: int
    fingerprint: str
    status: str
    severity: str
    title: str
    incident_id: Optional[int]
    opened: bool
    """The alert opened its incident (else it joined one)."""
    outbox_sinks: list[str]


def stored_alerts(conn: Connection, ids: list[int]) -> list[StoredAlert]:
    """What the alerts ``ids`` became, read inside the transaction that stored them."""
    earlier = AlertRow.__table__.alias("earlier")
    first_of_incident = (select(func.min(earlier.c.id)).where(earlier.c.incident_id == AlertRow.incident_id)
                         .scalar_subquery())
    rows = conn.execute(select(AlertRow.id, AlertRow.fingerprint, AlertRow.status, AlertRow.severity, AlertRow.title,
                               AlertRow.incident_id, (first_of_incident == AlertRow.id).label("opened"))
                        .where(one_of(AlertRow.id, "ids")).order_by(AlertRow.id), {"ids": ids}).all()
    sinks: dict[int, list[str]] = {}
    for alert_id, sink in conn.execute(select(DeliveryRow.alert_id, DeliveryRow.sink_name)
                                       .where(one_of(DeliveryRow.alert_id, "ids")).order_by(DeliveryRow.id),
                                       {"ids": ids}):
        sinks.setdefault(alert_id, []).append(sink)
    return [StoredAlert(r.id, r.fingerprint, r.status, r.severity, r.title, r.incident_id,
                        bool(r.opened) and r.incident_id is not None, sinks.get(r.id, [])) for r in rows]


class RolledBack(Exception):
    """Ends a dry run's transaction once it has been looked at, so that nothing stays."""


class HandshakeNotMade(Rejected):
    """A dry run met a handshake: ``message`` says what it would have done."""

    def __init__(self, preview: str):
        super().__init__(200, "handshake", preview)


@dataclass
class Run:
    """What one request became: ``status`` and ``code`` as the sender would have been answered."""

    status: int
    code: str
    message: str = ""
    verified: bool = False
    alerts: list[StoredAlert] = field(default_factory=list)
    parsed: list[tuple[Alert, str, Optional[str]]] = field(default_factory=list)
    """Each alert as the plugin parsed it, with its fingerprint key and group as the plugin made them."""
    note: str = ""

    @property
    def outcome(self) -> str:
        return "accepted" if self.status == 202 else "duplicate" if self.code == "duplicate" else "refused"


class _Rerun:
    """The source's plugin as a rerun calls it: it records what parse, fingerprint and group
    made; on a replay, verify passes (the request passed it when received, and its credentials
    were not kept); a handshake is never made again."""

    def __init__(self, plugin: SourceType, *, verify: bool):
        self._plugin, self._verify = plugin, verify
        self.parsed: list[Alert] = []
        self.keys: dict[int, tuple[str, Optional[str]]] = {}
        self.note = ""

    def __getattr__(self, name: str) -> Any:
        return getattr(self._plugin, name)

    def verify(self, request: InboundRequest) -> None:
        if self._verify:
            self._plugin.verify(request)

    def handshake(self, request: InboundRequest) -> None:
        preview = self._plugin.handshake_preview(request)
        if preview is not None:
            raise HandshakeNotMade(preview)
        cls = type(self._plugin)
        if cls.handshake is not SourceType.handshake and cls.handshake_preview is SourceType.handshake_preview:
            self.note = (f"the {self._plugin.name} plugin answers handshakes but cannot say whether this is one "
                         "without answering it: no handshake was made")
        return None

    def parse(self, request: InboundRequest) -> list[Alert]:
        self.parsed = self._plugin.parse(request)
        return self.parsed

    def fingerprint(self, alert: Alert) -> str:
        key = self._plugin.fingerprint(alert)
        self.keys[id(alert)] = (key, self._plugin.group(alert))
        return key


def run(runtime: Runtime, source: ActiveSource, method: str, path: str, headers: Mapping[str, str], body: bytes,
        remote_addr: str, *, dry: bool, verify: bool, then: Callable[[Connection], None] = lambda conn: None,
        duplicates_since: Optional[datetime] = None) -> Run:
    """One request through ingest; ``then`` runs in its transaction when it stores alerts.
    ``duplicates_since``: see ``ingest._receive``."""
    plugin = _Rerun(source.plugin, verify=verify)
    seen, stored = ingest.Seen(), []

    def commit(runtime: Runtime, work):
        def whole(tx):
            ids = work(tx)
            stored[:] = stored_alerts(tx.connection, ids)
            then(tx.connection)
            if dry:
                raise RolledBack
            return ids
        try:
            return in_transaction(runtime, whole)
        except RolledBack:
            return [alert.id for alert in stored]

    def read(limit: int) -> bytes:
        if len(body) > limit:
            raise Rejected(413, "body_too_large", f"body is {len(body)} bytes; the limit is {limit}")
        return body

    try:
        outcome = ingest._receive(runtime, dataclasses.replace(source, plugin=plugin), source.type, source.key,
                                  method, path, headers, read, remote_addr, seen, commit, duplicates_since)
        result = Run(outcome.status, outcome.body.get("status", ""), verified=True, alerts=stored)
    except ApiError as exc:
        result = Run(exc.status, exc.code, exc.message, verified=seen.verified)
    result.parsed = [(alert, *plugin.keys.get(id(alert), ("", None))) for alert in plugin.parsed]
    result.note = plugin.note
    return result


# -- replay ------------------------------------------------------------------------

@dataclass
class StoredRequest:
    outcome: str
    id: int
    source_key: str
    method: str
    path: str
    headers: dict
    body: bytes
    remote_addr: Optional[str]
    received_at: datetime
    before: str
    verified: bool


def stored_requests(conn: Connection, source_key: Optional[str], since: Optional[datetime],
                    refused_only: bool) -> list[StoredRequest]:
    """Requests to replay, oldest first: accepted ones (not handshakes) unless ``refused_only``, and refused ones."""
    found = []
    tables = [(RefusedRequest, "refused")] if refused_only else [(RawRequest, "accepted"), (RefusedRequest, "refused")]
    for model, outcome in tables:
        query = select(model.__table__)
        if model is RawRequest:
            query = query.where(~select(Handshake.id).where(Handshake.raw_request_id == RawRequest.id).exists())
        if source_key is not None:
            query = query.where(model.source_key == source_key)
        if since is not None:
            query = query.where(model.received_at >= since)
        for row in conn.execute(query):
            if model is RawRequest:
                before, verified = f"accepted ({row.alert_count} alert{'s' * (row.alert_count != 1)})", True
            else:
                before, verified = f"refused {row.status} {row.code}", row.verified
            found.append(StoredRequest(outcome, row.id, row.source_key, row.method, row.path, row.headers, row.body,
                                       row.remote_addr, row.received_at, before, verified))
    return sorted(found, key=lambda r: (r.received_at, r.outcome, r.id))


def replay(runtime: Runtime, source: ActiveSource, request: StoredRequest, *, dry: bool) -> Run:
    """Run a stored request again (one ``skip_reason`` lets through); a refused one accepted now
    is no longer kept as refused."""
    def forget_refusal(conn: Connection) -> None:
        if request.outcome == "refused":
            conn.execute(delete(RefusedRequest.__table__).where(RefusedRequest.id == request.id))

    # A replay is no sender's retry: its delivery id is looked for from a window before the stored
    # request on, so a request accepted a week ago is still a duplicate of itself.
    return run(runtime, source, request.method, request.path, request.headers, request.body,
               request.remote_addr or "", dry=dry, verify=False, then=forget_refusal,
               duplicates_since=request.received_at - DUPLICATE_WINDOW)


def skip_reason(source: Optional[ActiveSource], request: StoredRequest) -> Optional[str]:
    """Why a stored request cannot be replayed, or None."""
    if source is None:
        return "its source is no longer configured"
    if not request.verified:
        return "refused before the source verified it, and its credentials were not kept"
    inbound = InboundRequest(request.method, request.path, Headers(request.headers), request.body,
                             None, request.remote_addr or "", request.received_at)
    try:
        inbound = dataclasses.replace(inbound, payload=ingest._decode(request.body))
        if source.plugin.handshake_preview(inbound) is not None:
            return "a handshake: answered when it came, never made again"
    except Exception:  # not JSON, or the plugin cannot tell: ingest will say what it makes of it
        pass
    return None
