"""Refused webhook requests: kept per source, the newest ``global.keep_refused``, and listed with
the accepted ones as a source's requests."""
from __future__ import annotations

from typing import Any, Mapping, Optional

from sqlalchemy import Engine, Select, delete, func, insert, literal, null, select, union_all

from gateway.store.db import run_in_transaction
from gateway.store.models import Handshake, RawRequest, RefusedRequest

refused = RefusedRequest.__table__
OUTCOMES = ("accepted", "refused")


def keep(engine: Engine, limit: int, values: Mapping[str, Any]) -> None:
    """Store one refused request, and drop its source's oldest beyond ``limit``, in one transaction."""
    if limit <= 0:
        return

    def work(conn) -> None:
        conn.execute(insert(refused).values(values))
        oldest_kept = (select(refused.c.id).where(refused.c.source_key == values["source_key"])
                       .order_by(refused.c.id.desc()).limit(1).offset(limit - 1).scalar_subquery())
        conn.execute(delete(refused).where(refused.c.source_key == values["source_key"],
                                           refused.c.id < oldest_kept))

    run_in_transaction(engine, work)


def requests_of(source_key: str, outcome: Optional[str]) -> Select:
    """A source's stored requests, newest first: ``outcome`` "accepted" (the raw journal; a
    handshake with the status it was answered), "refused", or None for both."""
    accepted = (select(literal("accepted").label("outcome"), RawRequest.id,
                       func.coalesce(Handshake.status, 202).label("status"),
                       null().label("code"), null().label("message"),
                       RawRequest.alert_count, RawRequest.received_at)
                .select_from(RawRequest.__table__.outerjoin(Handshake.__table__,
                                                           Handshake.raw_request_id == RawRequest.id))
                .where(RawRequest.source_key == source_key))
    rejected = (select(literal("refused").label("outcome"), refused.c.id, refused.c.status, refused.c.code,
                       refused.c.message, literal(0).label("alert_count"), refused.c.received_at)
                .where(refused.c.source_key == source_key))
    chosen = {"accepted": [accepted], "refused": [rejected], None: [accepted, rejected]}[outcome]
    both = union_all(*chosen).subquery()
    return select(both).order_by(both.c.received_at.desc(), both.c.id.desc())


def raw_url(outcome: str, request_id: int) -> str:
    return f"/api/events/{request_id}/raw" if outcome == "accepted" else f"/api/refused/{request_id}/raw"
