"""asyncpg pools and the SQL migrations of each service's schema."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import asyncpg

log = logging.getLogger(__name__)

SHARED_MIGRATIONS = Path(__file__).parent / "migrations"
# Tables every service with an outbox and consumers has, in its own schema.
COMMON = SHARED_MIGRATIONS / "common"
AUTH = SHARED_MIGRATIONS / "auth"


async def _init_connection(conn: asyncpg.Connection) -> None:
    for type_name in ("json", "jsonb"):
        await conn.set_type_codec(
            type_name, encoder=json.dumps, decoder=json.loads, schema="pg_catalog"
        )


async def _after_use(conn: asyncpg.Connection) -> None:
    """What a connection needs on its way back to the pool: nothing beyond asyncpg's own
    rollback of an unfinished transaction. The default reset query (RESET ALL, UNLISTEN *,
    advisory unlock) costs a round trip per use, and nothing here leaves session state:
    settings and advisory locks are transaction-scoped, listeners removed by their owner."""


async def create_pool(dsn: str, min_size: int = 1, max_size: int = 10) -> asyncpg.Pool:
    return await asyncpg.create_pool(
        dsn, min_size=min_size, max_size=max_size, init=_init_connection, reset=_after_use
    )


def read_migrations(schema: str, *folders: Path) -> list[tuple[str, str]]:
    """(name, sql) of every `*.sql` in the folders, in order; `{schema}` is filled in."""
    migrations = []
    for folder in folders:
        for path in sorted(folder.glob("*.sql")):
            sql = path.read_text().replace("{schema}", schema)
            migrations.append((f"{folder.name}/{path.name}", sql))
    return migrations


async def migrate(pool: asyncpg.Pool, schema: str, *folders: Path) -> list[str]:
    """Apply the folders' migrations not yet applied to `schema`; returns their names.

    An advisory lock makes services that start together take turns.
    """
    applied = []
    async with pool.acquire() as conn, conn.transaction():
        await conn.execute("SELECT pg_advisory_xact_lock(hashtext('sir-migrate'))")
        await conn.execute(f"CREATE SCHEMA IF NOT EXISTS {schema}")
        await conn.execute(
            f"CREATE TABLE IF NOT EXISTS {schema}.schema_migrations"
            " (name text PRIMARY KEY, applied_at timestamptz NOT NULL DEFAULT now())"
        )
        done = {r["name"] for r in await conn.fetch(f"SELECT name FROM {schema}.schema_migrations")}
        for name, sql in read_migrations(schema, *folders):
            if name in done:
                continue
            await conn.execute(sql)
            await conn.execute(f"INSERT INTO {schema}.schema_migrations (name) VALUES ($1)", name)
            applied.append(name)
    if applied:
        log.info("migrated schema %s: %s", schema, ", ".join(applied))
    return applied


async def migrate_auth(pool: asyncpg.Pool) -> list[str]:
    return await migrate(pool, "auth", AUTH)
