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


# --- deadlines (issue 3) -------------------------------------------------------------
DEADLINES_OPEN = Gauge(
    "sir_deadlines_open",
    "Deadlines open now, by rule",
    ["rule"],
)
DEADLINE_WARNINGS = Counter(
    "sir_deadline_warnings_total",
    "deadline.warning events emitted, by rule and local authority",
    ["rule", "local_authority"],
)
DEADLINE_BREACHES = Counter(
    "sir_deadline_breaches_total",
    "deadline.breached events emitted, by rule and local authority",
    ["rule", "local_authority"],
)
SCHEDULER_LAG = Histogram(
    "sir_deadline_scheduler_lag_seconds",
    "Seconds between a warning's or breach's due time and its emission",
    ["kind"],
    buckets=(0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300),
)

# --- routing (issue 4) ---------------------------------------------------------------
DELIVERIES = Counter(
    "sir_deliveries_total",
    "Delivery attempts' outcomes, by recipient, channel and outcome (delivered, retried, failed)",
    ["recipient", "channel", "outcome"],
)
DELIVERY_SECONDS = Histogram(
    "sir_delivery_latency_seconds",
    "Seconds from receipt of a notification to its successful delivery, by recipient and channel",
    ["recipient", "channel"],
    buckets=(0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 3600),
)
DELIVERIES_PENDING = Gauge(
    "sir_deliveries_pending",
    "Deliveries owed and not yet made or failed, by recipient",
    ["recipient"],
)
