"""Deadlines' SQL."""

from __future__ import annotations

import uuid

import asyncpg

from services.deadlines.domain import Deadline

SCHEMA = "deadlines"


async def open_deadline(conn: asyncpg.Connection, case_id: uuid.UUID, local_authority: str, deadline: Deadline) -> None:
    await conn.execute(
        f"INSERT INTO {SCHEMA}.deadlines (case_id, rule, local_authority, started_at, due_at)"
        " VALUES ($1, $2, $3, $4, $5) ON CONFLICT DO NOTHING",
        case_id, deadline.rule, local_authority, deadline.started_at, deadline.due_at,
    )


async def deadlines_of(conn: asyncpg.Connection | asyncpg.Pool, case_id: uuid.UUID) -> list[asyncpg.Record]:
    return await conn.fetch(
        f"SELECT case_id, rule, local_authority, started_at, due_at, status FROM {SCHEMA}.deadlines"
        " WHERE case_id = $1 ORDER BY due_at",
        case_id,
    )
