"""One log line per request, and the ``X-Request-ID`` every answer carries.

The id is the client's (or its proxy's), cleaned (``gateway.logs.request_id``), or a fresh one;
it is in the log line and the answer, so an operator can find a sender's request by the id the
sender saw.  A source key in the path is logged as ``<key>``: an API source's key may be its
only secret, as in ``/metrics``, where a source is named by its name.
"""
from __future__ import annotations

import logging
import time

from flask import Flask, Response, g, request

from gateway.logs import REQUEST_ID_HEADER, request_id

log = logging.getLogger("gateway.requests")


def logged_path() -> str:
    """The request's path with every source key in it replaced by ``<key>``."""
    path = request.path
    for name, value in (request.view_args or {}).items():
        if name.endswith("key") and isinstance(value, str) and value:
            path = path.replace(f"/{value}", "/<key>")
    return path


def note_source(name: str) -> None:
    """The source a webhook was for, by its name, for the request's log line."""
    g.source = name


def register_request_log(app: Flask) -> None:
    @app.before_request
    def start() -> None:
        g.request_id = request_id(request.headers.get(REQUEST_ID_HEADER))
        g.started = time.perf_counter()

    @app.after_request
    def finish(response: Response) -> Response:
        rid = response.headers[REQUEST_ID_HEADER] = g.request_id
        duration_ms = round((time.perf_counter() - g.started) * 1000, 1)
        fields = {"method": request.method, "path": logged_path(), "source": g.get("source"),
                  "status": response.status_code, "duration_ms": duration_ms, "request_id": rid}
        log.info("%s %s %s %.1fms source=%s request_id=%s", fields["method"], fields["path"], fields["status"],
                 duration_ms, fields["source"] or "-", rid, extra=fields)
        return response
