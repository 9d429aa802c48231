"""/health and /metrics: what a load balancer and Prometheus look at (no auth)."""
from __future__ import annotations

import os

from flask import Blueprint, Response, current_app, jsonify
from prometheus_client import CONTENT_TYPE_LATEST
from sqlalchemy import text
from sqlalchemy.exc import SQLAlchemyError

from gateway import metrics
from gateway.pipeline.outbox import outbox_stats

bp = Blueprint("ops", __name__)


@bp.get("/health")
def health():
    gateway = current_app.extensions["gateway"]
    try:
        with gateway.engine.connect() as conn:
            conn.execute(text("SELECT 1"))
        database = {"ok": True}
    except SQLAlchemyError as exc:
        database = {"ok": False, "error": str(exc.__class__.__name__)}
    runtime = gateway.runtime
    body = {
        "status": "ok" if database["ok"] else "unavailable",
        "database": {**database, "backend": gateway.engine.dialect.name},
        "config": {"path": runtime.config_path, "loaded_at": runtime.snapshot.config.loaded_at.isoformat(),
                   "last_reload_ok": runtime.reload_ok},
        "plugins": [p.as_dict() for p in gateway.registry.plugins],
        "worker_pid": os.getpid(),  # which gunicorn worker answered
    }
    return jsonify(body), 200 if database["ok"] else 503


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
