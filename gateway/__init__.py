"""Alert integration gateway.  What a plugin imports comes from here."""
from gateway.contracts import (
    ALERT_STATUSES,
    SEVERITIES,
    Alert,
    Delivery,
    DeliveryError,
    Headers,
    InboundRequest,
    InlineSinkType,
    Link,
    PermanentError,
    PluginError,
    Refused,
    Rejected,
    Reply,
    Resource,
    RetryableError,
    SinkOptions,
    SinkType,
    SourceOptions,
    SourceType,
    Transaction,
)
from gateway.deadline import DELIVERY_DEADLINE_SECONDS, DELIVERY_LEASE_SECONDS, Deadline
from gateway.fields import Duration
from gateway.fingerprints import whole_group
from gateway.hookspecs import hookimpl

__all__ = [
    "ALERT_STATUSES", "DELIVERY_DEADLINE_SECONDS", "DELIVERY_LEASE_SECONDS", "SEVERITIES", "Alert", "Deadline",
    "Delivery", "DeliveryError", "Duration", "Headers", "InboundRequest", "InlineSinkType", "Link", "PermanentError",
    "PluginError", "Refused", "Rejected", "Reply", "Resource", "RetryableError", "SinkOptions", "SinkType",
    "SourceOptions", "SourceType", "Transaction", "hookimpl", "whole_group",
]
