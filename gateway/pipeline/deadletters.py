"""Dead rows: which later delivery superseded each, and putting the others back in the queue."""
from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Optional

from sqlalchemy import func, select, update
from sqlalchemy.orm import aliased

from gateway.pipeline.runtime import Runtime
from gateway.store.db import run_in_transaction
from gateway.store.lists import one_of
from gateway.store.models import DeliveryRow, utcnow

log = logging.getLogger("gateway.pipeline.outbox")  # the dispatcher's lines, as they were
deliveries = DeliveryRow.__table__


def superseded_by():
    """For a dead row: the first later delivery of its problem to the same sink, else NULL.

    Such a row was never delivered and will not be: the sink has a newer state of the
    problem, and the older one sent now (an ALERT after its RECOVERY) would bring back a
    problem that has ended.  ``/api/deliveries`` shows it, so the loss is never silent.
    """
    later = aliased(DeliveryRow)
    first_later = (select(func.min(later.id))
                   .where(later.sink_name == DeliveryRow.sink_name, later.ordering_key == DeliveryRow.ordering_key,
                          later.id > DeliveryRow.id, later.status == "delivered")
                   .scalar_subquery())
    return first_later.label("superseded_by")


@dataclass(frozen=True)
class Redriven:
    requeued: int
    superseded: dict[int, int]
    """Each dead row that stays dead, with the later delivery that superseded it."""


def redrive(runtime: Runtime, *, delivery_id: Optional[int] = None, sink: Optional[str] = None) -> Redriven:
    """Put dead rows (one, or all of a sink's) back in the queue with a fresh retry budget:
    their attempts count from zero and their ``max_age`` from now; the attempt log stays.
    Superseded rows (see ``superseded_by``) stay dead."""
    where = DeliveryRow.id == delivery_id if delivery_id is not None else DeliveryRow.sink_name == sink

    def work(conn) -> Redriven:
        # One read decides both sets, so a row delivered meanwhile cannot leave a dead row in neither.
        dead = dict(conn.execute(select(DeliveryRow.id, superseded_by()).where(DeliveryRow.status == "dead", where)).all())
        requeue = [row_id for row_id, later_id in dead.items() if later_id is None]
        now = utcnow()
        requeued = conn.execute(
            update(deliveries).where(one_of(deliveries.c.id, "ids"), deliveries.c.status == "dead")
            .values(status="pending", attempts=0, next_attempt_at=now, requeued_at=now, finished_at=None,
                    claimed_by=None, claimed_until=None, blocked=False), {"ids": requeue}).rowcount if requeue else 0
        return Redriven(requeued, {row_id: later_id for row_id, later_id in dead.items() if later_id is not None})

    result = run_in_transaction(runtime.engine, work)
    if result.requeued:
        log.info("re-driven: %d dead deliveries back in the queue (%s)", result.requeued,
                 f"delivery {delivery_id}" if delivery_id is not None else f"sink {sink}",
                 extra={"requeued": result.requeued, "delivery_id": delivery_id, "sink": sink})
        runtime.notify_deliveries()
    return result
