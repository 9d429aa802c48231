"""Prometheus metrics, correct across gunicorn workers.

``gateway serve`` points ``PROMETHEUS_MULTIPROC_DIR`` at a fresh directory before it
starts gunicorn (prometheus_client reads it at import), so every worker writes its own files and ``/metrics`` adds them up.
Outbox depth is read from the database at scrape time, so it is right whoever wrote it.
"""
from __future__ import annotations

import os

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client import multiprocess
from prometheus_client.core import GaugeMetricFamily

WEBHOOKS_RECEIVED = Counter("gateway_webhooks_received_total", "Webhook requests received", ["source"])
WEBHOOKS_ACCEPTED = Counter("gateway_webhooks_accepted_total", "Webhook requests stored (2xx)", ["source", "outcome"])
WEBHOOKS_REJECTED = Counter("gateway_webhooks_rejected_total", "Webhook requests refused", ["source", "reason"])
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
CONFIG_RELOAD_OK = Gauge(
    "gateway_config_last_reload_successful", "1 if the last config (re)load succeeded",
    multiprocess_mode="min",
)
CONFIG_RELOAD_TIME = Gauge(
    "gateway_config_last_reload_success_timestamp_seconds", "When the config was last loaded",
    multiprocess_mode="max",
)


class OutboxCollector:
    """Outbox rows by sink and status, counted in the database when scraped."""

    def __init__(self, count_rows):
        self._count_rows = count_rows  # () -> iterable of (sink, status, count)

    def collect(self):
        family = GaugeMetricFamily("gateway_outbox_rows", "Outbox rows by sink and status", labels=["sink", "status"])
        for sink, status, count in self._count_rows():
            family.add_metric([sink, status], count)
        yield family


def exposition(count_rows) -> bytes:
    registry = CollectorRegistry()
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        multiprocess.MultiProcessCollector(registry)
    else:
        for collector in (WEBHOOKS_RECEIVED, WEBHOOKS_ACCEPTED, WEBHOOKS_REJECTED, HTTP_REJECTED, INGEST_SECONDS,
                          DELIVERY_ATTEMPTS, REFRESH_ATTEMPTS, SINK_ERRORS, CONFIG_RELOAD_OK, CONFIG_RELOAD_TIME):
            registry.register(collector)
    registry.register(OutboxCollector(count_rows))
    return generate_latest(registry)
