"""Intake's use cases: record a notification, record a case event, import a case's history.

Every way an event enters the store goes through `append_to_case`: the caller holds the
case's lock (`repository.lock_case`, or a new case's row), the lifecycle decides the case
after the event (`domain.decide`, which puts it on the event as `case_after`), and the
event is stored and queued for publication (`repository.append`). The HTTP API (api.py)
and the history import (history.py, which the API and `sir import` both call) only read
their input and translate what goes wrong: this module raises domain errors, never an
HTTP status.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from typing import cast

import asyncpg
from pydantic import BaseModel

from services.intake import repository
from services.intake.domain import FORWARDED, decide, event_content, new_event, serialised_size
from shared import categorisation
from shared.events import ANY_EVENT, Envelope
from shared.lifecycle import Case, Refused
from shared.metrics import EVENTS_RECORDED
from shared.policy import check_may_post
from shared.principal import Principal

__all__ = [
    "EventTooLarge", "IdempotencyConflict", "IdempotencyInProgress", "ImportRefused", "IntakeError", "NoSuchCase",
    "Recorded", "Refused", "append_to_case", "import_case", "record_case_event", "record_notification",
]


class IntakeError(Exception):
    """A request intake refuses, with the reason a person can act on."""


class NoSuchCase(IntakeError):
    """The event names a case that is not in the store (HTTP 404)."""


class EventTooLarge(IntakeError):
    """Stored, the event could never be published: larger than SIR_MAX_MESSAGE_BYTES (HTTP 413)."""


class IdempotencyConflict(IntakeError):
    """The Idempotency-Key was used for another request (HTTP 409)."""


class IdempotencyInProgress(IntakeError):
    """A request with the same Idempotency-Key is still being recorded (HTTP 409)."""


class ImportRefused(IntakeError):
    """A case of imported history is refused whole, because of the line numbered `line`."""

    def __init__(self, line: int, reason: str):
        super().__init__(reason)
        self.line = line


# Besides these, a live event may be refused with `shared.lifecycle.Refused` (the case's
# state does not allow it: HTTP 409), `shared.policy.Forbidden` (HTTP 403) and pydantic's
# ValidationError (a date after the moment received: HTTP 422 naming the field).


@dataclass(frozen=True)
class Recorded:
    event: Envelope | None  # None: the answer of an earlier request with the same Idempotency-Key
    answer: dict  # what the API answers, and answers again to a repeat of the request


async def append_to_case(
    conn: asyncpg.Connection, case: Case | None, event: Envelope, *, imported: bool = False,
    max_bytes: int | None = None,
) -> tuple[Envelope, Case]:
    """Store `event` with the case it makes (`Refused` if the lifecycle refuses it), queued
    for publication, in the caller's transaction, which holds the case's lock. Returns the
    event as stored (with its case sequence) and the case after it. `max_bytes`: refuse an
    event larger than that serialised (`EventTooLarge`). A case event is stored carrying
    the case after it (`case_after`, `domain.decide`)."""
    case, event = decide(case, event)
    if max_bytes is not None and (size := serialised_size(event)) > max_bytes:
        raise EventTooLarge(f"the event would be {size} bytes serialised; the largest is {max_bytes}")
    return await repository.append(conn, event, case, imported=imported), case


async def record_notification(
    pool: asyncpg.Pool, principal: Principal, data: BaseModel, *, idempotency_key: str | None, max_bytes: int
) -> Recorded:
    """A council notifies a serious incident: a new case."""
    return await _record(pool, principal, idempotency_key, "incident.notified", None, data, max_bytes)


async def record_case_event(
    pool: asyncpg.Pool,
    principal: Principal,
    case_id: uuid.UUID,
    event_type: str,
    data: BaseModel,
    *,
    idempotency_key: str | None,
    max_bytes: int,
) -> Recorded:
    """Any later event of an existing case."""
    return await _record(pool, principal, idempotency_key, event_type, case_id, data, max_bytes)


async def _record(
    pool: asyncpg.Pool,
    principal: Principal,
    idempotency_key: str | None,
    event_type: str,
    case_id: uuid.UUID | None,
    data: BaseModel,
    max_bytes: int,
) -> Recorded:
    fingerprint = hashlib.sha256(
        json.dumps([event_type, str(case_id), data.model_dump(mode="json")], sort_keys=True).encode()
    ).digest()
    for _ in range(2):  # a second pass finds the answer of a concurrent twin request
        try:
            async with pool.acquire() as conn, conn.transaction():
                if idempotency_key is not None:
                    prior = await repository.prior_answer(conn, principal.token_id, idempotency_key)
                    if prior is not None:
                        if prior["request_sha256"] != fingerprint:
                            raise IdempotencyConflict("this Idempotency-Key was used for another request")
                        return Recorded(None, prior["response"])
                recorded = await _append_live(conn, principal, event_type, case_id, data, max_bytes)
                if idempotency_key is not None:
                    await repository.remember_answer(
                        conn, principal.token_id, idempotency_key, fingerprint, recorded.answer
                    )
            EVENTS_RECORDED.labels(event_type).inc()
            return recorded
        except asyncpg.UniqueViolationError:
            if idempotency_key is None:
                raise
    raise IdempotencyInProgress("a request with this Idempotency-Key is still in progress")


async def _append_live(
    conn: asyncpg.Connection, principal: Principal, event_type: str, case_id: uuid.UUID | None, data: BaseModel,
    max_bytes: int,
) -> Recorded:
    if case_id is None:
        # A council token always has its authority; any other role is refused by
        # check_may_post (incident.notified is a council's) before it is used.
        case_id, case, local_authority = uuid.uuid4(), None, cast(str, principal.local_authority)
    else:
        case = await repository.lock_case(conn, case_id)
        if case is None:
            raise NoSuchCase(f"no case {case_id}")
        local_authority = case.local_authority
    check_may_post(principal, event_type, local_authority, case.sog_region if case is not None else None)
    event = new_event(
        event_type, case_id=case_id, local_authority=local_authority,
        principal=principal, data=data, now=await repository.now(conn),
    )
    event, case = await append_to_case(conn, case, event, max_bytes=max_bytes)
    return Recorded(event, {
        "case_id": str(case_id),
        "event_id": str(event.event_id),
        "event_type": event_type,
        "state": case.state.value,
        "recorded_at": event.recorded_at.isoformat(),
        "warnings": (
            categorisation.warnings(event.data, event.received_at)
            if event_type == "incident.notified" else []
        ),
    })


async def check_notification(pool: asyncpg.Pool, principal: Principal, data: BaseModel) -> list[dict[str, str]]:
    """A notification checked as `record_notification` would check it, storing nothing:
    the refusals it would raise (dates judged against now), else the categorisation
    warnings its answer would carry."""
    check_may_post(principal, "incident.notified", cast(str, principal.local_authority), None)
    async with pool.acquire() as conn:
        now = await repository.now(conn)
    event = new_event(
        "incident.notified", case_id=uuid.uuid4(), local_authority=cast(str, principal.local_authority),
        principal=principal, data=data, now=now,
    )
    return categorisation.warnings(event.data, event.received_at)


async def import_case(
    conn: asyncpg.Connection, lines: Sequence[tuple[int, Envelope]], now: dt.datetime
) -> tuple[list[Envelope], int]:
    """One case of imported history, (line number, event) each, all of it or nothing (a
    savepoint of the caller's transaction): the events stored now, and how many were
    stored already with the same content (skipped). `ImportRefused` names the line."""
    try:
        try:
            async with conn.transaction():
                return await _import_case(conn, lines, now)
        except asyncpg.UniqueViolationError:
            # A concurrent import stored some of these events first: again, skipping them.
            async with conn.transaction():
                return await _import_case(conn, lines, now)
    except (asyncpg.DataError, asyncpg.IntegrityConstraintViolationError) as error:
        # A value the database refuses (a check, a range): this case only.
        raise ImportRefused(lines[0][0], f"not stored: {error}") from None


async def _import_case(
    conn: asyncpg.Connection, lines: Sequence[tuple[int, Envelope]], now: dt.datetime
) -> tuple[list[Envelope], int]:
    case = await repository.lock_case(conn, lines[0][1].case_id)
    stored = await repository.stored_envelopes(conn, [event.event_id for _, event in lines])
    new, skipped = [], 0
    for number, event in lines:
        prior = stored.get(event.event_id)
        if prior is None:
            new.append((number, event))
        elif event_content(ANY_EVENT.validate_python(prior)) == event_content(event):
            skipped += 1
        else:
            raise ImportRefused(number, f"event {event.event_id} is stored already with other content")
    # Case events in the order they were received; forwarding records after them, as
    # they need the case and change nothing in it.
    new.sort(key=lambda line: (line[1].event_type == FORWARDED, line[1].received_at, line[0]))
    events = []
    for number, event in new:
        event = event.model_copy(update={"recorded_at": now})
        try:
            event, case = await append_to_case(conn, case, event, imported=True)
        except Refused as refusal:
            raise ImportRefused(number, f"{event.event_type}: {refusal}") from None
        events.append(event)
    return events, skipped
