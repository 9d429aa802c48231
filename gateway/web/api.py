"""/api: sources, stored events (raw requests), the delivery outbox and the config."""
from __future__ import annotations

import os
import signal
from typing import Optional

from flask import Blueprint, Response, current_app, jsonify, request
from marshmallow import INCLUDE, RAISE, Schema, fields, validate
from sqlalchemy import func, select

from gateway.config import SourceFields, redacted, redacted_options
from gateway.contracts import ApiError
from gateway.pipeline import deadletters, deliveries, refusals
from gateway.store.models import (
    AlertRow, DeliveryAttempt, DeliveryRow, ProblemDelivery, RawRequest, RefusedRequest, SourceRow,
)
from gateway.store.partitions import find_request, kept_raw_request_id, received_since
from gateway.web.auth import needs, require_role
from gateway.web.common import Page, Text, iso, json_object, page_of, paginate, paginate_journal, reading, where_given
from gateway.web.openapi import Raw, documented

bp = Blueprint("api", __name__, url_prefix="/api")


@bp.before_request
def _caller_may_read() -> None:
    """Every endpoint takes at least a viewer; those that change something say what more they need."""
    require_role("viewer")


def _gateway():
    return current_app.extensions["gateway"]


# -- sources -----------------------------------------------------------------------

def _sources():
    return _gateway().runtime.sources


def webhook_url(type_: str, key: str) -> str:
    """The absolute URL a vendor posts to: from ``global.external_url`` when set, else this request's host."""
    base = _gateway().runtime.snapshot.config.external_url or request.host_url
    return f"{base.rstrip('/')}/hooks/{type_}/{key}/"


def _source_json(key: str, type_: str, name: str, enabled: bool, options: dict, origin: str) -> dict:
    cls = _gateway().registry.source_types.get(type_)
    return {"key": key, "type": type_, "name": name, "enabled": enabled, "origin": origin,
            "webhook_url": webhook_url(type_, key),
            "options": redacted_options(options, cls.options_schema if cls else None),
            "read_only": origin == "file"}


def _file_source_json(source) -> dict:
    return _source_json(source.key, source.type, source.name, source.enabled, source.options, "file")


def _stored_source_json(row, token: Optional[str] = None) -> dict:
    """A source created through the API; ``token`` only to the one who made it (create, rotate)."""
    body = _source_json(row.key, row.type, row.name, row.enabled, row.options, "api")
    if token:
        body["token"] = token
    return body


class SourceOut(Schema):
    key = fields.String(required=True)
    type = fields.String(required=True)
    name = fields.String(required=True)
    enabled = fields.Boolean(required=True)
    origin = fields.String(required=True, validate=validate.OneOf(("file", "api")))
    webhook_url = fields.String(required=True)
    options = fields.Dict(required=True, metadata={"description": "the type's options, secrets redacted"})
    read_only = fields.Boolean(required=True, metadata={"description": "declared in gateway.yaml"})
    token = fields.String(metadata={"description": "only in the answer that made it (create, rotate_token)"})


class SourceList(Schema):
    items = fields.List(fields.Nested(SourceOut), required=True)
    total = fields.Integer(required=True)
    page = fields.Integer(required=True)


@bp.get("/sources")
@documented("Every source, of gateway.yaml and created through the API", responses={200: SourceList})
def list_sources():
    items = all_sources()
    return jsonify({"items": items, "total": len(items), "page": 1})


def all_sources() -> list[dict]:
    """Every source as JSON: gateway.yaml's first, then the API's by key (the console's list too)."""
    items = [_file_source_json(s) for s in _gateway().runtime.snapshot.config.sources.values()]
    return items + [_stored_source_json(row) for row in _sources().all_stored()]


@bp.get("/sources/<source_key:key>")
@documented("One source", responses={200: SourceOut})
def get_source(key: str):
    declared = _gateway().runtime.snapshot.config.sources.get(key)
    if declared is not None:
        return jsonify(_file_source_json(declared))
    row = _sources().stored(key)
    if row is None:
        raise ApiError(404, "not_found", f"no source {key!r}")
    return jsonify(_stored_source_json(row))


class NewSource(SourceFields):
    """A source's own fields with its type's options beside them, all checked by validate_source
    as a source of gateway.yaml is, save what only the sources table needs: a name that fits its
    column (the file's sources are never stored), checked here first.  The key is random when
    left out."""

    class Meta:
        unknown = INCLUDE

    key = fields.String(validate=SourceFields._declared_fields["key"].validators)
    name = Text(column=SourceRow.name, allow_none=True)


def new_source_bodies(registry) -> dict:
    """One body per source type, of NewSource's fields and that type's options."""
    return {"oneOf": [type(f"New{cls.__name__}", (NewSource, cls.options_schema),
                           {"type": fields.String(required=True, validate=validate.OneOf([name])),
                            "Meta": type("Meta", (), {"unknown": RAISE})})
                      for name, cls in sorted(registry.source_types.items())]}


@bp.post("/sources")
@documented("Create a source", body=new_source_bodies, responses={201: SourceOut},
            errors={409: "a source with that key exists (`source_exists`)"})
@needs("admin")
def create_source():
    return jsonify(create_runtime_source(json_object())), 201


def create_runtime_source(data: dict) -> dict:
    """Store a new API source; its JSON, with the token in clear this once (for the creator)."""
    NewSource(only=("name",)).load(data)  # validate_source checks the rest, naming every bad field at once
    row, token = _sources().create(data)
    return _stored_source_json(row, token)


class SourcePatch(Schema):
    enabled = fields.Boolean()
    name = Text(column=SourceRow.name, validate=validate.Length(min=1))
    rotate_token = fields.Boolean()
    token = fields.String(allow_none=True)


@bp.patch("/sources/<source_key:key>")
@documented("Enable, disable, rename a source or change its token", body=SourcePatch, responses={200: SourceOut},
            errors={409: "the source is declared in gateway.yaml (`read_only`)"})
@needs("admin")
def patch_source(key: str):
    return jsonify(change_runtime_source(key, SourcePatch().load(json_object())))


def change_runtime_source(key: str, change: dict) -> dict:
    """Apply a ``SourcePatch`` to an API source; its JSON, with a rotated token in clear this once."""
    _sources().ensure_changeable(key)
    row, new_token = _sources().patch(key, change)
    return _stored_source_json(row, new_token)


class HandshakeOut(Schema):
    id = fields.Integer(required=True)
    received_at = fields.String(required=True)
    status = fields.Integer(required=True, metadata={"description": "what the source answered"})
    record = fields.Dict(required=True)
    raw_url = fields.String(required=True, allow_none=True)


@bp.get("/sources/<source_key:key>/handshakes")
@documented("A source's protocol exchanges, newest first", query=Page, responses={200: page_of(HandshakeOut)})
def list_handshakes(key: str):
    args = Page().load(request.args)
    return jsonify(paginate(_sources().handshakes(key), args, lambda r: {
        "id": r.id, "received_at": iso(r.received_at), "status": r.status, "record": r.record,
        "raw_url": f"/api/events/{r.raw_request_id}/raw" if r.raw_request_id else None}))


class RequestQuery(Page):
    outcome = fields.String(validate=validate.OneOf(refusals.OUTCOMES))


class RequestOut(Schema):
    id = fields.Integer(required=True)
    outcome = fields.String(required=True, validate=validate.OneOf(refusals.OUTCOMES))
    status = fields.Integer(required=True)
    code = fields.String(required=True, allow_none=True)
    message = fields.String(required=True, allow_none=True)
    alert_count = fields.Integer(required=True, allow_none=True)
    received_at = fields.String(required=True)
    raw_url = fields.String(required=True)


@bp.get("/sources/<source_key:key>/requests")
@documented("A source's webhook requests, newest first, refused ones with why", query=RequestQuery,
            responses={200: page_of(RequestOut)})
def list_requests(key: str):
    """The source's webhook requests, newest first, refused ones with why (``?outcome=``)."""
    args = RequestQuery().load(request.args)
    outcome, newest = args.get("outcome"), args["page"] * args["per_page"]
    return jsonify(paginate_journal(lambda since: refusals.requests_of(key, outcome, newest=newest, since=since), args,
                                    _request_json, lambda since: refusals.counted_requests(key, outcome, since)))


def _request_json(r) -> dict:
    return {"id": r.id, "outcome": r.outcome, "status": r.status, "code": r.code, "message": r.message,
            "alert_count": r.alert_count, "received_at": iso(r.received_at), "raw_url": refusals.raw_url(r.outcome, r.id)}


@bp.get("/refused/<id:request_id>/raw")
@documented("The body of a refused request, as the raw journal keeps it",
            responses={200: Raw("*/*", "as received (credentials redacted), with its content type")})
def raw_refused(request_id: int):
    return _raw_bytes(RefusedRequest, request_id, "refused request")


# -- events (raw requests) -----------------------------------------------------------

class EventQuery(Page):
    source = Text()
    external_id = Text()


def _event_json(row) -> dict:
    return {"id": row.id, "source": row.source_key, "source_type": row.source_type, "method": row.method,
            "path": row.path, "headers": row.headers, "content_type": row.content_type,
            "remote_addr": row.remote_addr, "received_at": iso(row.received_at),
            "external_id": row.external_id, "alert_count": row.alert_count, "size": row.size,
            "raw_url": f"/api/events/{row.id}/raw"}


_EVENT_COLUMNS = [c for c in RawRequest.__table__.c if c.name != "body"]


class EventOut(Schema):
    id = fields.Integer(required=True)
    source = fields.String(required=True)
    source_type = fields.String(required=True)
    method = fields.String(required=True)
    path = fields.String(required=True)
    headers = fields.Dict(required=True, metadata={"description": "secret ones \"[redacted]\""})
    content_type = fields.String(required=True, allow_none=True)
    remote_addr = fields.String(required=True, allow_none=True)
    received_at = fields.String(required=True)
    external_id = fields.String(required=True, allow_none=True)
    alert_count = fields.Integer(required=True)
    size = fields.Integer(required=True, metadata={"description": "bytes of the body"})
    raw_url = fields.String(required=True)


@bp.get("/events")
@documented("Stored webhook requests, newest first", query=EventQuery, responses={200: page_of(EventOut)})
def list_events():
    args = EventQuery().load(request.args)
    query = select(*_EVENT_COLUMNS, func.length(RawRequest.body).label("size"))
    query = query.order_by(*refusals.newest_first(RawRequest))
    query = where_given(query, args, {"source": RawRequest.source_key, "external_id": RawRequest.external_id})
    # By delivery id, a request or two, found through their index: no recent span would hold a page.
    return jsonify(paginate_journal(lambda since: received_since(query, since), args, _event_json,
                                    recent="external_id" not in args))


@bp.get("/events/<id:event_id>/raw")
@documented("The exact bytes of a stored request", responses={200: Raw("*/*", "as received, with its content type")})
def raw_event(event_id: int):
    return _raw_bytes(RawRequest, event_id, "stored event")


def _raw_bytes(model, row_id: int, what: str) -> Response:
    """A stored request's body as kept, with its content type."""
    with reading() as conn:
        row = find_request(conn, model, row_id, model.body, model.content_type)
    if row is None:
        raise ApiError(404, "not_found", f"no {what} {row_id} (it may have been purged)")
    return Response(row.body, content_type=row.content_type or "application/octet-stream")


# -- alerts ---------------------------------------------------------------------------

class AlertOut(Schema):
    id = fields.Integer(required=True)
    source = fields.String(required=True)
    source_type = fields.String(required=True)
    fingerprint = fields.String(required=True)
    external_id = fields.String(required=True, allow_none=True)
    status = fields.String(required=True)
    severity = fields.String(required=True)
    title = fields.String(required=True)
    description = fields.String(required=True)
    resource = fields.Dict(required=True)
    occurred_at = fields.String(required=True)
    received_at = fields.String(required=True, allow_none=True)
    labels = fields.Dict(keys=fields.String(), values=fields.String(), required=True)
    annotations = fields.Dict(keys=fields.String(), values=fields.String(), required=True)
    links = fields.List(fields.Dict(), required=True)
    origin = fields.String(required=True)
    incident_id = fields.Integer(required=True, allow_none=True)
    raw_url = fields.String(required=True, allow_none=True)


@bp.get("/alerts/<id:alert_id>")
@documented("One stored alert, vendor annotations and links included", responses={200: AlertOut})
def get_alert(alert_id: int):
    """One stored alert as its source made it, vendor metadata (annotations, links) included."""
    with reading() as conn:
        alerts = AlertRow.__table__
        row = conn.execute(select(*(c for c in alerts.c if c.name != "raw_request_id"), kept_raw_request_id(alerts))
                           .where(alerts.c.id == alert_id)).first()
    if row is None:
        raise ApiError(404, "not_found", f"no alert {alert_id}")
    return jsonify({
        "id": row.id, "source": row.source_key, "source_type": row.source_type, "fingerprint": row.fingerprint,
        "external_id": row.external_id, "status": row.status, "severity": row.severity, "title": row.title,
        "description": row.description, "resource": {"id": row.resource_id, "name": row.resource_name,
                                                     "type": row.resource_type},
        "occurred_at": iso(row.occurred_at), "received_at": iso(row.received_at), "labels": row.labels,
        "annotations": row.annotations or {}, "links": row.links or [], "origin": row.origin,
        "incident_id": row.incident_id,
        "raw_url": f"/api/events/{row.raw_request_id}/raw" if row.raw_request_id else None,
    })


# -- deliveries ---------------------------------------------------------------------

class DeliveryQuery(Page):
    status = fields.String(validate=validate.OneOf(("pending", "delivered", "dead")))
    sink = Text()


def _delivery_json(row) -> dict:
    """A row of the outbox.  For a sink that tracks problems, ``period`` and ``refresh`` tell the
    problem period it belongs to and whether it re-delivers the period's firing (both null for
    other rows), and ``member_fingerprint`` the member of the alert's group the row is about,
    when a recovery of the whole group queued it for that member (else null)."""
    return {"id": row.id, "alert_id": row.alert_id, "sink": row.sink_name, "status": row.status,
            "attempts": row.attempts, "next_attempt_at": iso(row.next_attempt_at),
            "last_error": row.last_error, "created_at": iso(row.created_at),
            "finished_at": iso(row.finished_at), "ordering_key": row.ordering_key,
            "requeued_at": iso(row.requeued_at), "superseded_by": row.superseded_by,
            "period": row.period, "refresh": row.refresh,
            "member_fingerprint": row.ordering_key if row.ordering_key != row.alert_fingerprint else None}


def _deliveries():
    """Outbox rows as ``_delivery_json`` shows them.  Joins the listing's count can drop: an outer
    join on a unique key, and the alert's fingerprint as a subquery of the output only."""
    alert_fingerprint = select(AlertRow.fingerprint).where(AlertRow.id == DeliveryRow.alert_id).scalar_subquery()
    return (select(DeliveryRow.__table__, deadletters.superseded_by(), ProblemDelivery.period, ProblemDelivery.refresh,
                   alert_fingerprint.label("alert_fingerprint"))
            .outerjoin(ProblemDelivery, ProblemDelivery.delivery_id == DeliveryRow.id))


class DeliveryOut(Schema):
    id = fields.Integer(required=True)
    alert_id = fields.Integer(required=True)
    sink = fields.String(required=True)
    status = fields.String(required=True, validate=validate.OneOf(("pending", "delivered", "dead")))
    attempts = fields.Integer(required=True)
    next_attempt_at = fields.String(required=True)
    last_error = fields.String(required=True, allow_none=True)
    created_at = fields.String(required=True)
    finished_at = fields.String(required=True, allow_none=True)
    ordering_key = fields.String(required=True)
    requeued_at = fields.String(required=True, allow_none=True)
    superseded_by = fields.Integer(required=True, allow_none=True,
                                   metadata={"description": "a later delivery of the same problem, delivered"})
    period = fields.Integer(required=True, allow_none=True,
                            metadata={"description": "the problem period, for a sink that tracks problems"})
    refresh = fields.Boolean(required=True, allow_none=True,
                             metadata={"description": "whether the row re-delivers its period's firing"})
    member_fingerprint = fields.String(required=True, allow_none=True, metadata={
        "description": "the group member a whole-group recovery queued the row for"})


class AttemptOut(Schema):
    started_at = fields.String(required=True)
    duration_ms = fields.Integer(required=True)
    outcome = fields.String(required=True)
    status_code = fields.Integer(required=True, allow_none=True)
    error = fields.String(required=True, allow_none=True)
    worker = fields.String(required=True)


class DeliveryDetail(DeliveryOut):
    attempt_log = fields.List(fields.Nested(AttemptOut), required=True)


@bp.get("/deliveries")
@documented("The outbox, newest first", query=DeliveryQuery, responses={200: page_of(DeliveryOut)})
def list_deliveries():
    args = DeliveryQuery().load(request.args)
    query = _deliveries().order_by(DeliveryRow.id.desc())
    query = where_given(query, args, {"status": DeliveryRow.status, "sink": DeliveryRow.sink_name})
    return jsonify(paginate(query, args, _delivery_json))


@bp.get("/deliveries/<id:delivery_id>")
@documented("One delivery with its attempt log", responses={200: DeliveryDetail})
def get_delivery(delivery_id: int):
    with reading() as conn:
        row = conn.execute(_deliveries().where(DeliveryRow.id == delivery_id)).first()
        if row is None:
            raise ApiError(404, "not_found", f"no delivery {delivery_id}")
        attempts = conn.execute(select(DeliveryAttempt.__table__)
                                .where(DeliveryAttempt.delivery_id == delivery_id)
                                .order_by(DeliveryAttempt.id)).all()
    return jsonify({**_delivery_json(row), "attempt_log": [
        {"started_at": iso(a.started_at), "duration_ms": a.duration_ms, "outcome": a.outcome,
         "status_code": a.status_code, "error": a.error, "worker": a.worker} for a in attempts]})


@bp.post("/deliveries/<id:delivery_id>/retry")
@documented("Re-drive one dead delivery", responses={200: DeliveryDetail},
            errors={409: "the delivery is not dead (`not_dead`), or a later one of its problem was delivered "
                         "(`superseded`)"})
@needs("operator")
def retry_delivery(delivery_id: int):
    result = deadletters.redrive(_gateway().runtime, delivery_id=delivery_id)
    if result.superseded:
        raise ApiError(409, "superseded",
                       f"delivery {delivery_id} stays dead: delivery {result.superseded[delivery_id]}, of a later "
                       "alert with the same fingerprint, was delivered to the same sink; sending this one now "
                       "would deliver an older state after a newer one")
    if not result.requeued:
        status = deliveries.delivery_status(_gateway().engine, delivery_id)
        if status is None:
            raise ApiError(404, "not_found", f"no delivery {delivery_id}")
        raise ApiError(409, "not_dead", f"delivery {delivery_id} is {status}; only dead deliveries are retried")
    return get_delivery(delivery_id)


class BulkRetry(Schema):
    sink = Text(required=True)


class BulkRetried(Schema):
    sink = fields.String(required=True)
    requeued = fields.Integer(required=True, metadata={"description": "how many"})
    superseded = fields.List(fields.Integer(), required=True, metadata={"description": "left dead"})


@bp.post("/deliveries/retry")
@documented("Re-drive every dead delivery of a sink", body=BulkRetry, responses={200: BulkRetried})
@needs("operator")
def retry_dead_of_sink():
    sink = BulkRetry().load(json_object())["sink"]
    result = deadletters.redrive(_gateway().runtime, sink=sink)
    return jsonify({"sink": sink, "requeued": result.requeued, "superseded": sorted(result.superseded)})


# -- config ------------------------------------------------------------------------

class ConfigOut(Schema):
    config = fields.Dict(required=True, metadata={"description": "gateway.yaml in force, secrets redacted"})
    last_reload_ok = fields.Boolean(required=True)
    last_reload_error = fields.String(required=True, allow_none=True)
    loaded_at = fields.String(required=True)


class Reloaded(Schema):
    status = fields.String(required=True, validate=validate.OneOf(("reloaded",)))
    loaded_at = fields.String(required=True)


@bp.get("/config")
@documented("The running config", responses={200: ConfigOut})
@needs("admin")
def show_config():
    runtime = _gateway().runtime
    return jsonify({"config": redacted(runtime.snapshot.config), "last_reload_ok": runtime.reload_ok,
                    "last_reload_error": runtime.reload_error,
                    "loaded_at": iso(runtime.snapshot.config.loaded_at)})


@bp.post("/config/reload")
@documented("Reload gateway.yaml", responses={200: Reloaded},
            errors={422: "the file is invalid; the previous config stays (`invalid_config`)"})
@needs("admin")
def reload_config():
    runtime = _gateway().runtime
    if not reload_everywhere():
        raise ApiError(422, "invalid_config", f"config not applied; the previous one stays:\n{runtime.reload_error}")
    return jsonify({"status": "reloaded", "loaded_at": iso(runtime.snapshot.config.loaded_at)})



def reload_everywhere() -> bool:
    """Re-read gateway.yaml here and, if it is valid, in every other worker; False if invalid."""
    if not _gateway().runtime.reload():
        return False
    if _gateway().settings.served_by_gunicorn:
        os.kill(os.getppid(), signal.SIGHUP)  # the master passes it on to every worker
    return True
