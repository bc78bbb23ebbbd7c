"""`sir report ...`: the national and quarterly reports from the command line, and the
rebuild of reporting's projections from the topics (docs/reports.md).

Rebuild: every event on `sir.case-events.v1`, `sir.routing.v1` and `sir.deadlines.v1` is
read from the start with a plain aiokafka consumer (no group, big `getmany` batches)
and folded in memory through the same deciders the live consumers run
(services/reporting/handlers.py: domain.py's `decide_case`, `decide_forward`,
`decide_deadline`), each case's events in sequence order (shared/ordering.py). Tansu's end offsets are not to
be trusted, so the end of a topic is where `idle_polls` fetches in a row bring nothing.
Then, in one transaction: the reports under way are waited for and the next ones held
off (repository.REBUILD_GATE: a report reads the projections before the rebuild or
after it, never between), reporting's `processed_events` is locked against the live
consumers (they wait), the topics are read again to their end, and every projection
table and the reporting consumers' `processed_events` rows are replaced by the rebuilt
ones (TRUNCATE and COPY). The live consumers then carry on from their committed offsets
and skip what the rebuild applied, so nothing is applied twice or lost. No lock is
waited for longer than SIR_REBUILD_LOCK_TIMEOUT_SECONDS (RebuildBlocked, nothing changed).
"""

from __future__ import annotations

import contextlib
import datetime as dt
import gc
import itertools
import json
import logging
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import asyncpg
from aiokafka import AIOKafkaConsumer, ConsumerRecord, TopicPartition
from pydantic import ValidationError

from services.reporting import handlers, repository
from services.reporting.app import SERVICE
from services.reporting.domain import NO_DEADLINES, NO_FORWARDS, report_schema
from services.reporting.render import render
from shared.consumer import consumer_name as shared_consumer_name
from shared.consumer import held_record
from shared.decider import Context
from shared.events import ANY_EVENT, CASE_EVENT_MODELS, Envelope
from shared.messaging import CASE_EVENTS, DEADLINE_EVENTS, IMPORTED_HEADER, ROUTING_EVENTS
from shared.ordering import Position, arrive, stop_before
from shared.process import Process
from shared.settings import Settings

log = logging.getLogger(__name__)

TOPICS = (CASE_EVENTS, ROUTING_EVENTS, DEADLINE_EVENTS)
GROUP_ID = SERVICE.group_id
SCHEMA_FILE = Path(__file__).parents[2] / "docs" / "report.schema.json"
PROCESSED = ("consumer", "event_id", "topic", "partition", "offset")
# Each topic's consumer (the live ones: handlers.py), and the state of a case it has not seen.
PROCESSES: dict[str, tuple[Process, Any]] = {
    CASE_EVENTS: (handlers.CASES, None),
    ROUTING_EVENTS: (handlers.FORWARDS, NO_FORWARDS),
    DEADLINE_EVENTS: (handlers.DEADLINES, NO_DEADLINES),
}
# The deciders read no clock (shared/decider.py): the rebuild's contexts differ only in the mark.
_EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.timezone.utc)
CONTEXTS = {False: Context(_EPOCH, False), True: Context(_EPOCH, True)}


def consumer_name(topic: str) -> str:
    """The name shared.consumer records reporting's processed events under, for `topic`."""
    return shared_consumer_name(GROUP_ID, topic)


CONSUMERS = {topic: consumer_name(topic) for topic in TOPICS}


_START: Position = Position()  # a case none of whose events has come yet


def _imported(record: ConsumerRecord) -> bool:
    """Whether the record came in imported history (as shared.consumer.Delivery reads it)."""
    imported = False
    for name, value in record.headers or ():
        if name == IMPORTED_HEADER:
            imported = value == b"true"  # the last one counts, as in a dict of the headers
    return imported


def record_of(topic: str, value: bytes, offset: int, partition: int = 0) -> ConsumerRecord:
    """A consumer record holding one event, as the broker would give it to `Projection.add`
    (for folding events held elsewhere: the benches' and tests' generated histories)."""
    return ConsumerRecord(topic, partition, offset, 0, 0, None, value, None, -1, len(value), ())


@dataclass
class Projection:
    """Reporting's projections, in memory, fed one record at a time: each topic's events
    folded through its live consumer's decider (handlers.py), state by case."""

    # The dicts are keyed by the UUIDs' integers: a uuid.UUID hashes and compares in Python,
    # an int in C, and each event looks up three of them.
    # topic -> case_id.int -> the decider's state (as the live consumers load and save it)
    states: dict[str, dict[int, Any]] = field(default_factory=lambda: {t: {} for t in TOPICS})
    # processed_events rows by (topic, event_id.int), as the live consumers write them
    processed: dict[tuple[str, int], tuple] = field(default_factory=dict)
    # Each case's place in its sequence, as the live case-events consumer keeps it, by case_id.int
    positions: dict[int, Position] = field(default_factory=dict)
    skipped: int = 0  # invalid or failing events: the live consumers send them to the dead letters

    def add(self, record: ConsumerRecord) -> None:
        try:
            event = ANY_EVENT.validate_json(record.value)
        except ValidationError:
            self.skipped += 1
            return
        topic, event_id = record.topic, event.event_id
        key = (topic, event_id.int)
        processed = self.processed
        if key in processed:
            return
        processed[key] = (CONSUMERS[topic], event_id, topic, record.partition, record.offset)
        if topic != CASE_EVENTS or event.event_type not in CASE_EVENT_MODELS:
            self._apply_or_skip(record, event)
            return
        # A case's events in sequence order, whatever the topic's order: the live
        # consumers' gate (shared/ordering.py), positions kept here in memory.
        case_id = event.case_id.int
        position, ready = arrive(self.positions.get(case_id, _START), event.sequence, (record, event))
        for index, (ready_record, ready_event) in enumerate(ready):
            if not self._apply_or_skip(ready_record, ready_event):
                failed = position.applied - (len(ready) - 1 - index)
                position = stop_before(position, failed, ready[index + 1:])
                break
        self.positions[case_id] = position

    def _apply_or_skip(self, record: ConsumerRecord, event: Envelope) -> bool:
        topic = record.topic
        process, empty = PROCESSES[topic]
        if not process.wants(event):
            return True
        case_id = event.case_id.int
        try:
            states = self.states[topic]
            before = states.get(case_id, empty)
            decision = process.decide(before, event, CONTEXTS[_imported(record)])
        except Exception as error:  # as the live consumer would fail on it
            log.warning("rebuild: event %s not applied: %r", event.event_id, error)
            self.skipped += 1
            del self.processed[topic, event.event_id.int]
            return False
        if decision.state is not before:
            states[case_id] = decision.state
        return True

    def position_rows(self) -> list[tuple]:
        """`case_positions` rows of the live case-events consumer."""
        consumer = consumer_name(CASE_EVENTS)
        return [
            (consumer, uuid.UUID(int=case_id), p.applied, {str(k): held_record(v) for k, v in p.held.items()})
            for case_id, p in self.positions.items()
        ]

    def tables(self) -> dict[str, list[tuple]]:
        """Each projection table's records (repository.table_columns order)."""
        cases = [c for c in self.states[CASE_EVENTS].values() if c is not None]
        values = repository.values
        return {
            "notifications": [repository.case_values(c) for c in cases],
            "reviews": [values(r) for c in cases for r in c.reviews],
            "forwards": [values(f) for s in self.states[ROUTING_EVENTS].values() for f in s.rows.values()],
            "deadlines": [values(d) for s in self.states[DEADLINE_EVENTS].values() for d in s.rows.values()],
        }

    def versions(self) -> dict[str, list[tuple]]:
        """The replaced versions of the rows, (row, recorded_to) by table."""
        versions: dict[str, list[tuple]] = {table: [] for table in repository.PROJECTIONS}
        for case in self.states[CASE_EVENTS].values():
            if case is not None:
                for table, row, recorded_to in case.replaced:
                    versions[table].append((row, recorded_to))
        for topic, table in ((ROUTING_EVENTS, "forwards"), (DEADLINE_EVENTS, "deadlines")):
            for state in self.states[topic].values():
                versions[table] += state.replaced
        return versions


class RebuildBlocked(Exception):
    """The rebuild waited longer than SIR_REBUILD_LOCK_TIMEOUT_SECONDS for a lock and gave
    up, having changed nothing (the message says what it waited for)."""


@dataclass
class RebuildResult:
    events: int  # events applied (each once)
    records: int  # records read, duplicates and dead letters included
    seconds: float
    read_seconds: float
    skipped: int
    timings: dict[str, float] = field(default_factory=dict)  # seconds by step


async def read_topics(consumer: AIOKafkaConsumer, projection: Projection, idle_polls: int, poll_ms: int,
                      max_records: int = 20_000) -> int:
    """Feed the projection from where the consumer is until `idle_polls` fetches in a row
    bring nothing; returns the number of records read."""
    read = idle = 0
    while idle < idle_polls:
        batches = await consumer.getmany(timeout_ms=poll_ms, max_records=max_records)
        if not batches:
            idle += 1
            continue
        idle = 0
        for records in batches.values():
            for record in records:
                projection.add(record)
            read += len(records)
    return read


def new_reader(settings: Settings) -> AIOKafkaConsumer:
    return AIOKafkaConsumer(
        bootstrap_servers=settings.kafka_bootstrap,
        group_id=None,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        fetch_max_wait_ms=settings.fetch_max_wait_ms,
        max_partition_fetch_bytes=8 * 1024 * 1024,
        fetch_max_bytes=64 * 1024 * 1024,
    )


async def assign_from_start(consumer: AIOKafkaConsumer, topics=TOPICS) -> None:
    await consumer.topics()  # loads the cluster's metadata
    partitions = [
        TopicPartition(topic, p) for topic in topics for p in sorted(consumer.partitions_for_topic(topic) or ())
    ]
    consumer.assign(partitions)
    await consumer.seek_to_beginning(*partitions)


async def rebuild(pool: asyncpg.Pool, settings: Settings, idle_polls: int = 3, poll_ms: int = 300) -> RebuildResult:
    """Drop reporting's projections and rebuild them from the topics (module docstring)."""
    started = time.perf_counter()
    projection = Projection()
    consumer = new_reader(settings)
    # Millions of small long-lived objects and no cycles among them: the cyclic
    # collector would rescan them again and again (it doubles the time at a million).
    collecting = gc.isenabled()
    gc.disable()
    await consumer.start()
    try:
        await assign_from_start(consumer)
        records = await read_topics(consumer, projection, idle_polls, poll_ms)
        read_seconds = time.perf_counter() - started
        schema = repository.SCHEMA
        timings = {"read_and_fold": read_seconds}
        waiting_for = "the reports (or anything else reading reporting's tables) under way to end"
        try:
            async with pool.acquire() as conn, conn.transaction():
                # No lock waited for longer (a report, a live consumer's batch): the
                # rebuild then ends with RebuildBlocked, nothing changed.
                # (At least 1 ms: a lock_timeout of 0 would wait for ever.)
                await conn.execute(f"SET LOCAL lock_timeout = {max(1, round(settings.rebuild_lock_timeout_seconds * 1000))}")
                # First the reports (repository.REBUILD_GATE): the live consumers flow
                # on while the rebuild waits for them; the reports asked for from now on
                # wait for the commit and read the rebuilt projections.
                with _timed(timings, "wait_for_reports"):
                    await repository.shut_out_reports(conn)
                    # And a report's summarising under way (it skips while this is held,
                    # reading those months from rows): none starts during the rebuild.
                    await repository.lock_summaries(conn)
                waiting_for = "the live consumers' batches, or another reader of reporting's tables"
                # The live consumers write processed_events first in each transaction: once
                # this lock is held none is half-way, and the next waits for the swap.
                await conn.execute(f"LOCK TABLE {schema}.processed_events IN EXCLUSIVE MODE")
                # Nothing is lost if the server crashes before the commit is flushed: the
                # rebuild is then undone as a whole (the old projections stay) and can run again.
                await conn.execute("SET LOCAL synchronous_commit = off")
                with _timed(timings, "catch_up"):
                    records += await read_topics(consumer, projection, idle_polls, poll_ms)
                await write_projection(conn, projection, timings)
                with _timed(timings, "commit"):
                    pass
        except asyncpg.LockNotAvailableError:
            raise RebuildBlocked(
                f"sir report rebuild waited {settings.rebuild_lock_timeout_seconds:g} s for {waiting_for}"
                " and gave up: nothing was changed. Run it again (SIR_REBUILD_LOCK_TIMEOUT_SECONDS"
                " sets how long it waits)."
            ) from None
        log.info("rebuild: %s", ", ".join(f"{k} {v:.2f}s" for k, v in timings.items()))
    finally:
        await consumer.stop()
        if collecting:
            gc.enable()
    return RebuildResult(
        len(projection.processed), records, time.perf_counter() - started, read_seconds, projection.skipped, timings
    )


async def write_projection(conn: asyncpg.Connection, projection: Projection, timings: dict[str, float]) -> None:
    """Inside the caller's transaction: replace reporting's projection tables, the
    consumers' processed events and case positions by the rebuilt ones."""
    schema = repository.SCHEMA
    with _timed(timings, "write_projections"):
        await repository.replace_all(conn, projection.tables(), versions=projection.versions())
    with _timed(timings, "write_processed_events"):
        consumers = sorted(consumer_name(t) for t in TOPICS)
        # Only these consumers' rows (the usual case): empty the table and fill it bare,
        # its key made again once full; else delete theirs and add the new ones.
        bounds = [None, *consumers, None]
        others = await conn.fetchval("SELECT " + " OR ".join(
            f"EXISTS (SELECT 1 FROM {schema}.processed_events WHERE "
            + " AND ".join(([f"consumer > ${i}"] if low else []) + ([f"consumer < ${i + 1}"] if high else [])) + ")"
            for i, (low, high) in enumerate(itertools.pairwise(bounds))
        ), *consumers)
        records = list(projection.processed.values())
        await _replace_rows(conn, "processed_events", PROCESSED, records, others)
    with _timed(timings, "write_positions"):
        # Positions: most cases hold nothing (the column's default, '{}'), and those go by
        # COPY; the few holding early events by INSERT (the pool's jsonb codec is text,
        # and COPY is binary).
        positions = projection.position_rows()
        bare = [row[:3] for row in positions if not row[3]]
        holding = [row for row in positions if row[3]]
        others = await conn.fetchval(
            f"SELECT EXISTS (SELECT 1 FROM {schema}.case_positions WHERE consumer < $1)"
            f" OR EXISTS (SELECT 1 FROM {schema}.case_positions WHERE consumer > $1)", consumer_name(CASE_EVENTS),
        )
        await _replace_rows(conn, "case_positions", ("consumer", "case_id", "applied"), bare, others,
                            consumers=[consumer_name(CASE_EVENTS)])
        if holding:
            await conn.execute(
                f"INSERT INTO {schema}.case_positions (consumer, case_id, applied, held)"
                " SELECT * FROM unnest($1::text[], $2::uuid[], $3::integer[], $4::jsonb[])",
                *[list(column) for column in zip(*holding, strict=True)],
            )


async def _replace_rows(conn: asyncpg.Connection, table: str, columns: tuple[str, ...], records: list[tuple],
                        others: bool, consumers: list[str] | None = None) -> None:
    """Replace the reporting consumers' rows of `table` by `records` (COPY). When the table
    holds no other consumer's rows (the usual case) it is emptied and filled bare, its key
    made again once full; else their rows are deleted and the new ones added."""
    schema = repository.SCHEMA
    consumers = consumers if consumers is not None else sorted(consumer_name(t) for t in TOPICS)
    if others:
        await conn.execute(f"DELETE FROM {schema}.{table} WHERE consumer = ANY($1::text[])", consumers)
        await conn.copy_records_to_table(table, records=records, columns=columns, schema_name=schema)
        return
    await conn.execute(f"TRUNCATE {schema}.{table}")
    again = await repository.drop_indexes(conn, schema, [table])
    await conn.copy_records_to_table(table, records=records, columns=columns, schema_name=schema)
    for statement in again:
        await conn.execute(statement)


@contextlib.contextmanager
def _timed(timings: dict[str, float], name: str):
    started = time.perf_counter()
    try:
        yield
    finally:
        timings[name] = time.perf_counter() - started


# --- the CLI's side of `sir report` ---------------------------------------------------------


def write_report(report: dict, fmt: str, output: Path | None) -> None:
    body, _ = render(report, fmt)  # type: ignore[arg-type]
    if output is None:
        import sys

        sys.stdout.buffer.write(body)
        sys.stdout.flush()
    else:
        output.write_bytes(body)
        print(f"wrote {output}")


async def national(pool: asyncpg.Pool, period_from, period_to, fmt: str, output: Path | None,
                   as_of=None, basis: repository.Basis = "received") -> int:
    from services.reporting.queries import compute_national

    if period_to < period_from:
        print("sir report national: --to is before --from")
        return 2
    write_report(await compute_national(pool, period_from, period_to, as_of=as_of, basis=basis), fmt, output)
    return 0


async def quarterly(pool: asyncpg.Pool, year: int, quarter: str, fmt: str, output: Path | None,
                    as_of=None, basis: repository.Basis = "received") -> int:
    from services.reporting.queries import compute_quarterly

    number = quarter.upper().removeprefix("Q")
    if number not in ("1", "2", "3", "4"):
        print(f"sir report quarterly: quarter {quarter!r} is not Q1, Q2, Q3 or Q4")
        return 2
    write_report(await compute_quarterly(pool, year, int(number), as_of=as_of, basis=basis), fmt, output)
    return 0


async def run(args, settings: Settings) -> int:
    """`sir report national|quarterly|rebuild` (services/cli.py parses the arguments)."""
    from services.reporting.app import SERVICE
    from shared.db import COMMON, create_pool, migrate

    if args.report == "schema":
        SCHEMA_FILE.write_text(json.dumps(report_schema(), indent=2) + "\n")
        print(f"wrote {SCHEMA_FILE}")
        return 0
    pool = await create_pool(settings.database_url, max_size=4)  # a quarterly report reads on 3 connections
    try:
        await migrate(pool, SERVICE.name, COMMON, SERVICE.migrations)
        if args.report == "national":
            return await national(pool, args.period_from, args.period_to, args.format, args.output,
                                  args.as_of, args.basis)
        if args.report == "quarterly":
            return await quarterly(pool, args.year, args.quarter, args.format, args.output, args.as_of, args.basis)
        try:
            result = await rebuild(pool, settings, idle_polls=args.idle_polls)
        except RebuildBlocked as blocked:
            print(blocked)
            return 1
        print(
            f"rebuilt reporting's projections from {result.events} events ({result.records} records read,"
            f" {result.skipped} not applied) in {result.seconds:.1f}s"
        )
        return 0
    finally:
        await pool.close()
