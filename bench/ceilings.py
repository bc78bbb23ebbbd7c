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
- `deadlines_claim_loop`  the deadline scheduler's ceiling: one worker claiming 1,000 due
                          rows per transaction with `FOR UPDATE SKIP LOCKED`, moving them
                          on and inserting their events into a record + outbox of the
                          platform's shape, in one transaction per batch.
- `bare_intake_app`  intake's HTTP ceiling: FastAPI + pydantic (the notification's own
                     body model) + one asyncpg transaction inserting an event row and an
                     outbox row, served by the same uvicorn as intake (bench/intake.py).

Every bench prints, per row of docs/performance.md, one line made by `report_row`:

    path | figure | ceiling | ratio | target
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import os
import random
import time
import uuid
from collections.abc import Callable, Iterable, Sequence
from contextlib import asynccontextmanager

import asyncpg
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from fastapi import FastAPI, Request

from shared.events import IncidentNotifiedData

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
                      idle_polls: int = 10, poll_ms: int = 500,
                      each: Callable[[bytes], object] | None = None) -> tuple[int, float]:
    """Read every record of `topics` from the start with a bare aiokafka consumer (no
    group, no decoding): the count read and the seconds until the last one arrived (it
    stops at `expected`, or after `idle_polls` empty fetches, whose time is not counted).
    `each`, if given, is called on every record's value (not the ceiling: a diagnostic,
    e.g. the rebuild's floor of consuming and validating every event and nothing more)."""
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
                if each is not None:
                    for records in batches.values():
                        for record in records:
                            each(record.value)
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


# --- deadlines: a SKIP LOCKED claim loop with an outbox insert ------------------------------

_CEILING_SCHEMA = "bench_ceiling_deadlines"


async def deadlines_claim_loop(database_url: str, rows: int = 100_000, *, batch: int = 1000,
                               background: int = 0) -> float:
    """Breaches per second of the simplest scheduler: `rows` deadlines due at one instant
    (plus `background` due months later, standing in the index), in a table of the
    deadlines service's shape (`LIKE deadlines.deadlines` when the database has it: the
    same columns and indexes to write), claimed `batch` at a
    time by one worker, each batch in one transaction that claims and updates the rows
    (`UPDATE … FROM (SELECT … FOR UPDATE SKIP LOCKED LIMIT n) RETURNING`) and inserts one
    event per row into the record and the outbox (one statement, values built with an
    f-string). Works in a schema of its own in `database_url`, dropped at the end."""
    s = _CEILING_SCHEMA
    conn = await asyncpg.connect(database_url)
    try:
        await conn.execute(f"DROP SCHEMA IF EXISTS {s} CASCADE; CREATE SCHEMA {s}")
        if await conn.fetchval("SELECT to_regclass('deadlines.deadlines') IS NOT NULL"):
            # The service's own table shape (columns, indexes, checks): the same row and index writes.
            await conn.execute(f"CREATE TABLE {s}.deadlines (LIKE deadlines.deadlines INCLUDING ALL)")
        else:
            await conn.execute(f"""
                CREATE TABLE {s}.deadlines (
                    case_id uuid NOT NULL, rule text NOT NULL, sequence integer NOT NULL,
                    local_authority text NOT NULL, status text NOT NULL, watched boolean NOT NULL,
                    imported boolean NOT NULL, started_at timestamptz NOT NULL, due_at timestamptz NOT NULL,
                    breached_at timestamptz, next_fire_at timestamptz, opened_by uuid NOT NULL,
                    PRIMARY KEY (case_id, rule, sequence));
                CREATE INDEX ON {s}.deadlines (next_fire_at) WHERE next_fire_at IS NOT NULL;
                CREATE INDEX ON {s}.deadlines (status, rule)""")
        await conn.execute(f"""
            CREATE TABLE {s}.emitted_events (
                position bigserial PRIMARY KEY, event_id uuid NOT NULL, event_type text NOT NULL,
                topic text NOT NULL, key bytea, value bytea NOT NULL, headers jsonb NOT NULL DEFAULT '{{}}',
                created_at timestamptz NOT NULL DEFAULT now());
            CREATE TABLE {s}.outbox (
                position bigint PRIMARY KEY REFERENCES {s}.emitted_events,
                created_at timestamptz NOT NULL DEFAULT now());
        """)
        now: dt.datetime = await conn.fetchval("SELECT now()")
        due = now - dt.timedelta(seconds=1)
        records = [
            (case, "review_submission", 1, "fife", "open", True, False, due - dt.timedelta(days=90), due, due, case)
            for case in (uuid.uuid4() for _ in range(rows))
        ] + [
            (case, "review_submission", 1, "fife", "open", True, False, now, later, later, case)
            for case in (uuid.uuid4() for _ in range(background))
            for later in [now + dt.timedelta(days=30, seconds=random.uniform(0, 90 * 86400))]
        ]
        await conn.copy_records_to_table("deadlines", schema_name=s, records=records, columns=(
            "case_id", "rule", "sequence", "local_authority", "status", "watched", "imported", "started_at", "due_at",
            "next_fire_at", "opened_by"))
        await conn.execute(f"ANALYZE {s}.deadlines")

        started = time.perf_counter()
        fired = 0
        while True:
            async with conn.transaction():
                claimed = await conn.fetch(f"""
                    UPDATE {s}.deadlines AS d SET status = 'breached', breached_at = d.due_at, next_fire_at = NULL
                    FROM (SELECT case_id, rule, sequence FROM {s}.deadlines WHERE next_fire_at <= now()
                          ORDER BY next_fire_at LIMIT $1 FOR UPDATE SKIP LOCKED) AS due
                    WHERE (d.case_id, d.rule, d.sequence) = (due.case_id, due.rule, due.sequence)
                    RETURNING d.case_id, d.rule, d.sequence, d.local_authority, d.started_at, d.due_at""", batch)
                if not claimed:
                    break
                ids, keys, values, headers = [], [], [], []
                for row in claimed:
                    event_id, case_id = uuid.uuid4(), str(row["case_id"])
                    ids.append(event_id)
                    keys.append(case_id.encode())
                    values.append(
                        f'{{"event_id":"{event_id}","event_type":"deadline.breached","case_id":"{case_id}",'
                        f'"local_authority":"{row["local_authority"]}","received_at":"{row["due_at"].isoformat()}",'
                        f'"data":{{"rule":"{row["rule"]}","started_at":"{row["started_at"].isoformat()}",'
                        f'"due_at":"{row["due_at"].isoformat()}","breached_at":"{row["due_at"].isoformat()}"}}}}'
                        .encode())
                    headers.append(json.dumps({"ce_id": str(event_id), "ce_type": "deadline.breached",
                                               "ce_subject": case_id}))
                await conn.execute(
                    f"WITH stored AS (INSERT INTO {s}.emitted_events (event_id, event_type, topic, key, value, headers)"
                    " SELECT i, 'deadline.breached', 'sir.deadlines.v1', k, v, h"
                    " FROM unnest($1::uuid[], $2::bytea[], $3::bytea[], $4::jsonb[]) AS e(i, k, v, h)"
                    " RETURNING position)"
                    f" INSERT INTO {s}.outbox (position) SELECT position FROM stored",
                    ids, keys, values, headers)
                fired += len(claimed)
        seconds = time.perf_counter() - started
        if fired != rows:
            raise AssertionError(f"the claim loop fired {fired:,} of {rows:,}")
        return rows / seconds
    finally:
        try:
            await conn.execute(f"DROP SCHEMA IF EXISTS {s} CASCADE")
        finally:
            await conn.close()


# The tables of the bare intake: an event row (like intake.events) and an outbox row.
BARE_INTAKE_SCHEMA = (
    "CREATE TABLE IF NOT EXISTS bench_bare_events (position bigserial PRIMARY KEY, event_id uuid NOT NULL UNIQUE,"
    " case_id uuid NOT NULL, event_type text NOT NULL, local_authority text NOT NULL,"
    " received_at timestamptz NOT NULL DEFAULT now(), envelope jsonb NOT NULL);"
    " CREATE TABLE IF NOT EXISTS bench_bare_outbox (position bigserial PRIMARY KEY, event_id uuid NOT NULL,"
    " topic text NOT NULL, value bytea NOT NULL)"
)


def bare_intake_app() -> FastAPI:
    """The ceiling of `POST /v1/notifications` (a uvicorn factory: `BENCH_DATABASE_URL`
    names the database; a pool of 10 connections, as a service's)."""
    database_url = os.environ["BENCH_DATABASE_URL"]

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        app.state.pool = await asyncpg.create_pool(database_url, min_size=1, max_size=10)
        await app.state.pool.execute(BARE_INTAKE_SCHEMA)
        try:
            yield
        finally:
            await app.state.pool.close()

    app = FastAPI(lifespan=lifespan, docs_url=None, redoc_url=None, openapi_url=None)

    @app.post("/v1/notifications", status_code=201)
    async def notify(body: IncidentNotifiedData, request: Request) -> dict:
        case_id, event_id = uuid.uuid4(), uuid.uuid4()
        envelope = json.dumps({"event_id": str(event_id), "case_id": str(case_id), "data": body.model_dump(mode="json")})
        async with request.app.state.pool.acquire() as conn, conn.transaction():
            await conn.execute(
                "INSERT INTO bench_bare_events (event_id, case_id, event_type, local_authority, envelope)"
                " VALUES ($1, $2, 'incident.notified', 'glasgow-city', $3::jsonb)",
                event_id, case_id, envelope,
            )
            await conn.execute(
                "INSERT INTO bench_bare_outbox (event_id, topic, value) VALUES ($1, 'sir.case-events.v1', $2)",
                event_id, envelope.encode(),
            )
        return {"case_id": str(case_id), "event_id": str(event_id)}

    return app
