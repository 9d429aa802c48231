"""Alert integration gateway.  What a plugin imports comes from here."""
from gateway.contracts import (
    DELIVERY_LEASE_SECONDS,
    SEVERITIES,
    STATUSES,
    Alert,
    Delivery,
    DeliveryError,
    Headers,
    InboundRequest,
    InlineSinkType,
    PermanentError,
    PluginError,
    Rejected,
    Reply,
    Resource,
    RetryableError,
    SinkOptions,
    SinkType,
    SourceOptions,
    SourceType,
    Transaction,
    whole_group,
)
from gateway.fields import Duration
from gateway.hookspecs import hookimpl

__all__ = [
    "DELIVERY_LEASE_SECONDS", "SEVERITIES", "STATUSES", "Alert", "Delivery", "DeliveryError", "Duration",
    "Headers", "InboundRequest", "InlineSinkType", "PermanentError", "PluginError", "Rejected", "Reply",
    "Resource", "RetryableError", "SinkOptions", "SinkType", "SourceOptions", "SourceType", "Transaction",
    "hookimpl", "whole_group",
]
