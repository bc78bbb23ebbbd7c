"""Routing's pure rules (SPEC §5): who must receive a notification, each recipient's
channel, what a notification owes (`decide`), the webhook signature (Standard Webhooks),
and when an attempt is tried again or given up."""

from __future__ import annotations

import base64
import datetime as dt
import ipaddress
import random
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from enum import Enum
from typing import Annotated, Literal
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, model_validator
from standardwebhooks import Webhook

from shared.decider import Addressed, Context, Decision
from shared.events import (
    STORABLE,
    Actor,
    Envelope,
    NotificationForwarded,
    NotificationForwardedData,
    NotificationForwardFailed,
    NotificationForwardFailedData,
)
from shared.lifecycle import case_after
from shared.reference import MAPPA_REGIONS
from shared.topics import outbound_topic

SCOTTISH_GOVERNMENT = "scottish-government"
ALL_RECIPIENTS = (SCOTTISH_GOVERNMENT, *(f"sog:{region}" for region in MAPPA_REGIONS))
ACTOR = Actor(role="service", id="routing")
# The records' event ids are derived from the delivery, so that a record written twice
# (it never is: see repository) would be recognised by every consumer.
_RECORD_IDS = uuid.UUID("5b0c3f0e-8f5e-4d2b-9a57-3c1f6c1f1a04")
# A webhook secret as the Standard Webhooks specification writes it.
WEBHOOK_SECRET_PREFIX = "whsec_"


def recipients(sog_region: str | None) -> list[str]:
    """The Scottish Government always; the SOG of the region too where MAPPA applies
    (`sog_region`: intake's decision, carried by the notification's `case_after`)."""
    return [SCOTTISH_GOVERNMENT] + ([f"sog:{sog_region}"] if sog_region else [])


# --- what a notification owes (the consumer's decider) ----------------------------------------


@dataclass(frozen=True)
class Owing:
    """A delivery decided in this batch, for the saver to store: `delivered_at` set when
    it went out by topic at once (its records are emitted with it), None when it waits,
    pending, for the delivery loop (a webhook, or a recipient not configured yet)."""

    recipient: str
    notification: Envelope  # the incident.notified event, forwarded as it came
    delivered_at: dt.datetime | None = None


@dataclass(frozen=True)
class Deliveries:
    """Routing's state of one case: the recipients its notification is owed to already
    (stored), the deliveries decided since it was loaded (not yet stored), and each
    recipient's channel of the moment (read once per batch; a recipient absent has none
    yet: the delivery loop seeds it first)."""

    owed: frozenset[str] = frozenset()
    decided: tuple[Owing, ...] = ()
    channels: Mapping[str, str] = field(default_factory=dict)

    @property
    def wakes_delivery_loop(self) -> bool:
        """A delivery was decided that the delivery loop makes."""
        return any(owing.delivered_at is None for owing in self.decided)


def wants(event: Envelope) -> bool:
    """Routing acts on notifications only; every other case event just passes."""
    return event.event_type == "incident.notified"


def decide(state: Deliveries, event: Envelope, context: Context) -> Decision[Deliveries]:
    """A live notification is owed once to each of its recipients. A `topic` recipient's
    delivery is made in the same transaction: the notification on the recipient's outbound
    topic, then its `notification.forwarded` record (as `delivery.deliver_by_topic` makes
    it for the delivery loop). Any other is left pending for the delivery loop. Imported
    history was forwarded when it happened (its records come with it): nothing is owed."""
    if event.event_type != "incident.notified" or context.imported:
        return Decision(state)
    owed = set(state.owed)
    decided = list(state.decided)
    emit: list[Envelope | Addressed] = []
    for recipient in recipients(case_after(None, event).sog_region):
        if recipient in owed:
            continue  # owed already: the same notification again
        owed.add(recipient)
        if state.channels.get(recipient) == "topic":
            decided.append(Owing(recipient, event, delivered_at=context.now))
            emit += [
                Addressed(event, outbound_topic(recipient)),
                forwarded(
                    event.case_id, event.local_authority, recipient, "topic", 1, context.now, context.now,
                    event.event_id,
                ),
            ]
        else:
            decided.append(Owing(recipient, event))
    if len(owed) == len(state.owed):
        return Decision(state)
    return Decision(Deliveries(frozenset(owed), tuple(decided), state.channels), tuple(emit))


# --- channels ----------------------------------------------------------------------------


class RecipientConfig(BaseModel):
    """One recipient's channel and, for a webhook, where and how it is called."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    channel: Literal["topic", "webhook"] = "topic"
    url: Annotated[str, Field(min_length=1, max_length=2000), STORABLE] | None = None  # no NUL: PostgreSQL could not store it
    # Name of the environment variable that holds the HMAC secret (the secret itself is
    # never stored nor shown).
    secret_env: Annotated[str, Field(pattern=r"^[A-Z_][A-Z0-9_]*$", max_length=100)] | None = None
    timeout_seconds: Annotated[float, Field(gt=0, le=120)] = 10.0
    # Attempts at a delivery the receiver refuses with a 4xx other than 408 and 429.
    max_attempts: Annotated[int, Field(ge=1, le=100)] = 3
    # How long retryable failures (5xx, 408, 429, timeouts, no connection) are retried.
    horizon_seconds: Annotated[float, Field(gt=0, le=30 * 86400)] = 2 * 86400.0
    backoff_base_seconds: Annotated[float, Field(gt=0, le=3600)] = 2.0
    backoff_max_seconds: Annotated[float, Field(gt=0, le=86400)] = 600.0

    @model_validator(mode="after")
    def _webhook_needs_url_and_secret(self) -> RecipientConfig:
        if self.channel == "webhook":
            if not self.url:
                raise ValueError("a webhook needs a url")
            if not self.secret_env:
                raise ValueError("a webhook needs secret_env, the environment variable holding its secret")
            parts = urlsplit(self.url)
            if parts.scheme not in ("https", "http") or not parts.hostname:
                raise ValueError("url must be an absolute https URL")
        return self

    def check_transport(self, allow_http: bool) -> None:
        """Refuse plain http except to this machine, unless `allow_http` (a setting)."""
        if self.channel != "webhook":
            return
        parts = urlsplit(self.url or "")
        if parts.scheme == "http" and not allow_http and not _is_loopback(parts.hostname or ""):
            raise ValueError("url must use https (plain http only to localhost, or with SIR_ROUTING_ALLOW_HTTP)")


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


# --- the webhook signature ------------------------------------------------------------------


def webhook_headers(secret: str, delivery_id: uuid.UUID, body: bytes, at: dt.datetime) -> dict[str, str]:
    """The Standard Webhooks headers of one attempt (https://www.standardwebhooks.com):
    `webhook-id` (the delivery's id: the same on every attempt, the receiver's idempotency
    key), `webhook-timestamp` and `webhook-signature` (`v1,<base64 HMAC-SHA256 of
    "<id>.<timestamp>.<body>">`), so the signature covers the id too. `secret` is a
    Standard Webhooks secret, `whsec_<base64>` (`webhook_secret_problem` checks it)."""
    return {
        "webhook-id": str(delivery_id),
        "webhook-timestamp": str(int(at.timestamp())),
        "webhook-signature": Webhook(secret).sign(str(delivery_id), at, body.decode()),
    }


def webhook_secret_problem(secret: str | None) -> str | None:
    """Why `secret` cannot sign (None if it can): unset, or not `whsec_` and base64."""
    if not secret:
        return "is not set"
    encoded = secret.removeprefix(WEBHOOK_SECRET_PREFIX)
    try:
        key = base64.b64decode(encoded, validate=True)
    except ValueError:
        key = b""
    if not secret.startswith(WEBHOOK_SECRET_PREFIX) or len(key) < 24:
        return "is not a Standard Webhooks secret (whsec_ and the base64 of 24 to 64 random bytes)"
    return None


# --- attempts and their outcomes -------------------------------------------------------------


class Outcome(Enum):
    DELIVERED = "delivered"
    RETRY = "retry"  # the receiver or the way to it failed: try again until the horizon
    REFUSED = "refused"  # the receiver refused the request: try again up to max_attempts


@dataclass(frozen=True)
class Attempt:
    outcome: Outcome
    error: str | None = None  # short, for the record and the operator; never the body


def outcome_of_status(status: int) -> Outcome:
    if 200 <= status < 300:
        return Outcome.DELIVERED
    if status in (408, 429) or status >= 500:
        return Outcome.RETRY
    return Outcome.REFUSED  # other 4xx, and 1xx/3xx that a webhook must not answer


def backoff_seconds(attempt: int, base: float, cap: float, rand: Callable[[], float] = random.random) -> float:
    """Delay after the `attempt`-th failed attempt: exponential, capped, with jitter (a
    random half of it) so that receivers coming back are not hit by every sender at once."""
    ceiling = min(cap, base * 2 ** min(attempt - 1, 60))
    return ceiling / 2 + rand() * ceiling / 2


@dataclass(frozen=True)
class Next:
    """What follows a failed attempt: try again at `retry_at`, or give up (`retry_at` None)."""

    retry_at: dt.datetime | None


def after_failure(
    attempt: Attempt,
    config: RecipientConfig,
    round_attempts: int,
    round_started_at: dt.datetime,
    now: dt.datetime,
    rand: Callable[[], float] = random.random,
) -> Next:
    """`round_attempts` counts this attempt. Refusals stop after max_attempts; any failure
    stops once the next try would fall beyond the horizon."""
    if attempt.outcome is Outcome.REFUSED and round_attempts >= config.max_attempts:
        return Next(None)
    retry_at = now + dt.timedelta(
        seconds=backoff_seconds(round_attempts, config.backoff_base_seconds, config.backoff_max_seconds, rand)
    )
    if retry_at > round_started_at + dt.timedelta(seconds=config.horizon_seconds):
        return Next(None)
    return Next(retry_at)


# --- the records on sir.routing.v1 --------------------------------------------------------------


def forwarded(
    case_id: uuid.UUID, local_authority: str, recipient: str, channel: str, attempts: int, delivered_at: dt.datetime,
    recorded_at: dt.datetime, causation_id: uuid.UUID | None = None,
) -> NotificationForwarded:
    """`causation_id`: the incident.notified event forwarded."""
    return NotificationForwarded(
        event_id=uuid.uuid5(_RECORD_IDS, f"{case_id}/{recipient}/forwarded"),
        event_type="notification.forwarded",
        case_id=case_id,
        local_authority=local_authority,
        received_at=delivered_at,
        recorded_at=recorded_at,
        actor=ACTOR,
        causation_id=causation_id,
        data=NotificationForwardedData(
            recipient=recipient, channel=channel, attempts=attempts, delivered_at=delivered_at
        ),
    )


def forward_failed(
    case_id: uuid.UUID, local_authority: str, recipient: str, attempts: int, error: str, failed_at: dt.datetime,
    causation_id: uuid.UUID | None = None,
) -> NotificationForwardFailed:
    return NotificationForwardFailed(
        # One per failed round: an operator's retry that fails again is a new record.
        event_id=uuid.uuid5(_RECORD_IDS, f"{case_id}/{recipient}/forward_failed/{attempts}"),
        event_type="notification.forward_failed",
        case_id=case_id,
        local_authority=local_authority,
        received_at=failed_at,
        recorded_at=failed_at,
        actor=ACTOR,
        causation_id=causation_id,
        data=NotificationForwardFailedData(recipient=recipient, attempts=attempts, error=(error or "failed")[:200]),
    )
