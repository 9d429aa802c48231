"""Prometheus metrics, correct across gunicorn workers.

``gateway serve`` points ``PROMETHEUS_MULTIPROC_DIR`` at a fresh directory before it
starts gunicorn (prometheus_client reads it at import), so every worker writes its own files and ``/metrics`` adds them up.
The outbox's figures are read from the database at scrape time (``OutboxCollector``).
"""
from __future__ import annotations

import os
import threading
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Callable, Mapping, Optional

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client import multiprocess
from prometheus_client.core import GaugeMetricFamily
from sqlalchemy.exc import SQLAlchemyError

WEBHOOKS_RECEIVED = Counter("gateway_webhooks_received_total", "Webhook requests received", ["source"])
WEBHOOKS_ACCEPTED = Counter("gateway_webhooks_accepted_total", "Webhook requests stored (2xx)", ["source", "outcome"])
WEBHOOKS_REJECTED = Counter("gateway_webhooks_rejected_total", "Webhook requests refused", ["source", "reason"])
ALERTS_REFUSED = Counter("gateway_alerts_refused_total",
                         "Alerts of a webhook refused on their own (the request's other alerts were kept)",
                         ["source", "reason"])
HTTP_REJECTED = Counter("gateway_http_rejected_total",
                        "Requests the HTTP front refused before the application saw them", ["reason"])
INGEST_SECONDS = Histogram(
    "gateway_ingest_duration_seconds",
    "Time from request to acknowledgement",
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5),
)
DELIVERY_ATTEMPTS = Counter("gateway_delivery_attempts_total", "Outbox delivery attempts", ["sink", "outcome"])
SINK_ERRORS = Counter(
    "gateway_sink_errors_total", "Sink code that raised on the ingest path (the alert was stored)", ["sink", "stage"]
)
REFRESH_ATTEMPTS = Counter(
    "gateway_refresh_attempts_total", "Outbox attempts that re-sent an open problem's firing (refreshes)",
    ["sink", "outcome"],
)
SINK_PAUSED = Gauge(
    "gateway_sink_paused", "1 while a sink's deliveries are paused, its destination failing (one probe at a time)",
    ["sink"], multiprocess_mode="livemax",
)
DELIVERIES_EXPIRED = Counter(
    "gateway_deliveries_expired_total", "Rows that reached max_age while their sink was paused, ended dead untried",
    ["sink"],
)
CONFIG_RELOAD_OK = Gauge(
    "gateway_config_last_reload_successful", "1 if the last config (re)load succeeded",
    multiprocess_mode="min",
)
CONFIG_RELOAD_TIME = Gauge(
    "gateway_config_last_reload_success_timestamp_seconds", "When the config was last loaded",
    multiprocess_mode="max",
)


@dataclass(frozen=True)
class OutboxStats:
    """The outbox per sink as last read from the database."""

    pending: Mapping[str, int]
    dead: Mapping[str, int]
    oldest_pending: Mapping[str, datetime]
    read_at: datetime


class OutboxCollector:
    """Per sink: pending and dead rows and the age of the oldest pending row, read from the
    database at scrape time, so they are right whoever wrote them.  While the database cannot
    be read, the last reading is shown, flagged stale, the age still growing from it: a stall
    stays visible through the outage that causes it."""

    def __init__(self, read: Callable[[], OutboxStats]):
        self._read = read
        self._last: Optional[OutboxStats] = None
        self._lock = threading.Lock()

    def _stats(self) -> tuple[Optional[OutboxStats], bool]:
        try:
            stats = self._read()
        except SQLAlchemyError:
            return self._last, True
        with self._lock:
            self._last = stats
        return stats, False

    def collect(self):
        stats, stale = self._stats()
        rows = GaugeMetricFamily("gateway_outbox_rows", "Outbox rows by sink and status", labels=["sink", "status"])
        age = GaugeMetricFamily("gateway_outbox_oldest_pending_age_seconds",
                                "Age of the oldest pending outbox row (0 when none is pending)", labels=["sink"])
        if stats is not None:
            now = datetime.now(timezone.utc)
            for status, counts in (("pending", stats.pending), ("dead", stats.dead)):
                for sink, count in sorted(counts.items()):
                    rows.add_metric([sink, status], count)
            for sink in sorted(stats.pending):
                oldest = stats.oldest_pending.get(sink)
                age.add_metric([sink], (now - oldest).total_seconds() if oldest else 0.0)
        yield rows
        yield age
        yield GaugeMetricFamily("gateway_outbox_stats_stale",
                                "1 when the database could not be read and the outbox figures are the last known",
                                value=1 if stale else 0)
        yield GaugeMetricFamily("gateway_outbox_stats_read_timestamp_seconds",
                                "When the outbox figures were read from the database",
                                value=stats.read_at.timestamp() if stats else 0)


def exposition(outbox: OutboxCollector) -> bytes:
    registry = CollectorRegistry()
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        multiprocess.MultiProcessCollector(registry)
    else:
        for collector in (WEBHOOKS_RECEIVED, WEBHOOKS_ACCEPTED, WEBHOOKS_REJECTED, ALERTS_REFUSED, HTTP_REJECTED,
                          INGEST_SECONDS, DELIVERY_ATTEMPTS, REFRESH_ATTEMPTS, SINK_ERRORS, SINK_PAUSED,
                          DELIVERIES_EXPIRED, CONFIG_RELOAD_OK, CONFIG_RELOAD_TIME):
            registry.register(collector)
    registry.register(outbox)
    return generate_latest(registry)


def all_workers_reloaded_ok() -> bool:
    """Whether every serving process's last config (re)load succeeded: the gauge ``/metrics``
    shows, read across gunicorn workers (its multiprocess mode is ``min``)."""
    if not os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        return CONFIG_RELOAD_OK._value.get() == 1
    registry = CollectorRegistry()
    multiprocess.MultiProcessCollector(registry)
    return all(sample.value == 1 for family in registry.collect()
               if family.name == "gateway_config_last_reload_successful" for sample in family.samples)
