"""The ceilings the benches measure beside the platform (bench/ceilings.py) do the I/O
they claim: every row written, every message produced and read back."""

import importlib.util
import uuid
from pathlib import Path

import asyncpg

from shared.messaging import ensure_topics

_spec = importlib.util.spec_from_file_location("ceilings", Path(__file__).parents[2] / "bench" / "ceilings.py")
assert _spec is not None and _spec.loader is not None
ceilings = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(ceilings)


def _rows(count: int) -> list[tuple]:
    return [(uuid.uuid4(), uuid.uuid4(), "incident.notified", "fife", f'{{"n": {n}}}') for n in range(count)]


async def test_executemany_and_copy_write_every_row_and_leave_no_table(infra):
    database_url = infra.new_database()
    assert await ceilings.executemany_rows(database_url, _rows(2500)) > 0
    assert await ceilings.copy_rows(database_url, _rows(2500)) > 0
    conn = await asyncpg.connect(database_url)
    try:
        assert await conn.fetchval("SELECT to_regclass('bench_ceiling_events')") is None
    finally:
        await conn.close()


async def test_raw_produce_then_raw_consume_reads_back_every_message(infra):
    topic = f"bench-ceiling-{uuid.uuid4().hex[:8]}"
    await ensure_topics(infra.bootstrap, (topic,), 3)
    messages = [(topic, str(n).encode(), b"x" * 100, [("ce_id", str(n).encode())]) for n in range(3000)]
    sent, seconds = await ceilings.raw_produce(infra.bootstrap, messages, chunk=1000)
    assert (sent, seconds > 0) == (3000, True)
    read, _ = await ceilings.raw_consume(infra.bootstrap, (topic,), 3000, idle_polls=4, poll_ms=300)
    assert read == 3000
