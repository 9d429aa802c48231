"""The outbox claim's plan is good on a table PostgreSQL has no statistics for (issue 11, item 4).

Until autovacuum's first ANALYZE, the planner guesses.  With the old indexes it checked each
candidate's earlier rows by scanning every pending row of the sink: 1.2-1.3 s per claim at 4,000
pending rows.  Here a fresh schema gets 100,000 rows (4,000 pending, in two sinks) with
autovacuum off, and EXPLAIN ANALYZE of the claim, as the dispatcher builds it, must show index
lookups only: no sequential scan of the outbox, and the earlier-row check keyed on the row's
ordering key.
"""
from __future__ import annotations

import json

import pytest
from sqlalchemy import text

from gateway.pipeline.outbox import Dispatcher
from gateway.store.db import make_engine
from gateway.testing import migrated_schema

ROWS, PENDING_FROM = 100_000, 96_001


@pytest.fixture
def unanalyzed_outbox():
    """An engine on a fresh schema whose outbox has 100,000 rows and no statistics."""
    with migrated_schema("gw_plan") as url:
        engine = make_engine(url)
        with engine.begin() as conn:
            for table in ("alerts", "deliveries"):
                conn.execute(text(f"ALTER TABLE {table} SET (autovacuum_enabled = false)"))
            conn.execute(text(
                "INSERT INTO alerts (source_key, source_type, fingerprint, status, severity, title, description,"
                " resource_id, resource_name, resource_type, occurred_at, labels, origin, received_at)"
                " VALUES ('s', 't', 'f', 'firing', 'info', 'x', '', '', '', '', now(), '{}', 'webhook', now())"))
            conn.execute(text(
                "INSERT INTO deliveries (alert_id, sink_name, ordering_key, status, attempts, next_attempt_at,"
                " created_at)"
                " SELECT 1, CASE WHEN g % 2 = 0 THEN 'spaceone' ELSE 'other' END, 'fp' || (g % 3000),"
                f"  CASE WHEN g >= {PENDING_FROM} THEN 'pending' WHEN g % 50 = 0 THEN 'dead' ELSE 'delivered' END,"
                "  0, now(), now()"
                f" FROM generate_series(1, {ROWS}) g"))
        yield engine
        engine.dispose()


def plan_nodes(plan: dict):
    yield plan
    for child in plan.get("Plans", []):
        yield from plan_nodes(child)


def test_the_claim_uses_the_outbox_indexes_on_a_table_without_statistics(unanalyzed_outbox):
    engine = unanalyzed_outbox

    class Runtime:  # all a Dispatcher's claim needs
        pass

    runtime = Runtime()
    runtime.engine = engine
    stmt = Dispatcher(runtime).claim_statement("spaceone", "plan-test")
    compiled = stmt.compile(dialect=engine.dialect)
    with engine.connect() as conn:
        unanalyzed = conn.execute(text(
            "SELECT last_analyze IS NULL AND last_autoanalyze IS NULL FROM pg_stat_user_tables"
            " WHERE relname = 'deliveries' AND schemaname = current_schema()")).scalar()
        assert unanalyzed and not conn.execute(text(
            "SELECT count(*) FROM pg_stats WHERE tablename = 'deliveries' AND schemaname = current_schema()")).scalar()
        # ANALYZE runs the claim; the connection's transaction is rolled back when it closes.
        (raw,) = conn.exec_driver_sql("EXPLAIN (ANALYZE, FORMAT JSON) " + compiled.string, compiled.params).one()
    document = raw if isinstance(raw, list) else json.loads(raw)
    nodes = list(plan_nodes(document[0]["Plan"]))
    outbox_scans = [n for n in nodes if n.get("Relation Name") == "deliveries" and "Scan" in n["Node Type"]]
    assert outbox_scans and not [n for n in outbox_scans if n["Node Type"] == "Seq Scan"], outbox_scans
    assert any("ordering_key = " in n.get("Index Cond", "") for n in outbox_scans), \
        "the earlier-row check is not an index lookup by ordering key"
    examined = sum(n["Actual Rows"] * n["Actual Loops"] + n.get("Rows Removed by Filter", 0)
                   + n.get("Rows Removed by Join Filter", 0) for n in nodes)
    assert examined < 1_000, f"{examined} rows examined to claim 20"
    assert document[0]["Plan"]["Actual Rows"] == 20
