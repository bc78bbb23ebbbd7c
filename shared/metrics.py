"""Prometheus metrics shared by the services; each carries the service or schema label."""

from prometheus_client import Counter, Gauge, Histogram

EVENTS_CONSUMED = Counter(
    "sir_events_consumed_total",
    "Events a consumer applied, by consumer, topic and event type",
    ["consumer", "topic", "event_type"],
)
EVENTS_DUPLICATE = Counter(
    "sir_events_duplicate_total",
    "Redelivered events recognised and skipped, by consumer",
    ["consumer"],
)
DEAD_LETTERS = Counter(
    "sir_dead_letters_total",
    "Messages sent to a dead-letter topic, by consumer and topic",
    ["consumer", "topic"],
)
HANDLER_SECONDS = Histogram(
    "sir_handler_duration_seconds",
    "Time to apply one event, by consumer",
    ["consumer"],
)
OUTBOX_PUBLISHED = Counter(
    "sir_outbox_published_total",
    "Events the outbox relay published, by schema and topic",
    ["schema", "topic"],
)
OUTBOX_BACKLOG = Gauge(
    "sir_outbox_backlog",
    "Outbox rows waiting to be published, by schema",
    ["schema"],
)
OUTBOX_OLDEST_AGE = Gauge(
    "sir_outbox_oldest_age_seconds",
    "Age of the oldest outbox row waiting, by schema",
    ["schema"],
)
EVENTS_RECORDED = Counter(
    "sir_events_recorded_total",
    "Events intake accepted into the event store, by event type",
    ["event_type"],
)
HTTP_REQUESTS = Counter(
    "sir_http_requests_total",
    "HTTP requests, by service, route template, method and status",
    ["service", "route", "method", "status"],
)
HTTP_SECONDS = Histogram(
    "sir_http_request_duration_seconds",
    "HTTP request latency, by service and route template",
    ["service", "route"],
)
