"""Intake's SQL: the event store, the case lock and idempotency keys."""

from __future__ import annotations

import uuid

import asyncpg

from shared.events import CASE_EVENT_MODELS, Envelope
from shared.lifecycle import Case, fold
from shared.outbox import enqueue

SCHEMA = "intake"
# The stored envelope with its case sequence: events stored before sequences existed
# have it in the `sequence` column only (the envelope is immutable).
_ENVELOPE = "envelope || jsonb_strip_nulls(jsonb_build_object('sequence', sequence))"


async def lock_case(conn: asyncpg.Connection, case_id: uuid.UUID) -> Case | None:
    """The case as its events make it, locked until the transaction ends, so one case's
    events are written one at a time and in order."""
    found = await conn.fetchval(f"SELECT true FROM {SCHEMA}.cases WHERE case_id = $1 FOR UPDATE", case_id)
    read = await read_case(conn, case_id) if found else None
    return read[0] if read is not None else None


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


async def append(conn: asyncpg.Connection, event: Envelope, case: Case, *, imported: bool = False) -> Envelope:
    """Store the event, and record and queue it for publication (shared/outbox.py), in
    the caller's transaction, which holds the case's lock (`lock_case`; a new case: its
    row's insert). A case event gets the case's next sequence number, whatever it
    carried; returns the event as stored."""
    if event.event_type == "incident.notified":
        await conn.execute(
            f"INSERT INTO {SCHEMA}.cases (case_id, local_authority, sog_region) VALUES ($1, $2, $3)",
            event.case_id, event.local_authority, case.sog_region,
        )
        sequence = 1
    elif event.event_type in CASE_EVENT_MODELS:
        sequence = await conn.fetchval(
            f"SELECT coalesce(max(sequence), 0) + 1 FROM {SCHEMA}.events WHERE case_id = $1", event.case_id
        )
    else:
        sequence = None  # a forwarding record of imported history
    event = event.model_copy(update={"sequence": sequence})
    await conn.execute(
        f"INSERT INTO {SCHEMA}.events (event_id, case_id, event_type, local_authority,"
        " received_at, recorded_at, imported, sequence, envelope) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
        event.event_id, event.case_id, event.event_type, event.local_authority,
        event.received_at, event.recorded_at, imported, sequence, event.model_dump(mode="json"),
    )
    await enqueue(conn, SCHEMA, event, "intake", imported=imported)
    return event


async def now(conn: asyncpg.Connection):
    """The database clock: one clock for every service's timestamps."""
    return await conn.fetchval("SELECT now()")


async def prior_answer(conn: asyncpg.Connection, token_id: str, key: str) -> asyncpg.Record | None:
    return await conn.fetchrow(
        f"SELECT request_sha256, response FROM {SCHEMA}.idempotency_keys"
        " WHERE token_id = $1 AND key = $2",
        token_id, key,
    )


async def remember_answer(
    conn: asyncpg.Connection, token_id: str, key: str, request_sha256: bytes, response: dict
) -> None:
    await conn.execute(
        f"INSERT INTO {SCHEMA}.idempotency_keys (token_id, key, request_sha256, response)"
        " VALUES ($1, $2, $3, $4)",
        token_id, key, request_sha256, response,
    )
