"""The webhook endpoint: POST /hooks/<type>/<key>/ (trailing slash optional)."""
from __future__ import annotations

from flask import Blueprint, current_app, jsonify, request
from marshmallow import INCLUDE, Schema, fields, validate

from gateway.pipeline import ingest
from gateway.web.common import read_body
from gateway.web.openapi import documented
from gateway.web.requestlog import note_source

bp = Blueprint("hooks", __name__)


def _headers() -> dict[str, str]:
    # WSGI hands header values over as latin-1; vendors send UTF-8.
    return {k: v.encode("latin-1", "replace").decode("utf-8", "replace") for k, v in request.headers.items()}


class RefusedAlert(Schema):
    index = fields.Integer(required=True, metadata={"description": "the alert's place in what the source parsed"})
    code = fields.String(required=True)
    message = fields.String(required=True)
    fields_ = fields.Dict(data_key="fields", keys=fields.String(), metadata={"description": "each bad field"})


class Accepted(Schema):
    status = fields.String(required=True, validate=validate.OneOf(("accepted",)))
    alerts = fields.List(fields.Integer(), required=True, metadata={"description": "the stored alerts' ids"})
    refused = fields.List(fields.Nested(RefusedAlert), required=True,
                          metadata={"description": "the alerts refused alone; the others were stored"})
    duplicates = fields.List(fields.Integer(), required=True,
                             metadata={"description": "places of alerts accepted before (stored nothing again)"})


class Answered(Schema):
    """A duplicate (``{"status": "duplicate"}``, nothing stored again) or a source's own answer
    to a protocol message such as a subscription confirmation."""

    class Meta:
        unknown = INCLUDE

    status = fields.String(metadata={"description": "`duplicate`, or the source's own"})


@bp.route("/hooks/<source_type>/<source_key>/", strict_slashes=False,
          methods=["POST", "GET", "PUT", "PATCH", "DELETE"])
@documented("Receive a webhook", methods=("POST",), public=True, body={"description": "the vendor's JSON"},
            examples={"source_type": "alertmanager", "source_key": "alertmanager-prod"},
            responses={202: Accepted, 200: Answered},
            errors={400: "the body is not strict JSON (`invalid_json`), or a source refused its shape",
                    429: "the source's `rate_limit` is spent (`rate_limited`); retry after `Retry-After` seconds",
                    401: "the source's own authentication failed (a token, a signature, Basic credentials)",
                    403: "the source is disabled (`source_disabled`)",
                    404: "no source of that type has that key (`unknown_source`)",
                    413: "the body is over `max_body_size` (`body_too_large`)",
                    422: "the payload is not one the source can turn into alerts (`invalid_payload`, "
                         "`unprocessable_payload`, `unstorable_payload`)",
                    503: "the database is unavailable (`unavailable`): nothing was stored; retry after "
                         "`Retry-After` seconds"})
def receive(source_type: str, source_key: str):
    """Other methods than POST reach ingest too, so their 405 is counted like any refusal."""
    runtime = current_app.extensions["gateway"].runtime
    outcome = ingest.receive(runtime, source_type, source_key, request.method, request.path,
                             _headers(), read_body, request.remote_addr or "", note_source)
    response = jsonify(outcome.body)
    response.status_code = outcome.status
    response.headers.update(outcome.headers)
    return response
