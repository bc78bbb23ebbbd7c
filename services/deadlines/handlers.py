"""Deadlines' subscriber: case events and routing events open, meet and cancel deadlines
as the rules file says, writing each deadline event to the outbox with the change.

For each event, in this order: the stops it makes (meeting the oldest unmet deadline of
each rule it stops), the starts (a new deadline per rule it starts; one the same event
also stops, `notification`, is judged at once), then a closing cancels what is open.
Every moment comes from the events' own timestamps, so history settles as it happened.
"""

from __future__ import annotations

import datetime as dt

import asyncpg

from services.deadlines import repository
from services.deadlines.domain import (
    RULES,
    Rule,
    deadline_event,
    first_fire_at,
    is_watched,
    working_days_late,
)
from services.deadlines.repository import SCHEMA, NewDeadline
from shared.consumer import Delivery
from shared.events import Envelope
from shared.lifecycle import sog_region_of
from shared.outbox import enqueue_many
from shared.settings import get_settings

SERVICE = "deadlines"


class _Effects:
    """The deadline events one incoming event causes, enqueued together at the end."""

    def __init__(self, recorded_at: dt.datetime, cause: Envelope):
        self.recorded_at = recorded_at
        self.cause = cause.event_id
        self.settle_until: dt.datetime | None = None  # imported history: see on_event
        self.events: list[Envelope] = []

    def emit(self, kind: str, row, received_at: dt.datetime, **data) -> None:
        self.events.append(deadline_event(
            kind, row, received_at=received_at, recorded_at=self.recorded_at, causation_id=self.cause, **data
        ))


async def on_event(conn: asyncpg.Connection, event: Envelope, delivery: Delivery) -> None:
    stops, starts, cancels = RULES.stopped_by(event), RULES.started_by(event), RULES.cancels(event)
    if not (stops or starts or cancels or event.event_type == "incident.notified"):
        return
    effects = _Effects(await repository.lock_case(conn, event.case_id), event)
    if delivery.imported:
        # More of this case's history may follow: keep the scheduler off its deadlines
        # until it has settled (each later imported event of the case pushes this on).
        effects.settle_until = effects.recorded_at + dt.timedelta(seconds=get_settings().import_settle_seconds)
        await repository.hold_imported(conn, event.case_id, effects.settle_until)
    if event.event_type == "incident.notified":
        sog_region = sog_region_of(event.local_authority, event.data.model_dump())
        await repository.remember_case(conn, event.case_id, event.local_authority, sog_region)
    for rule in stops:
        await _stop(conn, rule, event, delivery, effects)
    for rule in starts:
        await _start(conn, rule, event, delivery, effects)
    if cancels:
        for row in await repository.cancel_open(conn, event.case_id, event.received_at):
            effects.emit("cancelled", row, event.received_at)
    # Deadline events of imported history carry the imported mark too.
    await enqueue_many(conn, SCHEMA, effects.events, SERVICE, imported=delivery.imported)


async def _stop(conn: asyncpg.Connection, rule: Rule, event: Envelope, delivery: Delivery, effects: _Effects) -> None:
    stopped_at = rule.stop.moment(event)
    row = await repository.oldest_unmet(conn, event.case_id, rule.name)
    if row is not None:
        await _meet(conn, row, stopped_at, effects)
    elif rule.stop_may_come_first and not await repository.has_started(conn, event.case_id, rule.name):
        await repository.keep_early_stop(conn, event.case_id, rule.name, event.event_id, stopped_at, delivery.imported)


async def _start(conn: asyncpg.Connection, rule: Rule, event: Envelope, delivery: Delivery, effects: _Effects) -> None:
    started_at = rule.start.moment(event)
    verdict = rule.verdict(started_at)
    due_at, warn_at = verdict.due_at, verdict.warn_at
    watched = is_watched(due_at, event, delivery.imported)
    new = NewDeadline(
        case_id=event.case_id, rule=rule.name, local_authority=event.local_authority,
        watched=watched, imported=delivery.imported, started_at=started_at, due_at=due_at, warn_at=warn_at,
        next_fire_at=first_fire_at(due_at, warn_at, event.recorded_at, effects.settle_until) if watched else None,
        opened_by=event.event_id,
    )
    sequence = await repository.open_deadline(conn, new)
    row = {"case_id": new.case_id, "local_authority": new.local_authority, "rule": rule.name,
           "sequence": sequence, "started_at": started_at, "due_at": due_at}
    effects.emit("opened", row, started_at)
    stopped_at = None
    if rule.settles_at_once:
        stopped_at = rule.stop.moment(event)
    elif rule.stop_may_come_first and (early := await repository.take_early_stop(conn, event.case_id, rule.name)):
        stopped_at = early["stopped_at"]
    if stopped_at is not None:
        await _meet(conn, row, stopped_at, effects)


async def _meet(conn: asyncpg.Connection, row, met_at: dt.datetime, effects: _Effects) -> None:
    late = working_days_late(row["rule"], row["started_at"], met_at)
    await repository.mark_met(conn, row["case_id"], row["rule"], row["sequence"], met_at, late)
    effects.emit("met", row, met_at, met_at=met_at, working_days_late=late)
