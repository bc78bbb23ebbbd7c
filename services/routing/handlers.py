"""Routing's subscribers: each notification makes deliveries owed to its recipients."""

from __future__ import annotations

import asyncpg

from services.routing import repository
from services.routing.domain import recipients
from shared.consumer import Delivery
from shared.events import Envelope


async def on_case_event(conn: asyncpg.Connection, event: Envelope, delivery: Delivery) -> None:
    if event.event_type != "incident.notified":
        return
    for recipient in recipients(event.local_authority, event.data.model_dump(mode="json")):
        await repository.owe(conn, event.case_id, recipient, event.local_authority, event.received_at)

