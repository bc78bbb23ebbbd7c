"""Settings from the environment: the same names locally, in CI and in docker-compose."""

import datetime as dt
from functools import lru_cache
from typing import Literal

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

SERVICES = ("intake", "routing", "deadlines", "reporting")
# The web pages people work in (services/console): no schema, no topics; it calls the
# four services' HTTP APIs with each signed-in user's token.
CONSOLE = "console"


class Settings(BaseSettings):
    model_config = SettingsConfigDict(extra="ignore")

    database_url: str = "postgresql://postgres@127.0.0.1:5432/sir"
    kafka_bootstrap: str = "127.0.0.1:9092"
    # Partitions given to the platform's topics when it creates them.
    kafka_partitions: int = 6
    host: str = Field("127.0.0.1", validation_alias="SIR_HOST")
    intake_port: int = 8000
    routing_port: int = 8001
    deadlines_port: int = 8002
    reporting_port: int = 8003
    console_port: int = 8004
    # Where the console reaches each API; unset: http://SIR_HOST:<port> (compose names hosts).
    intake_url: str | None = Field(None, validation_alias="SIR_INTAKE_URL")
    routing_url: str | None = Field(None, validation_alias="SIR_ROUTING_URL")
    deadlines_url: str | None = Field(None, validation_alias="SIR_DEADLINES_URL")
    reporting_url: str | None = Field(None, validation_alias="SIR_REPORTING_URL")
    # A console session ends after this long without a request, and in any case this long
    # after sign-in (the token itself is checked by every API call).
    console_idle_minutes: float = Field(30.0, validation_alias="SIR_CONSOLE_IDLE_MINUTES")
    console_session_hours: float = Field(8.0, validation_alias="SIR_CONSOLE_SESSION_HOURS")
    # Failed attempts at one message before it goes to `<topic>.dlq`.
    max_attempts: int = Field(5, validation_alias="SIR_MAX_ATTEMPTS")
    # Consumer group timings; tests shorten them because a group join takes about
    # half the session timeout on Tansu.
    session_timeout_ms: int = Field(10_000, validation_alias="SIR_SESSION_TIMEOUT_MS")
    heartbeat_interval_ms: int = Field(3_000, validation_alias="SIR_HEARTBEAT_INTERVAL_MS")
    # How long a fetch may wait at the broker for new messages. Tansu answers a waiting
    # fetch only when this runs out, so it bounds the latency of a quiet topic (measured
    # one hop, producer to a waiting consumer: p50 31-38 ms at 100, 6-13 ms at 50; each
    # idle consumer asks 20 times a second at 50).
    fetch_max_wait_ms: int = Field(50, validation_alias="SIR_FETCH_MAX_WAIT_MS")
    # How long a consumer waits for a batch before it looks again. FastStream sleeps as
    # long again after an empty wait, so on a quiet topic this adds up to twice its value
    # to the latency of the next event; 200 (FastStream's default) cost ~0.3 s a hop.
    consumer_batch_timeout_ms: int = Field(20, validation_alias="SIR_CONSUMER_BATCH_TIMEOUT_MS")
    # Longest wait of the outbox relay between polls when no notification arrives.
    outbox_poll_seconds: float = Field(1.0, validation_alias="SIR_OUTBOX_POLL_SECONDS")
    # The largest serialised event the platform stores and publishes. It must not exceed
    # the broker's message limit (Kafka's message.max.bytes, about 1 MiB by default) or
    # the producer's max_request_size: intake refuses a larger event (413) before storing
    # it, and the relay parks any stored row the broker still refuses.
    max_message_bytes: int = Field(1_000_000, validation_alias="SIR_MAX_MESSAGE_BYTES")
    # The earliest incident or awareness date a notification may give (live or imported):
    # an earlier date is refused as one that cannot be (SPEC §4).
    earliest_date: dt.date = Field(dt.date(1990, 1, 1), validation_alias="SIR_EARLIEST_DATE")
    # Imported history: a deadline still open when its case's history has been applied is
    # watched like a live one (docs/deadlines.md). The scheduler leaves an imported case's
    # deadlines alone until this many seconds after the deadlines service applied its last
    # imported event, so a stop later in the same history meets it first.
    import_settle_seconds: float = Field(600.0, validation_alias="SIR_IMPORT_SETTLE_SECONDS")
    # The reporting-patterns test flags an authority whose notifications are this improbably
    # few against the national rate (one-sided Poisson, P(X <= observed); docs/reports.md).
    under_reporting_p_value: float = Field(0.05, gt=0, lt=1, validation_alias="SIR_UNDER_REPORTING_P_VALUE")
    # `sir report rebuild` waits at most this long for any lock: the reports under way (a
    # report holds it off from its start to its end), then the live consumers' batches. It
    # then gives up with an error, nothing changed; the reports asked for while it waits
    # wait too (docs/reports.md, a report during a rebuild).
    rebuild_lock_timeout_seconds: float = Field(60.0, gt=0, validation_alias="SIR_REBUILD_LOCK_TIMEOUT_SECONDS")
    log_level: str = Field("INFO", validation_alias="SIR_LOG_LEVEL")
    # Serve /docs, /redoc and /openapi.json (off where the API description need not be public).
    api_docs: bool = Field(True, validation_alias="SIR_API_DOCS")
    # Unset: /metrics is served with the API. Set: each service serves /metrics alone on
    # its port plus this offset (e.g. 1000: intake's on 9000), and not on the API port,
    # so the metrics address can stay private.
    metrics_port_offset: int | None = Field(None, validation_alias="SIR_METRICS_PORT_OFFSET")
    # Routing (docs/routing.md): the recipients file that seeds each recipient's channel
    # (unset: services/routing/recipients.toml), whether webhooks may use plain http to a
    # host other than localhost, and the longest wait of the delivery loop between polls.
    routing_recipients_file: str | None = Field(None, validation_alias="SIR_ROUTING_RECIPIENTS")
    routing_allow_http: bool = Field(False, validation_alias="SIR_ROUTING_ALLOW_HTTP")
    routing_poll_seconds: float = Field(1.0, validation_alias="SIR_ROUTING_POLL_SECONDS")
    # `json` (one object per line, for collectors) or `text` (for reading by eye).
    log_format: Literal["json", "text"] = Field("json", validation_alias="SIR_LOG_FORMAT")
    # A warning or error repeated within this many seconds (same logger, same message,
    # e.g. each retry while the broker is away) is written once, then once with its count.
    log_repeat_seconds: float = Field(60.0, validation_alias="SIR_LOG_REPEAT_SECONDS")

    def port_of(self, service: str) -> int:
        return getattr(self, f"{service}_port")

    def metrics_port_of(self, service: str) -> int:
        """The port of the service's separate /metrics (metrics_port_offset must be set)."""
        assert self.metrics_port_offset is not None
        return self.port_of(service) + self.metrics_port_offset

    def url_of(self, service: str) -> str:
        """The base URL the console calls `service` at."""
        configured = getattr(self, f"{service}_url")
        if configured:
            return configured.rstrip("/")
        host = "127.0.0.1" if self.host in ("0.0.0.0", "::") else self.host
        return f"http://{host}:{self.port_of(service)}"


@lru_cache
def get_settings() -> Settings:
    return Settings()
