"""Routing's consumer: each live notification is owed to its recipients, once.

The rule is `domain.decide` (pure); `repository.load_deliveries` gives it the deliveries
each case owes already and the recipients' channels, read once per batch, and
`repository.save_deliveries` stores what it decided. A `topic` recipient is delivered in
the same transaction (the decider emits the outbound copy and `notification.forwarded`,
which the shell appends to routing's outbox); a webhook is left to the delivery loop
(services/routing/delivery.py), woken by NOTIFY."""

from __future__ import annotations

import uuid
from collections.abc import Mapping

import asyncpg

from services.routing import domain, repository
from services.routing.domain import Deliveries
from shared.consumer import Delivery
from shared.events import Envelope
from shared.metrics import DELIVERIES, DELIVERY_SECONDS
from shared.process import Process


async def save(
    conn: asyncpg.Connection, before: Mapping[uuid.UUID, Deliveries], after: Mapping[uuid.UUID, Deliveries]
) -> None:
    await repository.save_deliveries(conn, before, after)
    for case_id, state in after.items():
        for owing in state.decided:
            if owing.delivered_at is not None and owing not in before[case_id].decided:
                DELIVERIES.labels(owing.recipient, "topic", "delivered").inc()
                DELIVERY_SECONDS.labels(owing.recipient, "topic").observe(
                    max(0.0, (owing.delivered_at - owing.notification.received_at).total_seconds())
                )


PROCESS = Process(
    service="routing",
    decide=domain.decide,
    load=repository.load_deliveries,
    save=save,
    wants=domain.wants,
)


async def on_case_event(conn: asyncpg.Connection, event: Envelope, delivery: Delivery) -> None:
    """One event through the process, in the caller's transaction, as the consumer
    applies it (a batch of one): for callers that hold a single event."""
    await PROCESS.apply(conn, [(event, delivery.imported)])
