"""Deadlines' subscribers: case events open the deadlines they start."""

from __future__ import annotations

import asyncpg

from services.deadlines import repository
from services.deadlines.domain import review_submission
from shared.consumer import Delivery
from shared.events import Envelope


async def on_case_event(conn: asyncpg.Connection, event: Envelope, delivery: Delivery) -> None:
    if event.event_type == "incident.notified":
        await repository.open_deadline(
            conn, event.case_id, event.local_authority, review_submission(event.received_at)
        )

