"""Prometheus Alertmanager ``webhook_configs`` source for the alert integration gateway."""
from gateway import hookimpl
from gateway_alertmanager.source import AlertmanagerSource

__all__ = ["AlertmanagerSource", "register_source_types"]


@hookimpl
def register_source_types(register):
    register(AlertmanagerSource)
