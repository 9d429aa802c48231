"""The outbox as operators read it: one delivery's status, and per sink what is pending, dead and oldest.

Reads only: the dispatcher (``outbox``) changes rows; ``/api/deliveries`` and ``/metrics`` look at them.
"""
from __future__ import annotations

from datetime import datetime
from typing import Mapping, Optional

from sqlalchemy import Engine, func, select

from gateway import metrics
from gateway.contracts import InlineSinkType, SinkType
from gateway.store.db import reading
from gateway.store.models import DeliveryRow, utcnow


def delivery_status(engine: Engine, delivery_id: int) -> Optional[str]:
    """A row's status, or None if there is no such row."""
    with reading(engine) as conn:
        return conn.execute(select(DeliveryRow.status).where(DeliveryRow.id == delivery_id)).scalar()


def scheduled():
    """Rows never tried and not due yet: scheduled work (a refresh), not a backlog or a stall."""
    return (DeliveryRow.attempts == 0) & (DeliveryRow.next_attempt_at > utcnow())


def outbox_stats(engine: Engine, sinks: Mapping[str, SinkType]) -> metrics.OutboxStats:
    """Pending and dead rows per sink and each sink's oldest pending row; every configured
    outbox sink is listed, with zeros when it has no such rows.  ``scheduled`` rows are left out."""
    query = (select(DeliveryRow.sink_name, DeliveryRow.status, func.count(), func.min(DeliveryRow.created_at))
             .where(DeliveryRow.status.in_(("pending", "dead")), ~scheduled())
             .group_by(DeliveryRow.sink_name, DeliveryRow.status))
    with reading(engine) as conn:
        rows = conn.execute(query).all()
    outbox_sinks = [name for name, sink in sinks.items() if not isinstance(sink, InlineSinkType)]
    pending, dead = dict.fromkeys(outbox_sinks, 0), dict.fromkeys(outbox_sinks, 0)
    oldest: dict[str, datetime] = {}
    for sink, status, count, first in rows:
        if status == "pending":
            pending[sink], oldest[sink] = count, first
        else:
            dead[sink] = count
    return metrics.OutboxStats(pending, dead, oldest, utcnow())
