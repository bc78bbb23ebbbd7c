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
    "Time to apply one event, or one batch of events decided together, by consumer",
    ["consumer"],
)
OUTBOX_PUBLISHED = Counter(
    "sir_outbox_published_total",
    "Events the outbox relay published, by schema, topic and event type",
    ["schema", "topic", "event_type"],
)
# Consumer lag is the distance between these two, per topic and partition (see
# docs/operations.md): the producers' side from the offsets the broker assigned to the
# records it acknowledged, the consumers' side from the records applied. Neither asks the
# broker for its end offsets, which Tansu gets wrong.
OUTBOX_PUBLISHED_OFFSET = Gauge(
    "sir_outbox_published_offset",
    "Highest offset the broker assigned to a record this relay published, by schema, topic and partition",
    ["schema", "topic", "partition"],
)
CONSUMER_APPLIED_OFFSET = Gauge(
    "sir_consumer_applied_offset",
    "Highest offset a consumer applied (or skipped as a duplicate or dead letter) and committed,"
    " by consumer, topic and partition",
    ["consumer", "topic", "partition"],
)
CONSUMER_DELAY_SECONDS = Histogram(
    "sir_consumer_delay_seconds",
    "Seconds from a record's timestamp (set when it was published) to the end of the batch that applied it, by consumer",
    ["consumer"],
    buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 900, 3600),
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
OUTBOX_PARKED = Counter(
    "sir_outbox_parked_total",
    "Outbox rows the broker refused for good (too large, invalid, corrupt), parked for review, by schema and topic",
    ["schema", "topic"],
)
OUTBOX_PARKED_WAITING = Gauge(
    "sir_outbox_parked_waiting",
    "Parked outbox rows awaiting an operator's decision (`sir outbox parked`), by schema",
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
SERVICE_READY = Gauge(
    "sir_service_ready",
    "1 when the service's readiness checks pass (as /readyz), set at each scrape, by service",
    ["service"],
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
