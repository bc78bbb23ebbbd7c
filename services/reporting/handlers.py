"""Reporting's subscribers: projections fed from the topics."""

from __future__ import annotations

import asyncpg

from services.reporting import repository
from shared.consumer import Delivery
from shared.events import Envelope


async def on_case_event(conn: asyncpg.Connection, event: Envelope, delivery: Delivery) -> None:
    if event.event_type == "incident.notified":
        await repository.count_notification(conn, event.local_authority)

