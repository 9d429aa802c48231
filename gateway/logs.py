"""Logging: one handler for the whole process, text or JSON (``GATEWAY_LOG_FORMAT=json``), and request ids.

Every process (``gateway serve``'s workers, ``gateway worker``) calls ``configure_logging`` once;
gunicorn keeps its own loggers.  A log call's ``extra`` fields become keys of the JSON line,
so a log collector can filter by ``request_id``, ``source`` or ``status`` without parsing text.
"""
from __future__ import annotations

import json
import logging
import re
import sys
import uuid
from datetime import datetime, timezone
from typing import Optional

LOG_FORMATS = ("text", "json")
REQUEST_ID_HEADER = "X-Request-ID"
MAX_REQUEST_ID = 128
"""The longest request id taken from a client; a longer one is cut, never echoed whole."""
_NOT_IN_REQUEST_ID = re.compile(r"[^A-Za-z0-9._:/+=@-]")
_STANDARD = frozenset(vars(logging.makeLogRecord({}))) | {"message", "asctime"}


def request_id(given: Optional[str]) -> str:
    """The client's ``X-Request-ID``, cut to characters that cannot forge a log line or a header and to
    MAX_REQUEST_ID; a fresh one when it gave none (or nothing of it is left)."""
    kept = _NOT_IN_REQUEST_ID.sub("", given or "")[:MAX_REQUEST_ID]
    return kept or uuid.uuid4().hex


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, message and the record's ``extra`` fields."""

    def format(self, record: logging.LogRecord) -> str:
        line = {"time": datetime.fromtimestamp(record.created, timezone.utc).isoformat(timespec="milliseconds"),
                "level": record.levelname.lower(), "logger": record.name, "message": record.getMessage()}
        line.update((key, value) for key, value in vars(record).items() if key not in _STANDARD)
        if record.exc_info:
            line["exception"] = self.formatException(record.exc_info)
        return json.dumps(line, ensure_ascii=False, default=str)


_HANDLER_NAME = "gateway"


def configure_logging(log_format: str = "text") -> None:
    """Info and above to stderr, in ``log_format``; calling it again changes nothing."""
    if log_format not in LOG_FORMATS:
        raise ValueError(f"GATEWAY_LOG_FORMAT={log_format!r}: use one of {', '.join(LOG_FORMATS)}")
    root = logging.getLogger()
    if any(handler.get_name() == _HANDLER_NAME for handler in root.handlers):
        return
    handler = logging.StreamHandler(sys.stderr)
    handler.set_name(_HANDLER_NAME)
    handler.setFormatter(JsonFormatter() if log_format == "json" else
                         logging.Formatter("%(asctime)s %(levelname)s [%(process)d] %(name)s: %(message)s"))
    root.addHandler(handler)
    root.setLevel(logging.INFO)
