"""Alert integration gateway.  What a plugin imports comes from here."""
from gateway.contracts import (
    DELIVERY_DEADLINE_SECONDS,
    DELIVERY_LEASE_SECONDS,
    SEVERITIES,
    STATUSES,
    Alert,
    Deadline,
    Delivery,
    DeliveryError,
    Headers,
    InboundRequest,
    PermanentError,
    Rejected,
    Reply,
    Resource,
    RetryableError,
    SinkOptions,
    SinkType,
    SourceOptions,
    SourceType,
)
from gateway.fields import Duration
from gateway.hookspecs import hookimpl

__all__ = [
    "DELIVERY_DEADLINE_SECONDS", "DELIVERY_LEASE_SECONDS", "SEVERITIES", "STATUSES", "Alert", "Deadline",
    "Delivery", "DeliveryError", "Duration", "Headers", "InboundRequest", "PermanentError", "Rejected", "Reply",
    "Resource", "RetryableError", "SinkOptions", "SinkType", "SourceOptions", "SourceType", "hookimpl",
]
