"""Routing's SQL."""

from __future__ import annotations

import datetime as dt
import uuid

import asyncpg

SCHEMA = "routing"


async def owe(
    conn: asyncpg.Connection, case_id: uuid.UUID, recipient: str, local_authority: str, received_at: dt.datetime
) -> None:
    await conn.execute(
        f"INSERT INTO {SCHEMA}.deliveries (case_id, recipient, local_authority, received_at)"
        " VALUES ($1, $2, $3, $4) ON CONFLICT DO NOTHING",
        case_id, recipient, local_authority, received_at,
    )


async def deliveries(conn: asyncpg.Connection | asyncpg.Pool, case_id: uuid.UUID | None, status: str | None):
    return await conn.fetch(
        f"SELECT case_id, recipient, local_authority, received_at, status FROM {SCHEMA}.deliveries"
        " WHERE ($1::uuid IS NULL OR case_id = $1) AND ($2::text IS NULL OR status = $2)"
        " ORDER BY received_at, recipient LIMIT 1000",
        case_id, status,
    )
