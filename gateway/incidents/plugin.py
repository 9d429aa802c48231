"""Registers the built-in ITMS incident store: sink type ``itms`` and its ``/api/incidents`` routes.

It loads through the core distribution's own ``gateway`` entry point, exactly as a
third-party plugin would, so it can be listed and disabled like any other; disabled, it
has no routes either.
"""
from __future__ import annotations

from typing import Any, Mapping, Optional

from gateway import Alert, InlineSinkType, SinkOptions, Transaction, hookimpl
from gateway.incidents import api, console, service


class IncidentStore(InlineSinkType):
    """Deduplicated incidents in the gateway's own database, applied inside the ingest transaction."""

    name = "itms"
    options_schema = SinkOptions

    def apply(self, tx: Transaction, alert: Alert, settings: Mapping[str, Any]) -> Optional[int]:
        return service.apply_alert(tx.connection, alert, settings.get("reopen_window"))


@hookimpl
def register_sink_types(register):
    register(IncidentStore)


@hookimpl
def register_blueprints(register):
    register(api.bp)
    register(console.bp)  # the console's incident list and pages
