"""Making deliveries: the `topic` channel (in the caller's transaction) and the delivery
loop, which takes due deliveries under a lease, POSTs them to webhooks and records each
outcome with its `notification.forwarded` / `notification.forward_failed` record.

No transaction is held across an HTTP call: a row is claimed (lease committed), POSTed,
and the outcome recorded in a new transaction, only if the lease is still ours. A crash
between the POST and the record means the receiver may get the same delivery again
(at least once to the receiver): each request carries `webhook-id`, the delivery's id,
for the receiver to drop repeats (Standard Webhooks, docs/routing.md). The records on sir.routing.v1 are written once.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import os
import uuid

import asyncpg
import httpx

from services.routing import config as recipients_config
from services.routing import domain, repository
from services.routing.domain import Attempt, Outcome, RecipientConfig
from shared.events import IncidentNotified
from shared.messaging import cloudevent_headers, outbound_topic
from shared.metrics import DELIVERIES, DELIVERY_SECONDS
from shared.outbox import enqueue
from shared.settings import Settings

log = logging.getLogger(__name__)

SERVICE = "routing"
# Attempts one loop makes at once.
MAX_IN_FLIGHT = 100


async def deliver_by_topic(conn: asyncpg.Connection, row: asyncpg.Record, lease: uuid.UUID | None = None) -> bool:
    """Publish the notification on the recipient's outbound topic and record it forwarded,
    both through the outbox in the caller's transaction. False if the row was not ours."""
    delivered = await repository.mark_delivered(conn, row["id"], "topic", lease)
    if delivered is None:
        return False
    notification = IncidentNotified.model_validate_json(delivered["notification"])
    await enqueue(conn, repository.SCHEMA, notification, SERVICE, topic=outbound_topic(delivered["recipient"]))
    await _record_forwarded(conn, delivered)
    return True


async def _record_forwarded(conn: asyncpg.Connection, row: asyncpg.Record) -> None:
    event = domain.forwarded(
        row["case_id"], row["local_authority"], row["recipient"], row["channel"], row["attempts"],
        row["delivered_at"], row["recorded_at"], row["causation_id"],
    )
    await enqueue(conn, repository.SCHEMA, event, SERVICE)
    DELIVERIES.labels(row["recipient"], row["channel"], "delivered").inc()
    DELIVERY_SECONDS.labels(row["recipient"], row["channel"]).observe(
        max(0.0, (row["delivered_at"] - row["received_at"]).total_seconds())
    )


async def _record_failed(conn: asyncpg.Connection, row: asyncpg.Record) -> None:
    event = domain.forward_failed(
        row["case_id"], row["local_authority"], row["recipient"], row["attempts"], row["last_error"], row["failed_at"],
        row["causation_id"],
    )
    await enqueue(conn, repository.SCHEMA, event, SERVICE)
    DELIVERIES.labels(row["recipient"], row["channel"], "failed").inc()


async def record_attempt(
    pool: asyncpg.Pool, row: asyncpg.Record, config: RecipientConfig, attempt: Attempt, lease: uuid.UUID
) -> str | None:
    """Record a webhook attempt's outcome; returns the delivery's new status (None if the
    lease was lost meanwhile: another loop has the row)."""
    async with pool.acquire() as conn, conn.transaction():
        if attempt.outcome is Outcome.DELIVERED:
            done = await repository.mark_delivered(conn, row["id"], "webhook", lease)
            if done is not None:
                await _record_forwarded(conn, done)
            return "delivered" if done is not None else None
        now = await conn.fetchval("SELECT clock_timestamp()")
        following = domain.after_failure(attempt, config, row["round_attempts"] + 1, row["round_started_at"], now)
        error = attempt.error or "failed"
        if following.retry_at is not None:
            scheduled = await repository.schedule_retry(conn, row["id"], "webhook", lease, following.retry_at, error)
            if scheduled is not None:
                DELIVERIES.labels(row["recipient"], "webhook", "retried").inc()
            return "pending" if scheduled is not None else None
        failed = await repository.mark_failed(conn, row["id"], "webhook", lease, error)
        if failed is not None:
            await _record_failed(conn, failed)
        return "failed" if failed is not None else None


async def post(client: httpx.AsyncClient, row: asyncpg.Record, config: RecipientConfig) -> Attempt:
    """One signed POST of the notification to the recipient's webhook."""
    assert config.url is not None  # RecipientConfig refuses a webhook without one
    secret = os.environ.get(config.secret_env or "")
    problem = domain.webhook_secret_problem(secret)
    if problem or secret is None:
        return Attempt(Outcome.RETRY, f"no secret: environment variable {config.secret_env} {problem}")
    body = row["notification"].encode()
    notification = IncidentNotified.model_validate_json(body)
    headers = {
        # CloudEvents HTTP binary mode, as on the topics.
        **{name.replace("ce_", "ce-", 1): value for name, value in cloudevent_headers(notification, SERVICE).items()},
        **domain.webhook_headers(secret, row["id"], body, dt.datetime.now(dt.timezone.utc)),
    }
    try:
        answer = await client.post(config.url, content=body, headers=headers, timeout=config.timeout_seconds)
    except httpx.TimeoutException:
        return Attempt(Outcome.RETRY, f"timed out after {config.timeout_seconds:g}s")
    except httpx.HTTPError as error:
        return Attempt(Outcome.RETRY, f"{type(error).__name__}: {error}"[:200])
    outcome = domain.outcome_of_status(answer.status_code)
    return Attempt(outcome, None if outcome is Outcome.DELIVERED else f"HTTP {answer.status_code}")


async def make(
    pool: asyncpg.Pool, client: httpx.AsyncClient, row: asyncpg.Record, config: RecipientConfig, lease: uuid.UUID
) -> None:
    """One attempt at a claimed delivery, on the recipient's channel of the moment."""
    if config.channel == "topic":
        async with pool.acquire() as conn, conn.transaction():
            await deliver_by_topic(conn, row, lease)
        return
    attempt = await post(client, row, config)
    status = await record_attempt(pool, row, config, attempt, lease)
    if attempt.outcome is not Outcome.DELIVERED:
        log.warning(
            "delivery %s to %s: attempt %d %s; now %s",
            row["id"], row["recipient"], row["attempts"] + 1, attempt.error, status or "taken by another loop",
        )


class DeliveryLoop:
    """Claims due deliveries while it has room for them and makes each in a task of its
    own, so that a slow receiver holds up only its own deliveries."""

    def __init__(self, pool: asyncpg.Pool, client: httpx.AsyncClient, max_in_flight: int = MAX_IN_FLIGHT):
        self.pool = pool
        self.client = client
        self.max_in_flight = max_in_flight
        self.in_flight: dict[asyncio.Task, uuid.UUID] = {}  # each attempt and its claim's lease

    async def claim(self) -> int:
        """Start attempts at the due deliveries there is room for; returns how many."""
        room = self.max_in_flight - len(self.in_flight)
        if room <= 0:
            return 0
        lease = uuid.uuid4()
        claimed = await repository.claim_due(self.pool, lease, room)
        if claimed:
            for row in claimed:
                config = repository.claimed_config(row) or RecipientConfig()
                task = asyncio.create_task(make(self.pool, self.client, row, config, lease))
                self.in_flight[task] = lease
                task.add_done_callback(self._done)
        return len(claimed)

    def _done(self, task: asyncio.Task) -> None:
        self.in_flight.pop(task, None)
        if not task.cancelled() and task.exception() is not None:
            # The database failed under the attempt: its lease runs out and it comes again.
            log.warning("delivery attempt failed: %r", task.exception())

    async def stop(self) -> None:
        """Cancel the attempts under way and give back their claims, so that a restart
        goes on at once instead of waiting for the leases to run out."""
        tasks = dict(self.in_flight)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        for lease in set(tasks.values()):
            await repository.release(self.pool, lease)


async def delivery_loop(pool: asyncpg.Pool, settings: Settings) -> None:
    """The `Service.workers` task: seeds the recipients, then makes deliveries as they fall
    due, woken by NOTIFY when one is due at once, else by the earliest due time."""
    configs = recipients_config.load(recipients_config.recipients_file(settings), settings.routing_allow_http)
    await repository.seed_recipients(pool, configs, source="recipients.toml")
    for recipient in domain.ALL_RECIPIENTS:  # every series at 0, so increase() sees the first
        for channel, outcome in (("topic", "delivered"), ("webhook", "delivered"), ("webhook", "retried"),
                                 ("topic", "failed"), ("webhook", "failed")):
            DELIVERIES.labels(recipient, channel, outcome)
    wake = asyncio.Event()

    def on_notify(*_: object) -> None:
        wake.set()

    listener = await pool.acquire()
    await listener.add_listener(repository.WAKE_CHANNEL, on_notify)
    backoff = 0.1
    async with httpx.AsyncClient(follow_redirects=False) as client:
        loop = DeliveryLoop(pool, client)
        try:
            while True:
                wake.clear()
                full = len(loop.in_flight) >= loop.max_in_flight
                try:
                    if not full and await loop.claim():
                        backoff = 0.1
                        continue  # perhaps more are due
                    due_in = None if full else await repository.seconds_until_due(pool)
                except Exception as error:  # the database away: wait, try again
                    log.warning("delivery loop: %r; retrying in %.1fs", error, backoff)
                    await asyncio.sleep(backoff)
                    backoff = min(backoff * 2, 5.0)
                    continue
                if full:  # until an attempt ends
                    await asyncio.wait(set(loop.in_flight), return_when=asyncio.FIRST_COMPLETED)
                    continue
                # Until a NOTIFY or the next due time; the floor keeps a row due but
                # just taken by another loop from making this one spin.
                wait = settings.routing_poll_seconds if due_in is None else min(max(due_in, 0.01), settings.routing_poll_seconds)
                try:
                    await asyncio.wait_for(wake.wait(), wait)
                except TimeoutError:
                    pass
        finally:
            await loop.stop()
            await listener.remove_listener(repository.WAKE_CHANNEL, on_notify)
            await pool.release(listener)
