"""The floor: the least a webhook receiver can do — parse the JSON and INSERT it once.

``make bench`` serves this with the same gunicorn worker class, threads, worker count and
keep-alive cycling and buffering front (bench/floor_gunicorn.py) as the gateway, on the same kind of database,
and drives it with the same wrk script.  On PostgreSQL its engine is the gateway's own
(``gateway.store.db.make_engine``, so the two cannot drift apart).  On SQLite it has the
gateway's WAL, synchronous level (GATEWAY_SQLITE_SYNCHRONOUS, FULL by default), 30 s busy timeout and BEGIN IMMEDIATE for writes, but
not the gateway's writer flock, which queues writers across threads and workers, nor its
background WAL checkpointer (and the raised ``wal_autocheckpoint`` that goes with it):
the floor's writers wait in SQLite's busy handler, and SQLite checkpoints in the commit
that crosses its default 1,000 pages.  The gateway's throughput divided by this one's is
the "fraction of the floor" the issue sets a target for.

By hand, from the repository root, as bench/bench.py's start_floor does it (``--threads``:
BENCH_THREADS or GATEWAY_THREADS, else the gateway's default without group commit, ``default_threads`` in
gateway/web/gunicorn_conf.py: 1 on SQLite, 2 on PostgreSQL; bench.py also binds
``127.0.0.1:<free port>``):

    export BENCH_FLOOR_DATABASE_URL=sqlite:////tmp/x/floor.db
    python -c 'import os; from bench.floor_app import create_schema; create_schema(os.environ["BENCH_FLOOR_DATABASE_URL"])'
    python -m gunicorn --config python:bench.floor_gunicorn --threads 1 \
        --workers 2 --graceful-timeout 20 'bench.floor_app:create_app()'
"""
from __future__ import annotations

import json
import os
from datetime import datetime, timezone

from flask import Flask, jsonify, request
from sqlalchemy import JSON, Column, DateTime, Integer, MetaData, Table, create_engine, event, insert

from gateway.store import db as gateway_db

metadata = MetaData()
webhooks = Table(
    "floor_webhooks", metadata,
    Column("id", Integer, primary_key=True),
    Column("body", JSON, nullable=False),
    Column("received_at", DateTime(timezone=True), nullable=False),
)


def make_engine(url: str):
    """PostgreSQL: the gateway's own engine.  SQLite: the gateway's pragmas and BEGIN IMMEDIATE,
    deliberately without its writer flock and WAL checkpointer (see the module docstring)."""
    if url.startswith("sqlite"):
        engine = create_engine(url, connect_args={"timeout": 30, "check_same_thread": False})

        @event.listens_for(engine, "connect")
        def _pragmas(dbapi_conn, _record):
            dbapi_conn.isolation_level = None
            cur = dbapi_conn.cursor()
            cur.execute("PRAGMA journal_mode=WAL")
            cur.execute(f"PRAGMA synchronous={os.environ.get('GATEWAY_SQLITE_SYNCHRONOUS') or 'FULL'}")
            cur.execute("PRAGMA busy_timeout=30000")
            cur.close()

        @event.listens_for(engine, "begin")
        def _begin(conn):
            conn.exec_driver_sql("BEGIN IMMEDIATE")

        return engine
    return gateway_db.make_engine(url)


def create_schema(url: str) -> None:
    engine = make_engine(url)
    metadata.create_all(engine)
    engine.dispose()


def create_app() -> Flask:
    """The floor on ``BENCH_FLOOR_DATABASE_URL``; without it, the HTTP floor: the same front, JSON
    parse and answer, nothing stored (issue 16's stretch measures the gateway against it too)."""
    app = Flask(__name__)
    url = os.environ.get("BENCH_FLOOR_DATABASE_URL")
    engine = make_engine(url) if url else None
    stmt = insert(webhooks).returning(webhooks.c.id)

    @app.post("/hooks/<source_type>/<source_key>/", strict_slashes=False)
    def receive(source_type: str, source_key: str):
        try:
            payload = json.loads(request.get_data())
        except ValueError:
            return jsonify({"error": "invalid_json"}), 400
        if engine is None:
            return jsonify({"status": "accepted"}), 202
        with engine.begin() as conn:
            row_id = conn.execute(stmt, {"body": payload, "received_at": datetime.now(timezone.utc)}).scalar_one()
        return jsonify({"status": "accepted", "id": row_id}), 202

    return app
