"""/api/incidents: list, detail with timeline, lifecycle actions and comments."""
from __future__ import annotations

import base64
import binascii
import json
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Callable, Optional

from flask import Blueprint, jsonify, request
from marshmallow import Schema, fields, validate
from sqlalchemy import ColumnElement, and_, or_, select, true, tuple_

from gateway import SEVERITIES, Alert, Resource
from gateway.incidents import search, service
from gateway.store.models import SEVERITY_RANK, Incident
from gateway.views import (
    COUNT_CAP, Page, ApiError, Text, actor, documented, iso, json_object, page_of, reading, require_role, transaction,
    where_given,
)

bp = Blueprint("incidents", __name__, url_prefix="/api/incidents")


@bp.before_request
def _caller_may() -> None:
    """Reading incidents takes a viewer; acting on them, an operator."""
    require_role("viewer" if request.method in ("GET", "HEAD") else "operator")

INCIDENT_STATUSES = ("triggered", "acknowledged", "resolved", "closed")


@dataclass(frozen=True)
class Sort:
    """A list order: ``term`` (None: the id alone) ``descending`` or not, ties by id ``ties_descending``
    or not.  Every sort goes on from a cursor (its last incident's ``value`` and id), so a deep page costs
    what page 1 does.  ``load`` reads a cursor's value back, raising ValueError or TypeError on one this
    did not give; ``status_led``: the term's index leads with the status (0021, for the console's tabs)."""

    term: Optional[ColumnElement]
    descending: bool
    ties_descending: bool
    value: Callable[[Any], Any]
    load: Callable[[Any], Any]
    status_led: bool = False


def _whole(value) -> int:
    if type(value) is not int:  # not a bool either
        raise TypeError(value)
    return value


def _aware(value) -> datetime:
    moment = datetime.fromisoformat(value)
    if moment.tzinfo is None:
        raise ValueError(value)
    return moment


def _rank(value) -> int:
    if _whole(value) not in SEVERITY_RANK.values():
        raise ValueError(value)
    return value


_INCIDENTS = Incident.__table__.c
"""The table's columns, not the mapped attributes: an ORDER BY term made of one holds that very column,
which ``status_parts`` looks for."""
SORTS = {
    "-last_event_at": Sort(_INCIDENTS.last_event_at, True, True, lambda row: iso(row.last_event_at), _aware),
    "last_event_at": Sort(_INCIDENTS.last_event_at, False, False, lambda row: iso(row.last_event_at), _aware),
    # Ids are given in creation order: the primary key sorts as created_at would, without a sort.
    "-created_at": Sort(None, True, True, lambda row: row.id, _whole),
    "created_at": Sort(None, False, False, lambda row: row.id, _whole),
    "-event_count": Sort(_INCIDENTS.event_count, True, True, lambda row: row.event_count, _whole, status_led=True),
    # Most severe first, then newest first: the one order whose two directions differ.
    "severity": Sort(service.INCIDENT_SEVERITY_RANK, False, True, lambda row: SEVERITY_RANK[row.severity], _rank,
                     status_led=True),
}


class IncidentQuery(Page):
    status = fields.String(validate=validate.OneOf(INCIDENT_STATUSES))
    severity = fields.String(validate=validate.OneOf(SEVERITIES))
    source = Text()
    q = Text()
    sort = fields.String(load_default="-last_event_at", validate=validate.OneOf(list(SORTS)))
    cursor = Text(validate=validate.Length(max=200))


class NoteBody(Schema):
    note = Text(load_default=None, allow_none=True, validate=validate.Length(max=10_000))


class CommentBody(Schema):
    body = Text(required=True, validate=validate.Length(min=1, max=10_000))


class ResourceOut(Schema):
    id = fields.String(required=True)
    name = fields.String(required=True)
    type = fields.String(required=True)


class IncidentOut(Schema):
    id = fields.Integer(required=True)
    fingerprint = fields.String(required=True)
    source = fields.String(required=True)
    source_type = fields.String(required=True)
    title = fields.String(required=True)
    description = fields.String(required=True)
    severity = fields.String(required=True, validate=validate.OneOf(SEVERITIES))
    status = fields.String(required=True, validate=validate.OneOf(INCIDENT_STATUSES))
    resource = fields.Nested(ResourceOut, required=True)
    event_count = fields.Integer(required=True)
    created_at = fields.String(required=True)
    acknowledged_at = fields.String(required=True, allow_none=True)
    resolved_at = fields.String(required=True, allow_none=True)
    closed_at = fields.String(required=True, allow_none=True)
    first_seen_at = fields.String(required=True)
    last_seen_at = fields.String(required=True)
    last_event_at = fields.String(required=True)
    allowed_actions = fields.List(fields.String(), required=True)


class EntryOut(Schema):
    id = fields.Integer(required=True, allow_none=True, metadata={"description": "none for a repeat"})
    alert_id = fields.Integer(required=True, allow_none=True)
    kind = fields.String(required=True)
    at = fields.String(required=True)
    actor = fields.String(required=True, allow_none=True)
    from_status = fields.String(required=True, allow_none=True)
    to_status = fields.String(required=True, allow_none=True)
    note = fields.String(required=True, allow_none=True)
    body = fields.String(required=True, allow_none=True, metadata={"description": "a comment's text"})
    raw_url = fields.String(required=True, allow_none=True)
    annotations = fields.Dict(keys=fields.String(), values=fields.String(), required=True, allow_none=True,
                              metadata={"description": "the vendor's annotations of the alert a line tells of"})
    links = fields.List(fields.Dict(), required=True, allow_none=True,
                        metadata={"description": "the vendor's links ({title, url}) of that alert"})


class IncidentPage(page_of(IncidentOut)):
    total = fields.Integer(required=True, allow_none=True, metadata={"description": (
        f"the matches, counted up to {COUNT_CAP:,}: null past that, on a page by cursor, and for a broad `q` "
        f"(one that fills the page within the first {search.WALK_PROBE:,} incidents in the sort) unless the "
        f"other filters leave fewer than {search.WALK_PROBE:,} incidents: counting its matches would read "
        "every one of them, as many as the list's, to serve a page that needed a few dozen")})
    next_cursor = fields.String(allow_none=True, metadata={
        "description": "the `cursor` of the next page (null on the last)"})


class IncidentDetail(IncidentOut):
    timeline = fields.List(fields.Nested(EntryOut), required=True)


def incident_json(row) -> dict:
    return {
        "id": row.id, "fingerprint": row.fingerprint, "source": row.source_key, "source_type": row.source_type,
        "title": row.title, "description": row.description, "severity": row.severity, "status": row.status,
        "resource": {"id": row.resource_id, "name": row.resource_name, "type": row.resource_type},
        "event_count": row.event_count, "created_at": iso(row.created_at),
        "acknowledged_at": iso(row.acknowledged_at), "resolved_at": iso(row.resolved_at),
        "closed_at": iso(row.closed_at), "first_seen_at": iso(row.first_seen_at),
        "last_seen_at": iso(row.last_seen_at), "last_event_at": iso(row.last_event_at),
        "allowed_actions": service.allowed_actions(row.status),
    }


def entry_json(row: service.TimelineItem) -> dict:
    """A comment's text is its ``body``, as it was posted; other kinds carry an optional ``note``.

    A repeat listed from its alert has no entry ``id`` but an ``alert_id``.  A line telling of
    a webhook alert carries that alert's ``annotations`` and ``links`` (null on other lines).
    """
    comment = row.kind == "commented"
    return {
        "id": row.id, "alert_id": row.alert_id, "kind": row.kind, "at": iso(row.at), "actor": row.actor,
        "from_status": row.from_status, "to_status": row.to_status,
        "note": None if comment else row.note, "body": row.note if comment else None,
        "raw_url": f"/api/events/{row.raw_request_id}/raw" if row.raw_request_id else None,
        "annotations": row.annotations, "links": row.links,
    }


@bp.get("")
@documented("Incidents", query=IncidentQuery, responses={200: IncidentPage},
           errors={400: "`cursor` is not a `next_cursor` this API gave (`bad_cursor`)"})
def list_incidents():
    """A page by ``page`` (an offset: each page deeper costs more) or by ``cursor``: the
    ``next_cursor`` of the page before, which goes on from that page's last incident at the cost of
    page 1 however deep (``page`` is then ignored, and ``total`` is null: counting would read every
    match again on each page)."""
    args = IncidentQuery().load(request.args)
    query, order = incident_query(args), incident_order(args)
    parts = status_parts(args, order)
    by_cursor = "cursor" in args
    if by_cursor:  # a bad cursor is refused here, before any read
        query, parts = beyond(query, parts, after(args["sort"], args["cursor"]))
        args = {**args, "page": 1}
    per_page = args["per_page"]
    with reading() as conn:
        rows, total = search.read(conn, query, order, args.get("q"), conn.dialect.name,
                                  limit=per_page, offset=(args["page"] - 1) * per_page, count=not by_cursor,
                                  parts=parts)
    return jsonify({"items": [incident_json(row) for row in rows], "total": total, "page": args["page"],
                    "per_page": per_page,
                    "next_cursor": cursor_after(args["sort"], rows[-1]) if len(rows) == per_page else None})


def cursor_after(sort: str, row) -> str:
    """The cursor that goes on after the incident ``row`` in ``sort`` (its sort value and id, as JSON)."""
    return base64.urlsafe_b64encode(json.dumps([SORTS[sort].value(row), row.id]).encode()).decode()


def after(sort: str, cursor: str, *, before: bool = False) -> tuple[search.Part, ...]:
    """The incidents after ``cursor``'s in the order of ``sort`` (``before``: ahead of it, for the
    console's Previous link), as disjoint parts, each a range of the sort's index: one row value
    where the sort and its ties go one way; where they do not (the severity sort's rank ascending,
    ids descending), the cursor's rank past its id, in id order, then the ranks past it.  A 400 for
    a cursor this did not give."""
    order = SORTS[sort]
    try:
        value, last_id = json.loads(base64.urlsafe_b64decode(cursor.encode()))
        value, last_id = order.load(value), _whole(last_id)
    except (ValueError, TypeError, AttributeError, binascii.Error):
        raise ApiError(400, "bad_cursor", "cursor is not a next_cursor this API gave") from None
    ahead = lambda term, at, descending: term < at if descending != before else term > at  # noqa: E731
    if order.term is None:
        return (search.Part(ahead(Incident.id, last_id, order.ties_descending)),)
    if order.descending == order.ties_descending:
        # As a row value, not "column < v OR (column = v AND id < i)": PostgreSQL then starts the walk of
        # the index at the cursor instead of filtering every row ahead of it (test_query_plans).
        return (search.Part(ahead(tuple_(order.term, Incident.id), (value, last_id), order.descending)),)
    by_id = _directed(_INCIDENTS.id, order.ties_descending, before)
    return (search.Part(and_(order.term == value, ahead(Incident.id, last_id, order.ties_descending)), (by_id,)),
            search.Part(ahead(order.term, value, order.descending)))


def beyond(query, parts: tuple, cursor: tuple) -> tuple:
    """(``query`` and ``parts`` narrowed to ``after``'s parts ``cursor``): the query holds them whole, so
    every read of it is exact; when there are two, each part is read once per side of the cursor (a
    range of the index apiece) and merged, as ``search.ordered`` does."""
    query = query.where(or_(*(side.where for side in cursor)))
    if len(cursor) > 1:
        parts = tuple(search.Part(and_(part.where, side.where), side.order or part.order)
                      for part in parts or (search.Part(true()),) for side in cursor)
    return query, parts


def sort_order(sort: str, *, backward: bool = False) -> tuple:
    """The ORDER BY of ``sort``, ties by id; ``backward``, the opposite one, in which a page
    ``before`` a cursor is read from the cursor out, then turned round."""
    order = SORTS[sort]
    terms = [(_INCIDENTS.id, order.ties_descending)]
    if order.term is not None:
        terms.insert(0, (order.term, order.descending))
    return tuple(_directed(term, descending, backward) for term, descending in terms)


def _directed(term, descending: bool, backward: bool):
    """``term`` in its direction, turned round for a read ``backward`` from a cursor."""
    return term.desc() if descending != backward else term.asc()


def incident_query(args: dict):
    """The incidents ``args`` (an ``IncidentQuery``) filter to, in no order and without ``q``, for
    the API and the console: ``search.read`` adds the order, the search and the page."""
    return where_given(select(Incident.__table__), args,
                       {"status": Incident.status, "severity": Incident.severity, "source": Incident.source_key})


def status_parts(args: dict, order: tuple) -> tuple:
    """The parts the list of ``args`` in ``order`` (``incident_order``'s) is read in and merged
    (``search.ordered``): one per status when the order leads with a ``status_led`` sort's term
    and no status is asked for, else none."""
    if args.get("status") or not any(order[0].element is sort.term for sort in SORTS.values() if sort.status_led):
        return ()
    return tuple(search.Part(Incident.status == status) for status in INCIDENT_STATUSES)


def incident_order(args: dict, *, backward: bool = False) -> tuple:
    """The ORDER BY of ``args["sort"]`` (``sort_order``).  The severity sort of one ``severity`` is newest
    first alone, the same order: the rank's index would walk every higher severity's incidents before
    the first of it.  (Its cursor stays the rank's: every incident listed has that one, so it goes on by id.)"""
    if args["sort"] == "severity" and args.get("severity"):
        return sort_order("-created_at", backward=backward)
    return sort_order(args["sort"], backward=backward)


@bp.get("/<id:incident_id>")
@documented("One incident with its timeline", responses={200: IncidentDetail})
def get_incident(incident_id: int):
    with reading() as conn:
        row = conn.execute(select(Incident.__table__).where(Incident.id == incident_id)).first()
        if row is None:
            raise ApiError(404, "not_found", f"no incident {incident_id}")
        entries = service.timeline(conn, incident_id)
    return jsonify({**incident_json(row), "timeline": [entry_json(e) for e in entries]})


@bp.post("/<id:incident_id>/<any(acknowledge, resolve, close):action>")
@documented("Acknowledge, resolve or close an incident", body=NoteBody, responses={200: IncidentOut},
            errors={409: "not allowed from the incident's status (`transition_not_allowed`)"})
def change_status(incident_id: int, action: str):
    return jsonify(incident_json(act(incident_id, action, actor(), json_object(NoteBody())["note"])))


def act(incident_id: int, action: str, who: str, note: Optional[str]):
    """Acknowledge, resolve or close for ``who``; the incident's row after it.  Refusals are 404 and 409."""
    def work(tx):
        row = service.transition(tx.connection, incident_id, action, who, note)
        if action == "resolve":
            # The incident store recorded the transition; the outbox sinks that opted in are told.
            tx.submit(manual_resolve(row, who, note), incident_id=incident_id)
        return tx.connection.execute(select(Incident.__table__).where(Incident.id == incident_id)).one()

    try:
        row = transaction(work)
    except LookupError as exc:
        raise ApiError(404, "not_found", str(exc)) from None
    except service.TransitionRefused as exc:
        raise ApiError(409, "transition_not_allowed", str(exc)) from None
    return row


def manual_resolve(incident, who: str, note: Optional[str]) -> Alert:
    """The recovery a person's resolve sends on: the incident's problem, ``origin="manual"``."""
    return Alert(
        status="resolved", severity=incident.severity, title=incident.title, description=incident.description,
        resource=Resource(incident.resource_id, incident.resource_name, incident.resource_type),
        labels={"resolved_by": who, **({"note": note} if note else {})},
        source_key=incident.source_key, source_type=incident.source_type,
        fingerprint=incident.fingerprint, origin="manual",
    )


@bp.post("/<id:incident_id>/comments")
@documented("Comment on an incident", body=CommentBody, responses={201: EntryOut})
def comment(incident_id: int):
    return jsonify(entry_json(add_comment(incident_id, actor(), json_object(CommentBody())["body"]))), 201


def add_comment(incident_id: int, who: str, body: str) -> service.TimelineItem:
    try:
        return transaction(lambda tx: service.add_comment(tx.connection, incident_id, who, body))
    except LookupError as exc:
        raise ApiError(404, "not_found", str(exc)) from None
