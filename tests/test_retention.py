"""Purge in bounded batches: each batch its own transaction, so a long purge never holds the
database (SQLite's writer lock) for more than one batch."""
from __future__ import annotations

from datetime import timedelta

from sqlalchemy import event, insert, select

from gateway.store.db import make_engine
from gateway.store.models import RawRequest, RefusedRequest, utcnow
from gateway.store.retention import purge


def test_purge_deletes_old_requests_a_batch_per_transaction(database_url):
    engine = make_engine(database_url)
    now = utcnow()
    old = now - timedelta(days=10)
    with engine.begin() as conn:
        conn.execute(insert(RawRequest), [dict(
            source_key="src", source_type="testsrc", method="POST", path="/hooks", headers={}, body=b"{}",
            received_at=now if n == 5 else old, external_id=str(n), alert_count=0) for n in range(6)])
        conn.execute(insert(RefusedRequest), [dict(
            source_key="src", received_at=old, status=400, code="bad", message="bad") for _ in range(3)])
    deletes = []
    event.listen(engine, "before_cursor_execute",
                 lambda conn, cursor, statement, *rest: deletes.append(statement.split()[2])
                 if statement.startswith("DELETE") else None)
    commits = []
    event.listen(engine, "commit", lambda conn: commits.append(1))

    assert purge(engine, now - timedelta(days=7), batch=2) == (5, 3)

    # 5 old raw requests: 2 + 2 + 1; 3 refused: 2 + 1.  One transaction each.
    assert deletes == ["refused_requests"] * 2 + ["raw_requests"] * 3
    assert len(commits) == 5
    with engine.connect() as conn:
        assert conn.execute(select(RawRequest.external_id)).scalars().all() == ["5"]
        assert conn.execute(select(RefusedRequest.id)).all() == []
    engine.dispose()
