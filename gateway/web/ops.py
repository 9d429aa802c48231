"""/health and /metrics: what a load balancer, a probe and Prometheus look at (no auth).

``/health`` tells everything (version, time, config, database, plugins) and answers 503 when the
database cannot be used; ``/health/ready`` is the readiness probe (200 or 503, the same checks);
``/health/live`` is the liveness probe: the process answers, whatever the database does, so an
orchestrator does not restart every replica because the database is away.
"""
from __future__ import annotations

import os
from datetime import datetime, timezone
from importlib.metadata import version

from flask import Blueprint, Response, current_app, jsonify
from prometheus_client import CONTENT_TYPE_LATEST
from sqlalchemy import text
from sqlalchemy.exc import SQLAlchemyError

from gateway import metrics
from gateway.pipeline.deliveries import outbox_stats
from gateway.store.db import reading

bp = Blueprint("ops", __name__)
VERSION = version("alert-gateway")


def _basics() -> dict:
    return {"version": VERSION, "time": datetime.now(timezone.utc).isoformat(), "worker_pid": os.getpid()}


def _database() -> dict:
    engine = current_app.extensions["gateway"].engine
    try:
        with reading(engine) as conn:
            conn.execute(text("SELECT 1"))
        return {"ok": True, "backend": engine.dialect.name}
    except SQLAlchemyError as exc:
        return {"ok": False, "error": exc.__class__.__name__, "backend": engine.dialect.name}


def _readiness(database: dict) -> dict:
    """Ready when a valid config is in force and the database answers.  A failed reload does not make
    a worker unready: it keeps serving the last valid config (``config.last_reload_ok`` says so)."""
    config_ok = current_app.extensions["gateway"].runtime.snapshot is not None
    return {"ok": config_ok and database["ok"], "config": config_ok, "database": database["ok"]}


@bp.get("/health")
def health():
    gateway = current_app.extensions["gateway"]
    database = _database()
    ready = _readiness(database)
    body = {
        "status": "ok" if database["ok"] else "unavailable",
        **_basics(),
        "ready": ready,
        "database": database,
        "config": gateway.runtime.config_report(),
        "plugins": [p.as_dict() for p in gateway.registry.plugins],
    }
    return jsonify(body), 200 if database["ok"] else 503


@bp.get("/health/ready")
def ready():
    readiness = _readiness(_database())
    return jsonify({**_basics(), **readiness}), 200 if readiness["ok"] else 503


@bp.get("/health/live")
def live():
    return jsonify({"status": "alive", **_basics()})


def _outbox_collector() -> metrics.OutboxCollector:
    """One per app, so it remembers the last reading for scrapes while the database is down."""
    gateway = current_app.extensions["gateway"]
    collector = current_app.extensions.get("outbox_metrics")
    if collector is None:
        collector = current_app.extensions["outbox_metrics"] = metrics.OutboxCollector(
            lambda: outbox_stats(gateway.engine, gateway.runtime.snapshot.sinks))
    return collector


@bp.get("/metrics")
def prometheus():
    return Response(metrics.exposition(_outbox_collector()), content_type=CONTENT_TYPE_LATEST)
