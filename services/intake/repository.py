"""Intake's SQL: the event store, the case lock and idempotency keys."""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Sequence
from dataclasses import dataclass

import asyncpg
from pydantic_core import to_json

from shared.events import CASE_EVENT_MODELS, Envelope
from shared.lifecycle import Case, fold
from shared.messaging import cloudevent_headers
from shared.topics import topic_of

SCHEMA = "intake"
# The stored envelope with its case sequence: events stored before sequences existed
# have it in the `sequence` column only (the envelope is immutable).
_ENVELOPE = "envelope || jsonb_strip_nulls(jsonb_build_object('sequence', sequence))"


@dataclass(frozen=True)
class Locked:
    """A case as its events make it, locked until the transaction ends, and the highest
    sequence of its events (the next case event gets the one after)."""

    case: Case
    last_sequence: int


async def lock_case(conn: asyncpg.Connection, case_id: uuid.UUID) -> Locked | None:
    """The case, locked until the transaction ends, so one case's events are written one
    at a time and in order; None if there is no such case."""
    return (await lock_cases(conn, [case_id])).get(case_id)


async def lock_cases(conn: asyncpg.Connection, case_ids: Sequence[uuid.UUID]) -> dict[uuid.UUID, Locked]:
    """Each of `case_ids` that is in the store, locked (in case_id order, so two imports
    never wait on each other crosswise), with its events folded: one statement."""
    rows = await conn.fetch(
        f"SELECT c.case_id, e.event_type, e.local_authority, e.envelope->'data' AS data, e.sequence"
        f" FROM {SCHEMA}.cases c JOIN {SCHEMA}.events e USING (case_id)"
        f" WHERE c.case_id = ANY($1::uuid[]) ORDER BY c.case_id, e.position FOR UPDATE OF c",
        list(case_ids),
    )
    histories: dict[uuid.UUID, list] = {}
    for row in rows:
        histories.setdefault(row["case_id"], []).append(row)
    locked = {}
    for case_id, events in histories.items():
        # Imported forwarding records are stored with their case but are not case events.
        case = fold((e["event_type"], e["local_authority"], e["data"]) for e in events if e["event_type"] in CASE_EVENT_MODELS)
        if case is not None:  # a stored case begins with its notification
            locked[case_id] = Locked(case, max((e["sequence"] or 0) for e in events))
    return locked


async def read_case(conn: asyncpg.Connection | asyncpg.Pool, case_id: uuid.UUID) -> tuple[Case, list[dict]] | None:
    """The case and its events' envelopes, oldest first; None if there is no such case."""
    rows = await conn.fetch(
        f"SELECT {_ENVELOPE} AS envelope FROM {SCHEMA}.events WHERE case_id = $1 ORDER BY position", case_id
    )
    if not rows:
        return None
    envelopes = [r["envelope"] for r in rows]
    # Imported forwarding records are stored with their case but are not case events.
    case_events = (e for e in envelopes if e["event_type"] in CASE_EVENT_MODELS)
    case = fold((e["event_type"], e["local_authority"], e["data"]) for e in case_events)
    # A stored case begins with its notification, so its events always make a case.
    return (case, envelopes) if case is not None else None


async def stored_envelopes(conn: asyncpg.Connection, event_ids: list[uuid.UUID]) -> dict[uuid.UUID, dict]:
    """The stored envelopes of those of `event_ids` that are in the store."""
    rows = await conn.fetch(
        f"SELECT event_id, {_ENVELOPE} AS envelope FROM {SCHEMA}.events WHERE event_id = ANY($1::uuid[])", event_ids
    )
    return {r["event_id"]: r["envelope"] for r in rows}


@dataclass(frozen=True)
class NewCase:
    case_id: uuid.UUID
    local_authority: str
    sog_region: str | None


@dataclass(frozen=True)
class Remember:
    """An Idempotency-Key's answer, stored with the event it answers."""

    token_id: str
    key: str
    request_sha256: bytes
    response: dict


# Where `append`'s rows come from. Any number of cases and events as arrays: $1-$3 the
# cases begun, $4 imported, $5-$13 the events' columns, $14 their headers as one JSON array.
_ROWS_FROM_ARRAYS = (
    "SELECT * FROM unnest($1::uuid[], $2::text[], $3::text[])",
    "SELECT i, c, y, a, r, w, $4, s, e::jsonb"
    " FROM unnest($5::uuid[], $6::uuid[], $7::text[], $8::text[], $9::timestamptz[], $10::timestamptz[],"
    "   $11::int[], $12::text[]) WITH ORDINALITY AS x(i, c, y, a, r, w, s, e, n) ORDER BY n",
    "SELECT i, y, t, convert_to(c::text, 'UTF8'), convert_to(e, 'UTF8'), h"
    " FROM unnest($5::uuid[], $7::text[], $13::text[], $6::uuid[], $12::text[]) WITH ORDINALITY AS x(i, y, t, c, e, n)"
    " JOIN jsonb_array_elements($14::text::jsonb) WITH ORDINALITY AS hs(h, n) USING (n) ORDER BY n",
)
# One event (a live request's), and the case it begins if any ($1 null: none), as plain
# values in the same places: a plan of a few nodes to start and run for one row rather
# than unnests, sorts and a join (the executor's start-up was about 15% of the database's
# time under intake's bench), and scalars rather than arrays to build and encode (issue 15;
# docs/performance.md).
_ROW_FROM_VALUES = (
    "SELECT $1::uuid, $2::text, $3::text WHERE $1::uuid IS NOT NULL",
    "VALUES ($5::uuid, $6::uuid, $7::text, $8::text, $9::timestamptz, $10::timestamptz, $4::boolean, $11::int,"
    " $12::text::jsonb)",
    "VALUES ($5::uuid, $7::text, $13::text, convert_to($6::uuid::text, 'UTF8'), convert_to($12::text, 'UTF8'),"
    " $14::text::jsonb)",
)


async def append(
    conn: asyncpg.Connection,
    new_cases: Sequence[NewCase],
    events: Sequence[tuple[Envelope, str]],
    *,
    imported: bool = False,
    remember: Remember | None = None,
    woken_in_process: bool = False,
) -> None:
    """Store the cases begun and the events (each with its JSON text, as stored and
    published: sequence and case_after set), record and queue the events for publication
    (shared/outbox.py's tables), and the idempotency answer: one statement, so all of it
    or nothing, in the caller's transaction (if any), which holds the lock of each case
    that is not new (`lock_cases`). Events are stored in the order given.
    `woken_in_process`: the caller wakes the outbox relay of its own process once this
    commits (`OutboxRelay.wake`), so the outbox's trigger sends no NOTIFY for it (see
    migrations/003_outbox_woken_in_process.sql)."""
    one = len(events) == 1 and len(new_cases) <= 1
    cases, stored, emitted = _ROW_FROM_VALUES if one else _ROWS_FROM_ARRAYS
    remembered = (
        f", remembered AS (INSERT INTO {SCHEMA}.idempotency_keys (token_id, key, request_sha256, response)"
        " VALUES ($15, $16, $17, $18))"
    ) if remember is not None else ""
    statement = (
        f"WITH new_cases AS (INSERT INTO {SCHEMA}.cases (case_id, local_authority, sog_region) {cases}),"
        f" stored AS (INSERT INTO {SCHEMA}.events (event_id, case_id, event_type, local_authority,"
        f"   received_at, recorded_at, imported, sequence, envelope) {stored}),"
        f" emitted AS (INSERT INTO {SCHEMA}.emitted_events (event_id, event_type, topic, key, value, headers)"
        f"   {emitted} RETURNING position)"
        f"{remembered}"
        + (", quiet AS (SELECT set_config('sir.outbox_woken_in_process', 'on', true) AS quiet)" if woken_in_process else "")
        + f" INSERT INTO {SCHEMA}.outbox (position) SELECT position FROM emitted"
        + (" WHERE (SELECT quiet FROM quiet) = 'on'" if woken_in_process else "")
    )
    remembering = (remember.token_id, remember.key, remember.request_sha256, remember.response) if remember else ()
    if one:
        [(event, text)] = events
        begun = (new_cases[0].case_id, new_cases[0].local_authority, new_cases[0].sog_region) if new_cases else (
            None, None, None)  # no case begun: $1 null
        await conn.execute(
            statement,
            *begun, imported,
            event.event_id, event.case_id, event.event_type, event.local_authority, event.received_at,
            event.recorded_at, event.sequence, text, topic_of(event.event_type),
            # pydantic's serialiser: a fraction of `json.dumps`'s time.
            to_json(cloudevent_headers(event, "intake", imported)).decode(),
            *remembering,
        )
        return
    await conn.execute(
        statement,
        [c.case_id for c in new_cases], [c.local_authority for c in new_cases], [c.sog_region for c in new_cases],
        imported,
        [e.event_id for e, _ in events], [e.case_id for e, _ in events], [e.event_type for e, _ in events],
        [e.local_authority for e, _ in events], [e.received_at for e, _ in events],
        [e.recorded_at for e, _ in events], [e.sequence for e, _ in events], [text for _, text in events],
        [topic_of(e.event_type) for e, _ in events],
        # The headers as one JSON array (one encoding a statement, not one an event).
        to_json([cloudevent_headers(e, "intake", imported) for e, _ in events]).decode(),
        *remembering,
    )


async def now_and_prior_answer(
    conn: asyncpg.Connection | asyncpg.Pool, token_id: str, key: str | None
) -> tuple[dt.datetime, asyncpg.Record | None]:
    """The database clock and the stored answer to the Idempotency-Key (if any): one round trip."""
    row = await conn.fetchrow(
        f"SELECT now() AS now, k.request_sha256, k.response FROM (SELECT 1) one"
        f" LEFT JOIN {SCHEMA}.idempotency_keys k ON k.token_id = $1 AND k.key = $2",
        token_id, key,
    )
    return row["now"], row if row["request_sha256"] is not None else None


async def now(conn: asyncpg.Connection):
    """The database clock: one clock for every service's timestamps."""
    return await conn.fetchval("SELECT now()")
