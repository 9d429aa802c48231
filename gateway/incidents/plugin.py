"""Registers the built-in ITMS incident store as sink type ``itms``.

It loads through the core distribution's own ``gateway`` entry point, exactly as a
third-party plugin would, so it can be listed and disabled like any other.
"""
from __future__ import annotations

from typing import Any, Mapping, Optional

from gateway.contracts import Alert, SinkOptions, SinkType
from gateway.hookspecs import hookimpl
from gateway.incidents import service


class IncidentStore(SinkType):
    """Deduplicated incidents in the gateway's own database, applied inside the ingest transaction."""

    name = "itms"
    options_schema = SinkOptions
    inline = True

    def apply(self, session: Any, alert: Alert, settings: Mapping[str, Any]) -> Optional[int]:
        return service.apply_alert(session, alert, settings.get("reopen_window"))


@hookimpl
def register_sink_types(register):
    register(IncidentStore)
