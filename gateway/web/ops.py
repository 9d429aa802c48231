"""/health and /metrics: what a load balancer and Prometheus look at (no auth)."""
from __future__ import annotations

import os

from flask import Blueprint, Response, current_app, jsonify
from prometheus_client import CONTENT_TYPE_LATEST
from sqlalchemy import func, select, text
from sqlalchemy.exc import SQLAlchemyError

from gateway import metrics
from gateway.store.models import Delivery

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


def _outbox_counts():
    gateway = current_app.extensions["gateway"]
    query = (select(Delivery.sink_name, Delivery.status, func.count())
             .where(Delivery.status.in_(("pending", "dead")))
             .group_by(Delivery.sink_name, Delivery.status))
    try:
        with gateway.engine.connect() as conn:
            return conn.execute(query).all()
    except SQLAlchemyError:
        return []


@bp.get("/metrics")
def prometheus():
    return Response(metrics.exposition(_outbox_counts), content_type=CONTENT_TYPE_LATEST)
