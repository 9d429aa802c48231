"""The time the core reads (``gateway.store.models.utcnow``): wall-clock UTC plus an offset.

Everything the core schedules (retry backoff, lease expiry, problem refreshes) is dated
by this clock, so a test can move it forward and see a refresh due in five minutes
become due now, without sleeping.  The offset is zero unless a test sets it.
"""
from __future__ import annotations

from datetime import datetime, timedelta, timezone

_offset = timedelta(0)


def now() -> datetime:
    return datetime.now(timezone.utc) + _offset


def advance(delta: timedelta) -> None:
    """Move the clock forward by ``delta`` for everything in this process that reads it."""
    global _offset
    _offset += delta


def reset() -> None:
    """Back to wall-clock time."""
    global _offset
    _offset = timedelta(0)
