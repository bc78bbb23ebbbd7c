"""Routing's subscribers: each notification makes deliveries owed to its recipients."""

from __future__ import annotations

import asyncpg

from services.routing import repository
from services.routing.domain import recipients
from shared.consumer import subscribe_idempotent
from shared.events import CASE_EVENT, Envelope
from shared.messaging import CASE_EVENTS

GROUP = "sir-routing"


async def on_case_event(conn: asyncpg.Connection, event: Envelope) -> None:
    if event.event_type != "incident.notified":
        return
    for recipient in recipients(event.local_authority, event.data.model_dump(mode="json")):
        await repository.owe(conn, event.case_id, recipient, event.local_authority, event.received_at)


def subscribe(broker, settings, pool_of) -> None:
    subscribe_idempotent(
        broker, settings, pool_of=pool_of, schema=repository.SCHEMA, group_id=GROUP,
        topic=CASE_EVENTS, handler=on_case_event, adapter=CASE_EVENT,
    )
