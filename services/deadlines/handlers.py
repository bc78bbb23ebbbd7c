"""Deadlines' subscribers: case events open the deadlines they start."""

from __future__ import annotations

import asyncpg

from services.deadlines import repository
from services.deadlines.domain import review_submission
from shared.consumer import subscribe_idempotent
from shared.events import CASE_EVENT, Envelope
from shared.messaging import CASE_EVENTS

GROUP = "sir-deadlines"


async def on_case_event(conn: asyncpg.Connection, event: Envelope) -> None:
    if event.event_type == "incident.notified":
        await repository.open_deadline(
            conn, event.case_id, event.local_authority, review_submission(event.received_at)
        )


def subscribe(broker, settings, pool_of) -> None:
    subscribe_idempotent(
        broker, settings, pool_of=pool_of, schema=repository.SCHEMA, group_id=GROUP,
        topic=CASE_EVENTS, handler=on_case_event, adapter=CASE_EVENT,
    )


