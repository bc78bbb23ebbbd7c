"""Deadlines' SQL."""

from __future__ import annotations

import datetime as dt
import uuid
from dataclasses import dataclass
from typing import TypeAlias

import asyncpg

SCHEMA = "deadlines"
COLUMNS = (
    "case_id, rule, sequence, local_authority, status, watched, imported, started_at, due_at, warn_at,"
    " next_fire_at, warned_at, breached_at, met_at, cancelled_at, working_days_late"
)
Executor: TypeAlias = asyncpg.Connection | asyncpg.Pool


# --- cases ------------------------------------------------------------------------------


async def lock_case(conn: asyncpg.Connection, case_id: uuid.UUID) -> dt.datetime:
    """Hold the case until the transaction ends and return the database's time. A case's
    start and stop may come on two topics, applied by two processes at once: without the
    lock neither would see the other's row (a stop kept early and a start that finds no
    early stop), and the deadline would be breached though it was met."""
    return await conn.fetchval(
        "SELECT now() FROM pg_advisory_xact_lock(hashtextextended($1::text, 0))", str(case_id)
    )


async def remember_case(conn: asyncpg.Connection, case_id: uuid.UUID, local_authority: str, sog_region: str | None) -> None:
    await conn.execute(
        f"INSERT INTO {SCHEMA}.cases (case_id, local_authority, sog_region) VALUES ($1, $2, $3)"
        " ON CONFLICT (case_id) DO NOTHING",
        case_id, local_authority, sog_region,
    )


async def case_of(conn: Executor, case_id: uuid.UUID) -> asyncpg.Record | None:
    return await conn.fetchrow(f"SELECT case_id, local_authority, sog_region FROM {SCHEMA}.cases WHERE case_id = $1", case_id)


# --- the engine's writes ----------------------------------------------------------------


@dataclass(frozen=True)
class NewDeadline:
    case_id: uuid.UUID
    rule: str
    local_authority: str
    watched: bool
    imported: bool
    started_at: dt.datetime
    due_at: dt.datetime
    warn_at: dt.datetime | None
    next_fire_at: dt.datetime | None
    opened_by: uuid.UUID


async def open_deadline(conn: asyncpg.Connection, new: NewDeadline) -> int:
    """Insert the deadline with the case's next sequence number for its rule; returns it.
    One case's events are applied in order, one at a time, so the numbers are stable."""
    return await conn.fetchval(
        f"INSERT INTO {SCHEMA}.deadlines (case_id, rule, sequence, local_authority, status, watched, imported,"
        "  started_at, due_at, warn_at, next_fire_at, opened_by)"
        f" SELECT $1, $2, coalesce(max(sequence), 0) + 1, $3, 'open', $4, $5, $6, $7, $8, $9, $10"
        f" FROM {SCHEMA}.deadlines WHERE case_id = $1 AND rule = $2"
        " RETURNING sequence",
        new.case_id, new.rule, new.local_authority, new.watched, new.imported,
        new.started_at, new.due_at, new.warn_at, new.next_fire_at, new.opened_by,
    )


async def has_started(conn: asyncpg.Connection, case_id: uuid.UUID, rule: str) -> bool:
    return await conn.fetchval(
        f"SELECT EXISTS (SELECT 1 FROM {SCHEMA}.deadlines WHERE case_id = $1 AND rule = $2)", case_id, rule
    )


async def oldest_unmet(conn: asyncpg.Connection, case_id: uuid.UUID, rule: str) -> asyncpg.Record | None:
    """The deadline a stop event meets: the oldest still open, or breached and not yet met.
    Locked: the scheduler may be about to breach it (it skips it while we hold it)."""
    return await conn.fetchrow(
        f"SELECT {COLUMNS} FROM {SCHEMA}.deadlines"
        " WHERE case_id = $1 AND rule = $2 AND status IN ('open', 'breached')"
        " ORDER BY sequence LIMIT 1 FOR UPDATE",
        case_id, rule,
    )


async def mark_met(
    conn: asyncpg.Connection, case_id: uuid.UUID, rule: str, sequence: int, met_at: dt.datetime, late: int
) -> None:
    await conn.execute(
        f"UPDATE {SCHEMA}.deadlines SET status = 'met', met_at = $4, working_days_late = $5, next_fire_at = NULL"
        " WHERE case_id = $1 AND rule = $2 AND sequence = $3",
        case_id, rule, sequence, met_at, late,
    )


async def hold_imported(conn: asyncpg.Connection, case_id: uuid.UUID, until: dt.datetime) -> None:
    """Keep the scheduler off the case's watched imported deadlines until `until`."""
    await conn.execute(
        f"UPDATE {SCHEMA}.deadlines SET next_fire_at = greatest(next_fire_at, $2)"
        " WHERE case_id = $1 AND imported AND next_fire_at IS NOT NULL",
        case_id, until,
    )


async def cancel_open(conn: asyncpg.Connection, case_id: uuid.UUID, at: dt.datetime) -> list[asyncpg.Record]:
    return await conn.fetch(
        f"UPDATE {SCHEMA}.deadlines SET status = 'cancelled', cancelled_at = $2, next_fire_at = NULL"
        f" WHERE case_id = $1 AND status = 'open' RETURNING {COLUMNS}",
        case_id, at,
    )


async def keep_early_stop(
    conn: asyncpg.Connection, case_id: uuid.UUID, rule: str, event_id: uuid.UUID, stopped_at: dt.datetime, imported: bool
) -> None:
    await conn.execute(
        f"INSERT INTO {SCHEMA}.early_stops (case_id, rule, event_id, stopped_at, imported)"
        " VALUES ($1, $2, $3, $4, $5) ON CONFLICT DO NOTHING",
        case_id, rule, event_id, stopped_at, imported,
    )


async def take_early_stop(conn: asyncpg.Connection, case_id: uuid.UUID, rule: str) -> asyncpg.Record | None:
    """The earliest kept stop of this case and rule, removed as it is used."""
    return await conn.fetchrow(
        f"DELETE FROM {SCHEMA}.early_stops WHERE (case_id, rule, event_id) = ("
        f"  SELECT case_id, rule, event_id FROM {SCHEMA}.early_stops WHERE case_id = $1 AND rule = $2"
        "   ORDER BY stopped_at LIMIT 1)"
        " RETURNING stopped_at, imported",
        case_id, rule,
    )


# --- the scheduler ------------------------------------------------------------------------


async def fire_due(conn: asyncpg.Connection, now: dt.datetime | None, limit: int) -> list[asyncpg.Record]:
    """Claim up to `limit` deadlines whose next fire time is at or before `now` (None: the
    database's now()) and move them on, in one statement: past their due time → breached;
    else warned (next: the due time). Rows another transaction holds are skipped (`SKIP
    LOCKED`); the caller's transaction holds these until it commits the events with them.
    Each row carries the time fired against (`now`) and the database's now() (`recorded_at`)."""
    return await conn.fetch(
        f"""
        UPDATE {SCHEMA}.deadlines AS d SET
            status       = CASE WHEN d.due_at <= due.now THEN 'breached' ELSE d.status END,
            breached_at  = CASE WHEN d.due_at <= due.now THEN d.due_at ELSE d.breached_at END,
            warned_at    = CASE WHEN d.due_at <= due.now THEN d.warned_at ELSE due.now END,
            next_fire_at = CASE WHEN d.due_at <= due.now THEN NULL ELSE d.due_at END
        FROM (
            SELECT case_id, rule, sequence, coalesce($1::timestamptz, now()) AS now FROM {SCHEMA}.deadlines
            WHERE next_fire_at <= coalesce($1::timestamptz, now()) ORDER BY next_fire_at LIMIT $2
            FOR UPDATE SKIP LOCKED
        ) AS due
        WHERE (d.case_id, d.rule, d.sequence) = (due.case_id, due.rule, due.sequence)
        RETURNING d.case_id, d.rule, d.sequence, d.local_authority, d.status, d.started_at, d.due_at, d.warn_at,
                  d.imported, due.now, now() AS recorded_at
        """,
        now, limit,
    )


async def earliest_fire(conn: Executor) -> tuple[dt.datetime | None, dt.datetime]:
    """The earliest next fire time (None: nothing to fire), and the database's now()."""
    row = await conn.fetchrow(
        f"SELECT (SELECT next_fire_at FROM {SCHEMA}.deadlines WHERE next_fire_at IS NOT NULL"
        "         ORDER BY next_fire_at LIMIT 1) AS earliest, now() AS now"
    )
    return row["earliest"], row["now"]


# --- reads ---------------------------------------------------------------------------------


async def deadlines_of(conn: Executor, case_id: uuid.UUID) -> list[asyncpg.Record]:
    return await conn.fetch(
        f"SELECT {COLUMNS} FROM {SCHEMA}.deadlines WHERE case_id = $1 ORDER BY started_at, rule, sequence",
        case_id,
    )


async def search(
    conn: Executor,
    *,
    status: str | None,
    rule: str | None,
    local_authority: str | None,
    sog_region: str | None,
    limit: int,
    offset: int,
) -> list[asyncpg.Record]:
    """Deadlines matching every filter given, by due time. `sog_region` keeps the cases
    routed to that region's SOG."""
    region_join = f" JOIN {SCHEMA}.cases c USING (case_id)" if sog_region else ""
    return await conn.fetch(
        f"SELECT {', '.join('d.' + c.strip() for c in COLUMNS.split(','))} FROM {SCHEMA}.deadlines d{region_join}"
        " WHERE ($1::text IS NULL OR d.status = $1) AND ($2::text IS NULL OR d.rule = $2)"
        " AND ($3::text IS NULL OR d.local_authority = $3)"
        + (" AND c.sog_region = $4" if sog_region else " AND $4::text IS NULL")
        + " ORDER BY d.due_at, d.case_id, d.rule, d.sequence LIMIT $5 OFFSET $6",
        status, rule, local_authority, sog_region, limit, offset,
    )


async def open_by_rule(conn: Executor) -> dict[str, int]:
    rows = await conn.fetch(f"SELECT rule, count(*) AS n FROM {SCHEMA}.deadlines WHERE status = 'open' GROUP BY rule")
    return {row["rule"]: row["n"] for row in rows}
