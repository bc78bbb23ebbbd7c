"""Ceilings: the simplest code doing each hot path's I/O, measured in the same run as the
platform's own figure (issue 15), and the one line every bench prints per row.

Absolute figures drift 2-3x between days on a shared machine; the ratio of a path's
figure to its ceiling measured minutes apart does not, and that ratio is what we hold.
Each ceiling is an importable async function a bench calls in its own run:

- `raw_consume`       rebuild's ceiling: plain aiokafka, no group, `getmany` batches,
                      every partition of the topics read from the start;
- `executemany_rows`  import's ceiling: one asyncpg `executemany` of the rows into a
  `copy_rows`         table of the same shape, and the same rows by COPY;
- `raw_produce`       replay's ceiling: one producer with the platform's settings, a
                      chunk's acknowledgements awaited while the next is queued;
- `deadlines_claim_loop`  (added by the deadlines-speed work) and
  `bare_intake_app`       (added by the intake work) go here too.

Every bench prints, per row of docs/performance.md, one line made by `report_row`:

    path | figure | ceiling | ratio | target
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterable, Sequence

import asyncpg
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

# --- the uniform row -------------------------------------------------------------------

ROW_FIELDS = ("path", "figure", "ceiling", "ratio", "target")


def ratio(figure: float, ceiling: float | None) -> float | None:
    """figure / ceiling, or None without a ceiling (or a zero one)."""
    if not ceiling:
        return None
    return figure / ceiling


def format_row(path: str, figure: str, ceiling: str | None, ratio: float | None, target: str) -> str:
    """`path | figure | ceiling | ratio | target`; a missing ceiling or ratio is `—`."""
    fields = (path, figure, ceiling or "—", "—" if ratio is None else f"{ratio:.2f}", target)
    return " | ".join(field.replace("|", "/") for field in fields)


def report_row(path: str, figure: str, ceiling: str | None = None, ratio: float | None = None,
               target: str = "—") -> str:
    """Print (and return) the one uniform line of a row, for docs/performance.md to quote."""
    line = format_row(path, figure, ceiling, ratio, target)
    print(line, flush=True)
    return line


# --- rebuild: raw consumption ------------------------------------------------------------

async def raw_consume(bootstrap: str, topics: Sequence[str], expected: int, *, fetch_max_wait_ms: int = 100,
                      idle_polls: int = 10, poll_ms: int = 500) -> tuple[int, float]:
    """Read every record of `topics` from the start with a bare aiokafka consumer (no
    group, no decoding): the count read and the seconds until the last one arrived (it
    stops at `expected`, or after `idle_polls` empty fetches, whose time is not counted)."""
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap, group_id=None, enable_auto_commit=False, auto_offset_reset="earliest",
        fetch_max_wait_ms=fetch_max_wait_ms, max_partition_fetch_bytes=8 * 1024 * 1024,
        fetch_max_bytes=64 * 1024 * 1024,
    )
    await consumer.start()
    try:
        await consumer.topics()  # loads the cluster's metadata
        partitions = [TopicPartition(t, p) for t in topics for p in sorted(consumer.partitions_for_topic(t) or ())]
        consumer.assign(partitions)
        await consumer.seek_to_beginning(*partitions)
        started = last = time.perf_counter()
        count, idle = 0, 0
        while count < expected and idle < idle_polls:
            batches = await consumer.getmany(timeout_ms=poll_ms, max_records=20_000)
            if batches:
                idle = 0
                count += sum(len(records) for records in batches.values())
                last = time.perf_counter()
            else:
                idle += 1
        return count, last - started
    finally:
        await consumer.stop()


# --- import: executemany and COPY of rows ----------------------------------------------

# The shape of a stored event as the import must at least write it (like intake.events).
EVENT_TABLE = (
    "(event_id uuid PRIMARY KEY, case_id uuid, event_type text, local_authority text, envelope jsonb)"
)


async def executemany_rows(database_url: str, rows: Sequence[tuple], *, table: str = "bench_ceiling_events",
                           shape: str = EVENT_TABLE, batch: int = 1000) -> float:
    """Rows/s of asyncpg `executemany` of `rows` into a fresh table of `shape`, in batches
    of `batch` rows (one transaction each). The table is dropped afterwards."""
    width = len(rows[0]) if rows else 0
    placeholders = ", ".join(f"${i}" for i in range(1, width + 1))
    conn = await asyncpg.connect(database_url)
    try:
        await conn.execute(f"DROP TABLE IF EXISTS {table}; CREATE TABLE {table} {shape}")
        started = time.perf_counter()
        for at in range(0, len(rows), batch):
            async with conn.transaction():
                await conn.executemany(f"INSERT INTO {table} VALUES ({placeholders})", rows[at:at + batch])
        seconds = time.perf_counter() - started
        await conn.execute(f"DROP TABLE {table}")
        return len(rows) / seconds
    finally:
        await conn.close()


async def copy_rows(database_url: str, rows: Sequence[tuple], *, table: str = "bench_ceiling_events",
                    shape: str = EVENT_TABLE) -> float:
    """Rows/s of one binary COPY of `rows` into a fresh table of `shape` (jsonb columns
    take text). The table is dropped afterwards."""
    conn = await asyncpg.connect(database_url)
    try:
        await conn.execute(f"DROP TABLE IF EXISTS {table}; CREATE TABLE {table} {shape}")
        started = time.perf_counter()
        await conn.copy_records_to_table(table, records=rows)
        seconds = time.perf_counter() - started
        await conn.execute(f"DROP TABLE {table}")
        return len(rows) / seconds
    finally:
        await conn.close()


# --- replay: raw produce ---------------------------------------------------------------

Message = tuple[str, bytes | None, bytes, list[tuple[str, bytes]]]  # topic, key, value, headers


async def raw_produce(bootstrap: str, messages: Iterable[Message], *, chunk: int = 5000,
                      producer: AIOKafkaProducer | None = None) -> tuple[int, float]:
    """Send `messages` with one aiokafka producer (the platform's settings unless one is
    given: acks=all, no idempotence), a chunk's acknowledgements awaited while the next is
    queued; the count sent and the seconds it took (topics must exist)."""
    if producer is None:
        producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", enable_idempotence=False,
                                    linger_ms=2, request_timeout_ms=10_000)
    await producer.start()
    try:
        started = time.perf_counter()
        count = 0
        in_flight: list = []
        sent: list = []
        for topic, key, value, headers in messages:
            sent.append(await producer.send(topic, value, key=key, headers=headers))
            count += 1
            if len(sent) >= chunk:
                if in_flight:
                    await asyncio.gather(*in_flight)
                in_flight, sent = sent, []
        await asyncio.gather(*in_flight, *sent)
        return count, time.perf_counter() - started
    finally:
        await producer.stop()


# --- owned by other work, added in their branches --------------------------------------
# deadlines_claim_loop: a SKIP LOCKED claim of 1,000 + outbox insert per transaction (bench/deadlines.py).
# bare_intake_app: FastAPI + pydantic + one asyncpg transaction writing event and outbox rows (intake).
