"""Reporting's SQL: its projections."""

from __future__ import annotations

import asyncpg

SCHEMA = "reporting"


async def count_notification(conn: asyncpg.Connection, local_authority: str) -> None:
    await conn.execute(
        f"INSERT INTO {SCHEMA}.notifications_by_authority (local_authority, notifications) VALUES ($1, 1)"
        " ON CONFLICT (local_authority) DO UPDATE SET notifications = notifications_by_authority.notifications + 1",
        local_authority,
    )


async def notification_counts(conn: asyncpg.Connection | asyncpg.Pool) -> dict[str, int]:
    rows = await conn.fetch(f"SELECT local_authority, notifications FROM {SCHEMA}.notifications_by_authority")
    return {r["local_authority"]: r["notifications"] for r in rows}
