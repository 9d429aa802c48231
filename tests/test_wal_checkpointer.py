"""SQLite's WAL is copied back by a background thread in serving processes, and stays small."""
from __future__ import annotations

import os

from sqlalchemy import insert

from gateway.store.db import make_engine, run_in_transaction, start_wal_checkpointer, upgrade
from gateway.store.models import RawRequest, utcnow

COMMITS = 12_000
LIMIT = 48 * 1024 * 1024
"""Without the thread, SQLite checkpoints only at its 20,000-page safety net: these commits
(three pages each or more) would take the WAL to 80 MiB."""


def write(engine, wal: str) -> int:
    """Commit 4 KiB webhooks one per transaction, as ingest does, in a tight loop; returns the largest WAL seen."""
    largest = 0
    for commits in range(1, COMMITS + 1):
        run_in_transaction(engine, lambda conn: conn.execute(insert(RawRequest.__table__), dict(
            source_key="src", source_type="testsrc", method="POST", path="/hooks/testsrc/src/", headers={},
            body=os.urandom(4096), content_type="application/json", remote_addr="127.0.0.1",
            received_at=utcnow(), external_id=None, alert_count=0)))
        if commits % 100 == 0:
            largest = max(largest, os.path.getsize(wal))
    return largest


def test_the_wal_stays_small_under_steady_writes(tmp_path):
    url = f"sqlite:///{tmp_path / 'gateway.db'}"
    upgrade(url)
    engine = make_engine(url)
    start_wal_checkpointer(engine)
    largest = write(engine, f"{tmp_path / 'gateway.db'}-wal")
    engine.dispose()
    assert largest < LIMIT
