"""One delivery attempt: send a claimed outbox row to its sink and decide what its outcome does to it.

The dispatcher (``outbox``) claims and records rows; what happens in between is here, so it
can be read (and changed) without the leases around it: the call under its ``Deadline``, the outcome
(delivered, retry, dead) and, for a retry, when the row is due again.
"""
from __future__ import annotations

import logging
import random
import time
from datetime import datetime, timedelta
from typing import Any, NamedTuple, Optional

from gateway.contracts import Alert, Delivery, PermanentError, RetryableError, SinkType
from gateway.deadline import Deadline
from gateway.pipeline import problems
from gateway.store.models import utcnow

log = logging.getLogger("gateway.pipeline.outbox")  # the dispatcher's lines, as they were
MAX_RETRY_AFTER = 3600.0


def backoff_delay(attempt: int, initial: float, maximum: float) -> float:
    """Exponential backoff with jitter: half the delay is fixed, half random, so retries spread out."""
    delay = min(maximum, initial * 2 ** max(0, attempt - 1))
    return delay / 2 + random.uniform(0, delay / 2)


class Attempt(NamedTuple):
    """One delivery attempt made and decided, waiting to be written."""

    row: Any
    delivery: Delivery
    period: Optional[problems.Period]
    started: datetime
    seconds: float
    now: datetime
    outcome: str
    values: dict
    error: Optional[str]
    status_code: Optional[int]
    retryable: bool
    """The destination did not take it for a reason that may pass (the outcome may still be dead:
    the row's time or attempts ran out)."""


def attempt(sink: SinkType, row, alert: Alert, deadline: Deadline, period: Optional[problems.Period]) -> Attempt:
    """One attempt of a claimed row (its ``ordering_key`` is the problem's fingerprint): send it
    and decide its outcome, which the dispatcher writes.

    ``period``: the row's problem period, for a sink that tracks problems."""
    started = utcnow()
    clock = time.perf_counter()
    error: Optional[str] = None
    status_code: Optional[int] = None
    retry_after: Optional[float] = None
    delivery = Delivery(row.id, row.attempts, sink.name, alert, deadline, *(period or (None, False)),
                        fingerprint=row.ordering_key)
    try:
        sink.deliver(delivery)
        outcome = "delivered"
    except PermanentError as exc:
        outcome, error, status_code = "dead", describe(exc), exc.status_code
    except RetryableError as exc:
        outcome, error, status_code, retry_after = "retry", describe(exc), exc.status_code, exc.retry_after
    except Exception as exc:  # a plugin bug must not kill the dispatcher; retry like a transient error
        log.exception("sink %s raised unexpectedly on delivery %s", sink.name, row.id)
        outcome, error = "retry", f"{exc.__class__.__name__}: {exc}"
    if deadline.cut:  # whatever the sink made of it, the answer it read was incomplete
        outcome, error = "retry", f"cut at the delivery deadline; {error or 'the answer was incomplete'}"
    seconds = time.perf_counter() - clock
    now = utcnow()
    retryable = outcome == "retry"
    outcome, error, values = next_step(sink.options, row, now, outcome, error, retry_after)
    return Attempt(row, delivery, period, started, seconds, now, outcome, values, error, status_code, retryable)


def next_step(options, row, now: datetime, outcome: str, error: Optional[str],
              retry_after: Optional[float]) -> tuple[str, Optional[str], dict]:
    """What an attempt's outcome does to the row: delivered, dead, or due again after a backoff.

    A retry goes dead only once the row has waited ``max_age`` since it was queued (or
    re-driven), or after ``max_attempts`` when the operator set that limit.
    """
    if outcome == "retry":
        age = (now - (row.requeued_at or row.created_at)).total_seconds()
        if options["max_attempts"] is not None and row.attempts >= options["max_attempts"]:
            outcome, error = "dead", f"gave up after {row.attempts} attempts; last error: {error}"
        elif age >= options["max_age"]:
            outcome, error = "dead", (f"gave up after {age:.0f}s of retries (max_age {options['max_age']:g}s), "
                                      f"{row.attempts} attempts; last error: {error}")
    if outcome in ("delivered", "dead"):
        return outcome, error, {"status": outcome, "finished_at": now}
    delay = (min(retry_after, MAX_RETRY_AFTER) if retry_after is not None else backoff_delay(
        row.attempts, options["backoff_initial"], options["backoff_max"]))
    return outcome, error, {"next_attempt_at": now + timedelta(seconds=delay)}


def describe(exc: Exception) -> str:
    text = str(exc)
    response = getattr(exc, "response", None)
    return f"{text} | response: {response}" if response and response not in text else text
