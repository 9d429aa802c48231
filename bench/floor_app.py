"""The floor: the least a webhook receiver can do — parse the JSON and INSERT it once.

``make bench`` serves this with the same gunicorn worker class, threads and worker
count as the gateway, on the same kind of database with the same connection tuning
(SQLite: WAL, synchronous=NORMAL, busy timeout, BEGIN IMMEDIATE; PostgreSQL: a pool of
10+10), and drives it with the same wrk script.  The gateway's throughput divided by
this one's is the "fraction of the floor" the issue sets a target for.

    BENCH_FLOOR_DATABASE_URL=sqlite:////tmp/x/floor.db \
        python -m gunicorn --worker-class gthread --threads 4 --workers 2 'bench.floor_app:create_app()'
"""
from __future__ import annotations

import json
import os
from datetime import datetime, timezone

from flask import Flask, jsonify, request
from sqlalchemy import JSON, Column, DateTime, Integer, MetaData, Table, create_engine, event, insert

metadata = MetaData()
webhooks = Table(
    "floor_webhooks", metadata,
    Column("id", Integer, primary_key=True),
    Column("body", JSON, nullable=False),
    Column("received_at", DateTime(timezone=True), nullable=False),
)


def make_engine(url: str):
    """The same per-backend tuning the gateway's engine has, so the floor is a fair one."""
    if url.startswith("sqlite"):
        engine = create_engine(url, connect_args={"timeout": 30, "check_same_thread": False})

        @event.listens_for(engine, "connect")
        def _pragmas(dbapi_conn, _record):
            dbapi_conn.isolation_level = None
            cur = dbapi_conn.cursor()
            cur.execute("PRAGMA journal_mode=WAL")
            cur.execute("PRAGMA synchronous=NORMAL")
            cur.execute("PRAGMA busy_timeout=30000")
            cur.close()

        @event.listens_for(engine, "begin")
        def _begin(conn):
            conn.exec_driver_sql("BEGIN IMMEDIATE")

        return engine
    return create_engine(url, pool_size=10, max_overflow=10, pool_recycle=1800)


def create_schema(url: str) -> None:
    engine = make_engine(url)
    metadata.create_all(engine)
    engine.dispose()


def create_app() -> Flask:
    app = Flask(__name__)
    engine = make_engine(os.environ["BENCH_FLOOR_DATABASE_URL"])
    stmt = insert(webhooks).returning(webhooks.c.id)

    @app.post("/hooks/<source_type>/<source_key>/", strict_slashes=False)
    def receive(source_type: str, source_key: str):
        try:
            payload = json.loads(request.get_data())
        except ValueError:
            return jsonify({"error": "invalid_json"}), 400
        with engine.begin() as conn:
            row_id = conn.execute(stmt, {"body": payload, "received_at": datetime.now(timezone.utc)}).scalar_one()
        return jsonify({"status": "accepted", "id": row_id}), 202

    return app
