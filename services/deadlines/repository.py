"""Deadlines' SQL."""

from __future__ import annotations

import datetime as dt
import re
import uuid
from collections.abc import Mapping
from dataclasses import fields
from typing import Any, TypeAlias

import asyncpg

from services.deadlines.domain import RULE_NAMES, CaseDeadlines, CaseRow, Deadline, EarlyStop

SCHEMA = "deadlines"
COLUMNS = (
    "case_id, rule, sequence, local_authority, status, watched, imported, started_at, due_at, warn_at,"
    " next_fire_at, warned_at, breached_at, met_at, cancelled_at, working_days_late"
)
Executor: TypeAlias = asyncpg.Connection | asyncpg.Pool


# --- the consumer's state: load, save ----------------------------------------------------

# The columns the consumer's decision may change on a deadline it did not open; the
# others are written once, when it opens (and the scheduler's own, warned_at and
# breached_at, never by the consumer).
CHANGING = {
    "status": "text", "next_fire_at": "timestamptz", "met_at": "timestamptz",
    "cancelled_at": "timestamptz", "working_days_late": "integer",
}


_DEADLINE_COLUMNS = (
    "rule, sequence, local_authority, status, watched, imported, started_at, due_at, warn_at, next_fire_at, opened_by,"
    " met_at, cancelled_at, working_days_late"
)
# A case's state in one statement: its deadlines (locked), its early stops and its row,
# each a `kind` of row with the columns it has (the others NULL).
_LOAD = f"""
WITH locked AS (
    SELECT case_id, opened_at, {_DEADLINE_COLUMNS} FROM {SCHEMA}.deadlines
    WHERE case_id = ANY($1::uuid[]) FOR UPDATE
)
SELECT * FROM (
    SELECT 'deadline' AS kind, case_id, {_DEADLINE_COLUMNS},
           NULL::uuid AS event_id, NULL::timestamptz AS stopped_at, NULL::text AS sog_region,
           opened_at, array_position($2::text[], rule) AS rule_order
    FROM locked
    UNION ALL
    SELECT 'early_stop', case_id, rule, NULL, NULL, NULL, NULL, imported, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL,
           event_id, stopped_at, NULL, NULL, NULL
    FROM {SCHEMA}.early_stops WHERE case_id = ANY($1::uuid[])
    UNION ALL
    SELECT 'case', case_id, NULL, NULL, local_authority, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL,
           NULL, NULL, sog_region, NULL, NULL
    FROM {SCHEMA}.cases WHERE case_id = ANY($1::uuid[])
) AS state
-- deadlines in the order they were opened (a closing cancels in this order); early stops by time
ORDER BY case_id, kind, opened_at, rule_order, sequence, stopped_at, event_id
"""


async def load_cases(conn: asyncpg.Connection, case_ids: list[uuid.UUID]) -> dict[uuid.UUID, CaseDeadlines]:
    """Lock the cases until the transaction ends, then read their state in one query (an
    empty one for a case never seen).

    The lock: a case's start and stop may come on two topics, applied by two processes at
    once; without it neither would see the other's row (a stop kept early and a start that
    finds no early stop), and the deadline would be breached though it was met. Cases are
    locked in one order (their ids sorted) so two batches never wait on each other, and
    by a statement of its own before the read, whose snapshot then holds what the previous
    holder committed. The deadlines are read `FOR UPDATE`: the scheduler skips them
    (`SKIP LOCKED`) until this transaction ends, so what is saved is never based on a row
    it has moved on since."""
    ids = sorted(set(case_ids))
    await conn.execute(
        "SELECT pg_advisory_xact_lock(hashtextextended(c::text, 0)) FROM unnest($1::uuid[]) AS c", ids
    )
    cases: dict[uuid.UUID, CaseRow] = {}
    deadlines: dict[uuid.UUID, list[Deadline]] = {case_id: [] for case_id in ids}
    early_stops: dict[uuid.UUID, list[EarlyStop]] = {case_id: [] for case_id in ids}
    for row in await conn.fetch(_LOAD, ids, list(RULE_NAMES)):
        case_id = row["case_id"]
        if row["kind"] == "deadline":
            deadlines[case_id].append(Deadline(**{name: row[name] for name in _DEADLINE_FIELDS}))
        elif row["kind"] == "early_stop":
            early_stops[case_id].append(EarlyStop(row["rule"], row["event_id"], row["stopped_at"], row["imported"]))
        else:
            cases[case_id] = CaseRow(row["local_authority"], row["sog_region"])
    return {
        case_id: CaseDeadlines(case_id, cases.get(case_id), tuple(deadlines[case_id]), tuple(early_stops[case_id]))
        for case_id in ids
    }


async def save_cases(
    conn: asyncpg.Connection, before: Mapping[uuid.UUID, CaseDeadlines], after: Mapping[uuid.UUID, CaseDeadlines]
) -> None:
    """Write what the decisions changed, in one statement: new case rows, new deadlines,
    the changed columns of the others (only those: one part per set of columns changed),
    early stops kept and taken. The parts touch different rows, so one statement's
    snapshot serves them all."""
    new_cases: list[tuple[uuid.UUID, CaseRow]] = []
    opened: list[tuple[uuid.UUID, Deadline]] = []
    changed: dict[tuple[str, ...], list[tuple[uuid.UUID, Deadline]]] = {}
    kept: list[tuple[uuid.UUID, EarlyStop]] = []
    taken: list[tuple[uuid.UUID, EarlyStop]] = []
    for case_id, state in after.items():
        old = before[case_id]
        if state.case is not None and old.case is None:
            new_cases.append((case_id, state.case))
        was = {deadline.key: deadline for deadline in old.deadlines}
        for deadline in state.deadlines:
            prior = was.get(deadline.key)
            if prior is None:
                opened.append((case_id, deadline))
            elif deadline != prior:
                columns = tuple(name for name in _DEADLINE_FIELDS if getattr(deadline, name) != getattr(prior, name))
                if unknown := set(columns) - set(CHANGING):
                    raise ValueError(f"deadline {case_id}/{deadline.key}: {sorted(unknown)} are set once, when it opens")
                changed.setdefault(columns, []).append((case_id, deadline))
        old_stops = {early.key for early in old.early_stops}
        new_stops = {early.key for early in state.early_stops}
        kept += [(case_id, early) for early in state.early_stops if early.key not in old_stops]
        taken += [(case_id, early) for early in old.early_stops if early.key not in new_stops]
    statement = _Statement()
    if new_cases:
        statement.part(
            f"INSERT INTO {SCHEMA}.cases (case_id, local_authority, sog_region)"
            " SELECT * FROM unnest({uuid}, {text}, {text}) ON CONFLICT (case_id) DO NOTHING",
            [c for c, _ in new_cases], [row.local_authority for _, row in new_cases],
            [row.sog_region for _, row in new_cases],
        )
    if opened:
        names = ("case_id",) + _DEADLINE_FIELDS
        statement.part(
            f"INSERT INTO {SCHEMA}.deadlines ({', '.join(names)})"
            f" SELECT * FROM unnest({', '.join('{' + _DEADLINE_TYPES[name] + '}' for name in names)})",
            *[[case_id if name == "case_id" else getattr(d, name) for case_id, d in opened] for name in names],
        )
    for columns, rows in changed.items():
        statement.part(
            f"UPDATE {SCHEMA}.deadlines AS d SET {', '.join(f'{name} = u.{name}' for name in columns)}"
            " FROM unnest({uuid}, {text}, {integer}, "
            + ", ".join("{" + CHANGING[name] + "}" for name in columns)
            + f") AS u(case_id, rule, sequence, {', '.join(columns)})"
            " WHERE (d.case_id, d.rule, d.sequence) = (u.case_id, u.rule, u.sequence)",
            [c for c, _ in rows], [d.rule for _, d in rows], [d.sequence for _, d in rows],
            *[[getattr(d, name) for _, d in rows] for name in columns],
        )
    if kept:
        statement.part(
            f"INSERT INTO {SCHEMA}.early_stops (case_id, rule, event_id, stopped_at, imported)"
            " SELECT * FROM unnest({uuid}, {text}, {uuid}, {timestamptz}, {boolean}) ON CONFLICT DO NOTHING",
            [c for c, _ in kept], [e.rule for _, e in kept], [e.event_id for _, e in kept],
            [e.stopped_at for _, e in kept], [e.imported for _, e in kept],
        )
    if taken:
        statement.part(
            f"DELETE FROM {SCHEMA}.early_stops WHERE (case_id, rule, event_id) IN"
            " (SELECT * FROM unnest({uuid}, {text}, {uuid}))",
            [c for c, _ in taken], [e.rule for _, e in taken], [e.event_id for _, e in taken],
        )
    await statement.execute(conn)


class _Statement:
    """Writes as the parts of one statement (data-modifying CTEs), one round trip. A part's
    SQL names each array parameter by its type, `{uuid}`, numbered here in order."""

    def __init__(self) -> None:
        self.parts: list[str] = []
        self.args: list[Any] = []

    def part(self, sql: str, *arrays: list[Any]) -> None:
        numbered = iter(range(len(self.args) + 1, len(self.args) + len(arrays) + 1))
        self.parts.append(re.sub(r"\{(\w+)\}", lambda m: f"${next(numbered)}::{m.group(1)}[]", sql))
        self.args += arrays

    async def execute(self, conn: asyncpg.Connection) -> None:
        if not self.parts:
            return
        if len(self.parts) == 1:
            await conn.execute(self.parts[0], *self.args)
            return
        ctes = ", ".join(f"w{i} AS ({part})" for i, part in enumerate(self.parts))
        await conn.execute(f"WITH {ctes} SELECT", *self.args)


_DEADLINE_FIELDS: tuple[str, ...] = tuple(f.name for f in fields(Deadline))
_DEADLINE_TYPES = {
    "case_id": "uuid", "rule": "text", "sequence": "integer", "local_authority": "text", "status": "text", "watched": "boolean",
    "imported": "boolean", "started_at": "timestamptz", "due_at": "timestamptz", "warn_at": "timestamptz",
    "next_fire_at": "timestamptz", "opened_by": "uuid", "met_at": "timestamptz", "cancelled_at": "timestamptz",
    "working_days_late": "integer",
}


async def case_of(conn: Executor, case_id: uuid.UUID) -> asyncpg.Record | None:
    return await conn.fetchrow(f"SELECT case_id, local_authority, sog_region FROM {SCHEMA}.cases WHERE case_id = $1", case_id)


# --- the scheduler ------------------------------------------------------------------------


async def fire_due(conn: asyncpg.Connection, now: dt.datetime | None, limit: int) -> list[asyncpg.Record]:
    """Claim up to `limit` deadlines whose next fire time is at or before `now` (None: the
    database's now()) and move them on, in one statement: past their due time → breached;
    else warned (next: the due time). Rows another transaction holds are skipped (`SKIP
    LOCKED`); the caller's transaction holds these until it commits the events with them.
    Each row carries the time fired against (`now`) and the database's now() (`recorded_at`).

    The statement is planned for the table as it is at each call (a custom plan), never
    from the plan cache's generic plan: a generic plan made while the table was small (a
    service started on an empty database, then a million deadlines loaded) joins back to
    the table by a hash over a sequential scan of all of it, and keeps doing so until an
    ANALYZE: 300-700 ms a round instead of a few (issue 15, the steady breach lag)."""
    await conn.execute("SET LOCAL plan_cache_mode = force_custom_plan")
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
