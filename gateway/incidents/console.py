"""The incident store's console pages: the incident list and an incident with its Status Actions,
Incident Timeline and Add Comment.  Actions go through the API's own functions (``act``,
``add_comment``), so a page and an API call change an incident in exactly one way."""
from __future__ import annotations

from flask import abort, current_app, redirect, render_template, request, url_for
from marshmallow import EXCLUDE, ValidationError, pre_load, validate
from sqlalchemy import func, select

from gateway.contracts import SEVERITIES
from gateway.incidents import search, service
from gateway.incidents.api import (
    INCIDENT_STATUSES, CommentBody, IncidentQuery, NoteBody, act, add_comment, after, beyond, cursor_after,
    incident_order, incident_query,
)
from gateway.store.models import AlertRow, DeliveryRow, Incident
from gateway.views import (
    COUNT_CAP, ApiError, Text, actor, all_sources, capped_count, console_blueprint, needs, reading,
)

bp = console_blueprint("incidents_console", __name__, template_folder="templates")
OPERATOR = needs("operator")
PER_PAGE = 50
DEFAULT_SORT = "-created_at"
"""Newest first: the primary key's order, which stays fast however many incidents are stored."""


class ConsoleQuery(IncidentQuery):
    before = Text(validate=validate.Length(max=200))
    """The Previous link's cursor: the page ahead of this incident (``cursor`` is the Next link's)."""

    @pre_load
    def _blank_is_all(self, data: dict, **kwargs) -> dict:
        """The filter form sends every field, "" for "All severities" and "All sources": no filter."""
        return {name: value for name, value in data.items() if value != ""}


@bp.get("/")
@bp.get("/incidents")
def list_incidents():
    """Tabs by status, filters, search, sort and pages; ``?partial=1`` is the refreshing table alone.

    Next and Previous carry a cursor (the page's last or first incident), so page 1,000 costs what
    page 1 does; ``page`` is then only the number shown.  A hand-typed ``page`` reads by offset."""
    try:
        args = ConsoleQuery(unknown=EXCLUDE).load({"sort": DEFAULT_SORT, **request.args, "per_page": PER_PAGE})
    except ValidationError:  # a hand-edited URL shows the default list
        args = ConsoleQuery().load({"sort": DEFAULT_SORT, "per_page": PER_PAGE})
    status = args.get("status") or "triggered"
    args["status"] = status
    query, order, parts, offset = incident_query(args), incident_order(args), (), 0
    backward = "before" in args
    try:
        if backward:
            query, parts = beyond(query, parts, after(args["sort"], args["before"], before=True))
            order = incident_order(args, backward=True)
        elif "cursor" in args:
            query, parts = beyond(query, parts, after(args["sort"], args["cursor"]))
        else:
            offset = (args["page"] - 1) * PER_PAGE
    except ApiError:  # a hand-edited cursor: the list from its start, before any read
        return redirect(url_for(".list_incidents", status=status, sort=args["sort"]))
    with reading() as conn:
        # One row past the page says whether there is another one that way, without counting every match.
        rows, _ = search.read(conn, query, order, args.get("q"), conn.dialect.name, limit=PER_PAGE + 1, offset=offset,
                              parts=parts)
        # Each tab counts its status's incidents up to COUNT_CAP (a range of the status index).
        counts = {s: capped_count(conn, select(Incident.id).where(Incident.status == s)) for s in INCIDENT_STATUSES}
    more, rows = len(rows) > PER_PAGE, rows[:PER_PAGE]
    if backward:
        rows.reverse()
        if not more:  # nothing ahead of these: this is the first page, whatever number the link said
            args["page"] = 1
    here = {"status": status, "severity": args.get("severity"), "source": args.get("source"), "q": args.get("q"),
            "sort": args["sort"]}
    pages = {}  # the Previous and Next links' arguments
    if args["page"] > 1:
        pages["previous"] = {**here, "page": args["page"] - 1,
                             "before": cursor_after(args["sort"], rows[0]) if rows else None}
    if rows and (more or backward):
        pages["next"] = {**here, "page": args["page"] + 1, "cursor": cursor_after(args["sort"], rows[-1])}
    sources = [source["key"] for source in all_sources()]
    template = "incidents/rows.html" if request.args.get("partial") else "incidents/list.html"
    return render_template(template, rows=rows, counts=counts, count_cap=COUNT_CAP, args=args, status=status, statuses=INCIDENT_STATUSES,
                           severities=SEVERITIES, sources=sources, sorts=["-created_at", "-last_event_at",
                                                                          "severity", "-event_count"],
                           pages=pages)


@bp.get("/incidents/<id:incident_id>")
def incident(incident_id: int):
    with reading() as conn:
        row = conn.execute(select(Incident.__table__).where(Incident.id == incident_id)).first()
        if row is None:
            abort(404, f"no incident {incident_id}")
        entries = service.timeline(conn, incident_id)
        # The vendor's latest word on it: not the alert a person's Resolve made for the sinks.
        last_alert = conn.execute(select(AlertRow.labels, AlertRow.title)
                                  .where(AlertRow.incident_id == incident_id, AlertRow.origin == "webhook")
                                  .order_by(AlertRow.id.desc()).limit(1)).first()
        deliveries = conn.execute(
            select(DeliveryRow.sink_name, DeliveryRow.status, func.count(), func.max(DeliveryRow.id))
            .join(AlertRow, AlertRow.id == DeliveryRow.alert_id).where(AlertRow.incident_id == incident_id)
            .group_by(DeliveryRow.sink_name, DeliveryRow.status)).all()
    labels = last_alert.labels if last_alert else {}
    source_type = current_app.extensions["gateway"].registry.source_types.get(row.source_type)
    made_from = [(name, last_alert.title if name == "title" else labels.get(name, ""))
                 for name in (source_type.fingerprint_fields if source_type and last_alert else ())]
    return render_template("incidents/detail.html", incident=row, entries=entries, labels=labels, made_from=made_from,
                           deliveries=deliveries, allowed=service.allowed_actions(row.status),
                           actions=list(service.TRANSITIONS), source_actor=service.SOURCE_ACTOR)


@bp.post("/incidents/<id:incident_id>/<any(acknowledge, resolve, close):action>")
@OPERATOR
def change_status(incident_id: int, action: str):
    act(incident_id, action, actor(), NoteBody().load({"note": request.form.get("note") or None})["note"])
    return redirect(url_for(".incident", incident_id=incident_id))


@bp.post("/incidents/<id:incident_id>/comments")
@OPERATOR
def comment(incident_id: int):
    add_comment(incident_id, actor(), CommentBody().load({"body": request.form.get("body", "").strip()})["body"])
    return redirect(url_for(".incident", incident_id=incident_id) + "#add-comment")
