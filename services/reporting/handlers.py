"""Reporting's subscribers: each topic's events folded into the report projections
(through the pure functions of domain.py) and into the casework view."""

from __future__ import annotations

import asyncpg

from services.reporting import casework, repository
from services.reporting.domain import apply_case_event, apply_deadline_event, first_forward, forward_of
from shared.consumer import Delivery
from shared.events import Envelope


async def on_case_event(conn: asyncpg.Connection, event: Envelope, delivery: Delivery) -> None:
    before = await repository.load_case(conn, event.case_id)
    after = apply_case_event(before, event)
    if after is not None and after != before:
        await repository.save_case(conn, before, after)
    await casework.on_case_event(conn, event, delivery.imported)


async def on_routing_event(conn: asyncpg.Connection, event: Envelope, delivery: Delivery) -> None:
    forward = forward_of(event)
    if forward is None:
        return
    current = await repository.load_forward(conn, forward.case_id, forward.recipient)
    chosen = first_forward(current, forward)
    if chosen != current:
        await repository.save(conn, "forwards", chosen, replacing=current)


async def on_deadline_event(conn: asyncpg.Connection, event: Envelope, delivery: Delivery) -> None:
    if event.event_type.startswith("deadline."):
        current = await repository.load_deadline(conn, event.case_id, event.data.rule, event.data.started_at)
        row = apply_deadline_event(current, event)
        if row != current:
            await repository.save(conn, "deadlines", row, replacing=current)
    await casework.on_deadline_event(conn, event)
