"""Reporting's subscribers: projections fed from the topics."""

from __future__ import annotations

import asyncpg

from services.reporting import repository
from shared.consumer import subscribe_idempotent
from shared.events import CASE_EVENT, Envelope
from shared.messaging import CASE_EVENTS

GROUP = "sir-reporting"


async def on_case_event(conn: asyncpg.Connection, event: Envelope) -> None:
    if event.event_type == "incident.notified":
        await repository.count_notification(conn, event.local_authority)


def subscribe(broker, settings, pool_of) -> None:
    subscribe_idempotent(
        broker, settings, pool_of=pool_of, schema=repository.SCHEMA, group_id=GROUP,
        topic=CASE_EVENTS, handler=on_case_event, adapter=CASE_EVENT,
    )
