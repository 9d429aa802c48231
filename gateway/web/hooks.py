"""The webhook endpoint: POST /hooks/<type>/<key>/ (trailing slash optional)."""
from __future__ import annotations

from flask import Blueprint, current_app, jsonify, request

from gateway.pipeline import ingest
from gateway.web.common import read_body
from gateway.web.requestlog import note_source

bp = Blueprint("hooks", __name__)


def _headers() -> dict[str, str]:
    # WSGI hands header values over as latin-1; vendors send UTF-8.
    return {k: v.encode("latin-1", "replace").decode("utf-8", "replace") for k, v in request.headers.items()}


@bp.route("/hooks/<source_type>/<source_key>/", strict_slashes=False,
          methods=["POST", "GET", "PUT", "PATCH", "DELETE"])
def receive(source_type: str, source_key: str):
    """Other methods than POST reach ingest too, so their 405 is counted like any refusal."""
    runtime = current_app.extensions["gateway"].runtime
    outcome = ingest.receive(runtime, source_type, source_key, request.method, request.path,
                             _headers(), read_body, request.remote_addr or "", note_source)
    response = jsonify(outcome.body)
    response.status_code = outcome.status
    response.headers.update(outcome.headers)
    return response
