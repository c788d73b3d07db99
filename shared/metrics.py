"""Prometheus metrics of the platform, served at `/metrics`.

Metric objects are process-wide (the default registry), defined here once so that every
service in a process reports into the same families, labelled by service.
"""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

HTTP_REQUESTS = Counter(
    "crm_http_requests_total",
    "HTTP requests served, by service, route template, method and status.",
    ["service", "route", "method", "status"],
)
HTTP_LATENCY = Histogram(
    "crm_http_request_duration_seconds",
    "Time to serve an HTTP request.",
    ["service", "route", "method"],
)
EVENTS_PUBLISHED = Counter(
    "crm_events_published_total",
    "Outbox rows the relay handed to the transport, by service schema.",
    ["schema"],
)
OUTBOX_OLDEST_AGE = Gauge(
    "crm_outbox_oldest_unpublished_age_seconds",
    "Age of the oldest outbox row not yet published (0 when none waits), by service schema;"
    " every worker replica reports it, the relay's standbys too, so a stuck relay shows.",
    ["schema"],
)
EVENTS_CONSUMED = Counter(
    "crm_events_consumed_total",
    "Records a consumer group finished with, by outcome (applied, duplicate, ignored,"
    " dead_lettered).",
    ["group", "outcome"],
)
CONSUMER_BATCH_SECONDS = Histogram(
    "crm_consumer_batch_duration_seconds",
    "Time to apply and commit one consumer batch.",
    ["group"],
)
IDEMPOTENT_REPLAYS = Counter(
    "crm_idempotent_replays_total",
    "Responses replayed for a repeated Idempotency-Key.",
    ["service"],
)
