"""Intake's use cases: record a notification, record a case event, import a case's history.

Every way an event enters the store goes through `append_to_case`: the caller holds the
case's lock (`repository.lock_case(s)`; a new case: its row's insert), the lifecycle decides
the case after the event (`domain.decide`, which puts it on the event as `case_after`)
and the case's next sequence is given; then the event is stored and queued for
publication (`repository.append`, one statement however many events). The HTTP API (api.py)
and the history import (history.py, which the API and `sir import` both call) only read
their input and translate what goes wrong: this module raises domain errors, never an
HTTP status.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import uuid
from collections.abc import Callable, Mapping, Sequence
from contextlib import AbstractAsyncContextManager, nullcontext
from dataclasses import dataclass, field
from typing import cast

import asyncpg
from pydantic import BaseModel

from services.intake import repository
from services.intake.domain import FORWARDED, decide, event_content, new_event
from shared import categorisation
from shared.events import ANY_EVENT, CASE_EVENT_MODELS, Envelope
from shared.lifecycle import Case, Refused
from shared.metrics import EVENTS_RECORDED
from shared.policy import check_may_post
from shared.principal import Principal

__all__ = [
    "Appended", "EventTooLarge", "IdempotencyConflict", "IdempotencyInProgress", "ImportRefused", "Imported",
    "IntakeError", "NoSuchCase", "Recorded", "Refused", "append_to_case", "import_cases", "record_case_event",
    "record_notification",
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


@dataclass(frozen=True)
class Appended:
    """An event as it is to be stored: its case sequence and `case_after` set."""

    event: Envelope
    case: Case  # the case after it
    text: str  # the event's JSON, as stored and published


def append_to_case(
    case: Case | None, last_sequence: int, event: Envelope, *, max_bytes: int, recorded_at: dt.datetime | None = None
) -> Appended:
    """`event` as it is to be stored in `case` (None: not in the store yet), whose events
    so far are numbered up to `last_sequence`: the lifecycle decides the case after it
    (`Refused` if it does not fit; `domain.decide` puts the decision on the event as
    `case_after`), a case event gets the case's next sequence, whatever it carried (and
    `recorded_at`, if given), and an event larger than `max_bytes` serialised is refused
    (`EventTooLarge`). The caller stores it (`repository.append`) in the transaction that
    holds the case's lock."""
    if event.event_type == "incident.notified":
        sequence: int | None = 1
    elif event.event_type in CASE_EVENT_MODELS:
        sequence = last_sequence + 1
    else:
        sequence = None  # a forwarding record of imported history
    changes: dict[str, object] = {"sequence": sequence}
    if recorded_at is not None:
        changes["recorded_at"] = recorded_at
    case, event = decide(case, event, **changes)
    text = event.model_dump_json()
    if (size := len(text.encode())) > max_bytes:
        raise EventTooLarge(f"the event would be {size} bytes serialised; the largest is {max_bytes}")
    return Appended(event, case, text)


async def record_notification(
    database: asyncpg.Pool | asyncpg.Connection, principal: Principal, data: BaseModel, *,
    idempotency_key: str | None, max_bytes: int, now: dt.datetime | None = None,
    wake: Callable[[], None] | None = None,
) -> Recorded:
    """A council notifies a serious incident: a new case. `database`: the pool, or a
    connection the caller holds for the request (the token was checked on it). `now`: the
    database clock when the request was received, if the caller read it already (else it
    is read here).
    `wake`: wakes the outbox relay of this process, called once the event is committed
    (then the store sends no NOTIFY for it); None: the relay is woken by NOTIFY."""
    return await _record(database, principal, idempotency_key, "incident.notified", None, data, max_bytes, now, wake)


async def record_case_event(
    database: asyncpg.Pool | asyncpg.Connection,
    principal: Principal,
    case_id: uuid.UUID,
    event_type: str,
    data: BaseModel,
    *,
    idempotency_key: str | None,
    max_bytes: int,
    now: dt.datetime | None = None,
    wake: Callable[[], None] | None = None,
) -> Recorded:
    """Any later event of an existing case (`database`, `now`, `wake`: as for `record_notification`)."""
    return await _record(database, principal, idempotency_key, event_type, case_id, data, max_bytes, now, wake)


async def _record(
    database: asyncpg.Pool | asyncpg.Connection,
    principal: Principal,
    idempotency_key: str | None,
    event_type: str,
    case_id: uuid.UUID | None,
    data: BaseModel,
    max_bytes: int,
    now: dt.datetime | None,
    wake: Callable[[], None] | None,
) -> Recorded:
    fingerprint = hashlib.sha256(
        json.dumps([event_type, str(case_id), data.model_dump(mode="json")], sort_keys=True).encode()
    ).digest() if idempotency_key is not None else b""
    for _ in range(2):  # a second pass finds the answer of a concurrent twin request
        try:
            async with _connection(database) as conn:
                if case_id is None:
                    # A new case: nothing to lock, and its row, event, outbox row and
                    # idempotency answer are one statement (all or nothing).
                    recorded = await _append_live(conn, principal, idempotency_key, fingerprint, event_type, None,
                                                  data, max_bytes, now, wake is not None)
                else:
                    async with conn.transaction():
                        recorded = await _append_live(conn, principal, idempotency_key, fingerprint, event_type,
                                                      case_id, data, max_bytes, now, wake is not None)
            if recorded.event is not None:  # committed: the relay publishes it now
                if wake is not None:
                    wake()
                EVENTS_RECORDED.labels(event_type).inc()
            return recorded
        except asyncpg.UniqueViolationError:
            if idempotency_key is None:
                raise
    raise IdempotencyInProgress("a request with this Idempotency-Key is still in progress")


def _connection(database: asyncpg.Pool | asyncpg.Connection) -> AbstractAsyncContextManager[asyncpg.Connection]:
    """A connection of the pool for the time of the block, or the one the caller holds."""
    return database.acquire() if isinstance(database, asyncpg.Pool) else nullcontext(database)


async def _append_live(
    conn: asyncpg.Connection, principal: Principal, idempotency_key: str | None, fingerprint: bytes,
    event_type: str, case_id: uuid.UUID | None, data: BaseModel, max_bytes: int, now: dt.datetime | None,
    woken_in_process: bool,
) -> Recorded:
    if idempotency_key is not None or now is None:
        clock, prior = await repository.now_and_prior_answer(conn, principal.token_id, idempotency_key)
        now = now or clock
        if prior is not None:
            if prior["request_sha256"] != fingerprint:
                raise IdempotencyConflict("this Idempotency-Key was used for another request")
            return Recorded(None, prior["response"])
    if case_id is None:
        # A council token always has its authority; any other role is refused by
        # check_may_post (incident.notified is a council's) before it is used.
        case_id, local_authority = uuid.uuid4(), cast(str, principal.local_authority)
        case, last_sequence = None, 0
    else:
        locked = await repository.lock_case(conn, case_id)
        if locked is None:
            raise NoSuchCase(f"no case {case_id}")
        case, last_sequence = locked.case, locked.last_sequence
        local_authority = case.local_authority
    check_may_post(principal, event_type, local_authority, case.sog_region if case is not None else None)
    event = new_event(
        event_type, case_id=case_id, local_authority=local_authority, principal=principal, data=data, now=now,
    )
    appended = append_to_case(case, last_sequence, event, max_bytes=max_bytes)
    event, case = appended.event, appended.case
    answer = {
        "case_id": str(case_id),
        "event_id": str(event.event_id),
        "event_type": event_type,
        "state": case.state.value,
        "recorded_at": event.recorded_at.isoformat(),
        "warnings": (
            categorisation.warnings(event.data, event.received_at)
            if event_type == "incident.notified" else []
        ),
    }
    await repository.append(
        conn,
        [repository.NewCase(case_id, local_authority, case.sog_region)] if event_type == "incident.notified" else [],
        [(event, appended.text)],
        remember=(
            repository.Remember(principal.token_id, idempotency_key, fingerprint, answer)
            if idempotency_key is not None else None
        ),
        woken_in_process=woken_in_process,
    )
    return Recorded(event, answer)


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


@dataclass
class Imported:
    """What an import of some cases did: the events stored now, how many were stored
    already with the same content (skipped), and the cases refused, each with the line."""

    events: list[Envelope] = field(default_factory=list)
    skipped: int = 0
    refused: list[tuple[uuid.UUID, ImportRefused]] = field(default_factory=list)

    def add(self, other: Imported) -> None:
        self.events += other.events
        self.skipped += other.skipped
        self.refused += other.refused


async def import_cases(
    conn: asyncpg.Connection, cases: Mapping[uuid.UUID, Sequence[tuple[int, Envelope]]], now: dt.datetime,
    *, max_bytes: int,
) -> Imported:
    """Cases of imported history, (line number, event) each, every case all of it or
    nothing, in a savepoint of the caller's transaction: the cases locked and read in one
    statement, each decided through `append_to_case` as live events are, and every event
    of the cases not refused stored with one statement. Should the database refuse that
    (a value it cannot store, or a concurrent import that stored some first), case by case,
    each in its own savepoint. `ImportRefused` names each refused case's line."""
    try:
        async with conn.transaction():
            return await _import_cases(conn, cases, now, max_bytes)
    except (asyncpg.DataError, asyncpg.IntegrityConstraintViolationError):
        if len(cases) == 1:
            [(case_id, lines)] = cases.items()
            return await _import_one(conn, case_id, lines, now, max_bytes)
    imported = Imported()
    for case_id, lines in cases.items():
        imported.add(await _import_one(conn, case_id, lines, now, max_bytes))
    return imported


async def _import_one(
    conn: asyncpg.Connection, case_id: uuid.UUID, lines: Sequence[tuple[int, Envelope]], now: dt.datetime,
    max_bytes: int,
) -> Imported:
    try:
        try:
            async with conn.transaction():
                return await _import_cases(conn, {case_id: lines}, now, max_bytes)
        except asyncpg.UniqueViolationError:
            # A concurrent import stored some of these events first: again, skipping them.
            async with conn.transaction():
                return await _import_cases(conn, {case_id: lines}, now, max_bytes)
    except (asyncpg.DataError, asyncpg.IntegrityConstraintViolationError) as error:
        # A value the database refuses (a check, a range): this case only.
        return Imported(refused=[(case_id, ImportRefused(lines[0][0], f"not stored: {error}"))])


async def _import_cases(
    conn: asyncpg.Connection, cases: Mapping[uuid.UUID, Sequence[tuple[int, Envelope]]], now: dt.datetime,
    max_bytes: int,
) -> Imported:
    locked = await repository.lock_cases(conn, list(cases))
    stored = await repository.stored_envelopes(conn, [event.event_id for lines in cases.values() for _, event in lines])
    imported = Imported()
    new_cases: list[repository.NewCase] = []
    to_store: list[Appended] = []
    for case_id, lines in cases.items():
        try:
            appended, skipped = _decide_case(locked.get(case_id), lines, stored, now, max_bytes)
        except ImportRefused as refusal:
            imported.refused.append((case_id, refusal))
            continue
        imported.skipped += skipped
        if case_id not in locked and appended:
            # Not in the store: the lifecycle let it begin with its notification.
            new_cases.append(repository.NewCase(case_id, appended[0].case.local_authority, appended[0].case.sog_region))
        to_store += appended
    if to_store:
        await repository.append(conn, new_cases, [(a.event, a.text) for a in to_store], imported=True)
    imported.events = [a.event for a in to_store]
    return imported


def _decide_case(
    locked: repository.Locked | None, lines: Sequence[tuple[int, Envelope]], stored: Mapping[uuid.UUID, dict],
    now: dt.datetime, max_bytes: int,
) -> tuple[list[Appended], int]:
    """One case's events to store (and how many are stored already), or `ImportRefused`."""
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
    case, last_sequence = (locked.case, locked.last_sequence) if locked is not None else (None, 0)
    appended = []
    for number, event in new:
        try:
            one = append_to_case(case, last_sequence, event, max_bytes=max_bytes, recorded_at=now)
        except Refused as refusal:
            raise ImportRefused(number, f"{event.event_type}: {refusal}") from None
        except EventTooLarge as refusal:
            raise ImportRefused(number, str(refusal)) from None
        case, last_sequence = one.case, one.event.sequence or last_sequence
        appended.append(one)
    return appended, skipped
