"""WhaTap "Webhook JSON" source for the alert integration gateway."""
from gateway import hookimpl
from gateway_whatap.source import WhatapSource

__all__ = ["WhatapSource", "register_source_types"]


@hookimpl
def register_source_types(register):
    register(WhatapSource)
