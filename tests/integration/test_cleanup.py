"""A test run drops every database it creates, even when a test fails."""

import asyncpg
import pytest

from tests.integration import conftest


async def _databases(server_dsn: str, names: list[str]) -> set[str]:
    conn = await asyncpg.connect(server_dsn)
    try:
        rows = await conn.fetch("SELECT datname FROM pg_database WHERE datname = ANY($1::text[])", names)
    finally:
        await conn.close()
    return {row["datname"] for row in rows}


async def test_the_databases_of_a_failed_session_are_dropped_even_with_a_pool_open():
    made: list[str] = []
    pools = []
    with pytest.raises(RuntimeError, match="a test failed"):
        with conftest._local_infra() as infra:
            for _ in range(2):
                dsn = infra.new_database()
                made.append(dsn.rsplit("/", 1)[1])
                pools.append(await asyncpg.create_pool(dsn, min_size=1, max_size=1))
            assert await _databases(infra.server_dsn, made) == set(made)
            server = infra.server_dsn
            raise RuntimeError("a test failed")
    try:
        assert await _databases(server, made) == set()
    finally:
        for pool in pools:
            pool.terminate()
