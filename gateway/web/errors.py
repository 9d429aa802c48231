"""Every error is JSON ``{"error": {"code": ..., "message": ...}}``, whatever raised it."""
from __future__ import annotations

import logging

from flask import Flask, jsonify, request
from marshmallow import ValidationError
from sqlalchemy.exc import DataError, DBAPIError, TimeoutError as PoolTimeout
from werkzeug.exceptions import HTTPException

from gateway.contracts import ApiError
from gateway.pipeline.ingest import Unavailable
from gateway.store.db import refusal_reason

log = logging.getLogger(__name__)


def error_response(status: int, code: str, message: str, *, headers=None, fields=None):
    error = {"code": code, "message": message}
    if fields:
        error["fields"] = fields
    response = jsonify({"error": error})
    response.status_code = status
    response.headers.update(headers or {})
    return response


def register_error_handlers(app: Flask) -> None:
    @app.errorhandler(ApiError)
    def rejected(exc: ApiError):
        return error_response(exc.status, exc.code, exc.message, headers=exc.headers, fields=exc.fields)

    @app.errorhandler(ValidationError)
    def invalid(exc: ValidationError):
        return error_response(422, "invalid_request", "request rejected: see fields", fields=exc.messages)

    @app.errorhandler(DataError)
    def refused_value(exc: DataError):
        """A value the database refused (NUL in text, too long for its column) that checks at the
        edge missed: answered as the client's (422), logged with its traceback as the gap it is.
        Neither SQL nor parameters are shown."""
        reason = refusal_reason(exc)
        log.exception("%s %s: the database refused a value: %s", request.method, request.path, reason)
        return error_response(422, "invalid_value", f"the database refused a value: {reason}")

    @app.errorhandler(Unavailable)
    def unavailable(exc: Unavailable):
        return error_response(503, "unavailable", str(exc), headers={"Retry-After": "5"})

    @app.errorhandler(DBAPIError)
    @app.errorhandler(PoolTimeout)
    def database_unavailable(exc: Exception):
        """The database down, unreachable or unusable (a refused value is DataError's, above):
        the client may retry, as a webhook sender is told to.  Logged without SQL or parameters."""
        reason = refusal_reason(exc) if isinstance(exc, DBAPIError) else str(exc)
        log.error("%s %s: the database is unavailable: %s", request.method, request.path, reason)
        return error_response(503, "unavailable", "the database is unavailable; nothing was changed, retry later",
                              headers={"Retry-After": "5"})

    @app.errorhandler(HTTPException)
    def http_error(exc: HTTPException):
        code = (exc.name or "error").lower().replace(" ", "_")
        # Keep werkzeug's own headers (Allow on a 405), not its HTML content type.
        headers = {k: v for k, v in exc.get_headers() if k.lower() != "content-type"}
        return error_response(exc.code or 500, code, exc.description or exc.name, headers=headers)

    @app.errorhandler(Exception)
    def unexpected(exc: Exception):
        log.exception("unhandled error")
        return error_response(500, "internal_error", "unexpected server error; it has been logged")
