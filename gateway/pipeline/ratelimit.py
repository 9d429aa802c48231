"""Per-source rate limits (``rate_limit``, ``burst``): a token bucket in the database.

Every worker of every process takes from one bucket per source, so the limit is the source's,
whatever number of replicas serve it.  A bucket is one row (``rate_buckets``) and taking a token
is one statement, an upsert that refills by the time elapsed and takes a token if one is there.
A source without a limit pays nothing.  Where the statement runs is chosen per database
(measured with ``bench/ratelimit.py``; see docs/configuration.md):

- PostgreSQL: in a short transaction of its own, before the body is read (``take_alone``), so an
  over-limit sender costs one statement and no parse; its commit is not flushed to disk
  (``synchronous_commit=off``: a lost bucket update only loosens the limit for a moment), and
  the bucket row is locked only for that statement, not for the webhook's transaction.
- SQLite: in the webhook's own transaction (``take``), as its first statement: a commit of its
  own would cost a second fsync per webhook (measured: 6.3 ms a webhook, 14.1 ms with it), and
  writers take turns on SQLite anyway, so holding the bucket for the transaction costs nothing.
"""
from __future__ import annotations

import math
import time

from sqlalchemy import Connection, Double, Engine, case, literal, text
from sqlalchemy.dialects import postgresql, sqlite

from gateway.config import RateLimit
from gateway.store.db import run_in_transaction
from gateway.store.models import RateBucket

_buckets = RateBucket.__table__
_INSERT = {"postgresql": postgresql.insert, "sqlite": sqlite.insert}
_NOT_DURABLE = text("SET LOCAL synchronous_commit = off")


def _take_statement(dialect: str, key: str, limit: RateLimit, now: float):
    now_ = literal(now, Double)
    elapsed = case((now_ > _buckets.c.updated_at, now_ - _buckets.c.updated_at), else_=literal(0.0, Double))
    filled = _buckets.c.tokens + elapsed * literal(limit.rate, Double)
    refilled = case((filled > limit.burst, literal(float(limit.burst), Double)), else_=filled)
    first = _INSERT[dialect](_buckets).values(source_key=key, tokens=float(limit.burst - 1), updated_at=now,
                                              allowed=True)
    return first.on_conflict_do_update(index_elements=["source_key"], set_={
        "tokens": case((refilled >= 1, refilled - 1), else_=refilled),
        "updated_at": case((now_ > _buckets.c.updated_at, now_), else_=_buckets.c.updated_at),
        "allowed": refilled >= 1,
    }).returning(_buckets.c.tokens, _buckets.c.allowed)


def take(conn: Connection, key: str, limit: RateLimit) -> float:
    """Take one request's token from source ``key``'s bucket, in ``conn``'s transaction: 0 if the
    request may go on, else the seconds until a token is there (for ``Retry-After``)."""
    statement = _take_statement(conn.dialect.name, key, limit, time.time())
    tokens, allowed = conn.execute(statement).one()
    return 0.0 if allowed else (1 - tokens) / limit.rate


def take_alone(engine: Engine, key: str, limit: RateLimit) -> float:
    """PostgreSQL: ``take`` in a transaction of its own, whose commit need not be flushed to disk.
    (On SQLite a separate commit costs a second sync, so there the token is taken in the
    webhook's own transaction.)"""

    def work(conn: Connection) -> float:
        conn.execute(_NOT_DURABLE)
        return take(conn, key, limit)

    return run_in_transaction(engine, work)


def retry_after(seconds: float) -> str:
    """``Retry-After`` in whole seconds, at least 1."""
    return str(max(1, math.ceil(seconds)))
