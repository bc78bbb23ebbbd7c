"""The record of emitted events, and the relay that publishes them.

Every event a service emits is appended to `<schema>.emitted_events` (kept for good,
never updated or deleted) in the same transaction as the state that produced it, and
its position is queued in `<schema>.outbox`. The relay publishes queued events and
deletes their queue rows once the broker acknowledged them; `sir replay` and the
automatic restore of a blank broker (shared/record.py) read the record itself.

Why a queue of positions rather than a publication cursor over the record: positions
come from a sequence, and a sequence's order is not commit order, so "publish what is
above the last position published" could skip a row that commits after a later one.
A queue row is found whenever it commits (the PgQ technique, a cursor over transaction
ids, would do too, but any long transaction in the cluster would hold the relay back).

Order: one case's events are written under a lock on the case, so their positions
follow their commit order. The relay publishes queued rows in position order, one batch
at a time, holding an advisory lock so that two relays never publish interleaved
batches; the rows are also claimed `FOR UPDATE SKIP LOCKED`, so a relay never waits on a
writer's lock. A failure rolls the claim back and the batch goes again (at least once:
consumers dedupe). A row the broker refuses for good (too large, invalid topic, corrupt)
is parked with its error instead (`outbox_parked`), so it cannot block the rows after it.
"""

from __future__ import annotations

import asyncio
import functools
import json
import logging
import math
import time
import uuid
from collections import Counter
from collections.abc import Callable, Sequence
from typing import Any

import asyncpg
from aiokafka import AIOKafkaProducer
from aiokafka import errors as kafka_errors
from aiokafka.structs import RecordMetadata

from shared import record
from shared.events import Envelope
from shared.messaging import all_topics, cloudevent_headers, encode_headers, ensure_topics, new_producer, topic_of
from shared.metrics import OUTBOX_PARKED, OUTBOX_PUBLISHED, OUTBOX_PUBLISHED_OFFSET
from shared.settings import get_settings

log = logging.getLogger(__name__)

# What a broker (or the producer's own check) answers for a record it will never take:
# retrying it would block every row behind it, so it is parked for an operator instead.
REFUSED_FOR_GOOD = (
    kafka_errors.MessageSizeTooLargeError,
    kafka_errors.RecordTooLargeError,
    kafka_errors.RecordListTooLargeError,
    kafka_errors.InvalidTopicError,
    kafka_errors.CorruptRecordException,
    kafka_errors.InvalidMessageError,
    kafka_errors.UnsupportedForMessageFormatError,
    kafka_errors.PolicyViolationError,
)


# Rows a relay claims and publishes per transaction, and the bytes of a partition's batch
# in one produce request (aiokafka's default, 16 KiB, is about 25 events: a burst's
# thousands then went out in many sequential requests, each waiting for its
# acknowledgement; issue 15). A larger event still goes, in a batch of its own.
RELAY_BATCH = 2000
# A relay looks for the record's marker (shared/record.py) before a batch only if it has
# not seen it for this long: one metadata request per batch instead of two under load.
MARKER_FRESH_SECONDS = 0.5
# A relay given a linger (`OutboxRelay(linger_seconds=...)`, intake's) and under load (its
# last batch took at least this many rows) starts its batches at least that far apart, so
# that one batch claims the rows of the whole time: a relay's cost is mostly per batch
# (its statements, and a claim's scan of the queue), and a batch of 25 rows cost about
# 70 us of the relay's CPU and 60-180 us of the database's a row, one of 100 about 30 and
# 20-50 (issue 15). A relay woken after a quiet spell (a last batch of fewer rows)
# publishes at once, so a lone event waits for nothing.
LINGER_FROM_ROWS = 20
PRODUCER_BATCH_BYTES = 256 * 1024
# A row larger than this goes through the producer's own `send` (and size check).
_BATCHED_BYTES = 64 * 1024


class BrokerReplaced(RuntimeError):
    """The broker lost its topics (and the record marker) while a batch was published."""


class EventTooLarge(ValueError):
    """The serialised event exceeds `Settings.max_message_bytes`: it is not stored (a
    broker would refuse it). Intake answers 413."""

    def __init__(self, event_type: str, size: int, limit: int):
        super().__init__(f"{event_type} is {size} bytes serialised; the limit is {limit} bytes")
        self.event_type, self.size, self.limit = event_type, size, limit


async def enqueue(
    conn: asyncpg.Connection, schema: str, event: Envelope, service: str, *, imported: bool = False,
    topic: str | None = None, max_bytes: int | None = None,
) -> None:
    """Record `event` and queue it for publication inside the caller's transaction;
    `topic` overrides the event type's own topic (routing forwards notifications to
    outbound topics). Raises EventTooLarge (nothing written) past `max_bytes`
    (default `Settings.max_message_bytes`)."""
    await enqueue_many(conn, schema, [event], service, imported=imported, topic=topic, max_bytes=max_bytes)


async def enqueue_many(
    conn: asyncpg.Connection, schema: str, events: list[Envelope], service: str, *, imported: bool = False,
    topic: str | None = None, max_bytes: int | None = None,
) -> None:
    if not events:
        return
    await enqueue_serialised(
        conn, schema,
        [event.event_id for event in events],
        [event.event_type for event in events],
        [topic or topic_of(event.event_type) for event in events],
        [str(event.case_id).encode() for event in events],
        [event.model_dump_json().encode() for event in events],
        [json.dumps(cloudevent_headers(event, service, imported)) for event in events],
        max_bytes=max_bytes,
    )


async def enqueue_serialised(
    conn: asyncpg.Connection, schema: str, event_ids: Sequence[uuid.UUID | str], event_types: Sequence[str],
    topics: Sequence[str], keys: Sequence[bytes], values: Sequence[bytes], headers: Sequence[str], *,
    max_bytes: int | None = None,
) -> None:
    """`enqueue_many` for events already serialised (parallel lists; `headers` as JSON
    objects), for a writer that builds many events of its own at once (the deadline
    scheduler). Raises EventTooLarge (nothing written) past `max_bytes`."""
    if not values:
        return
    limit = get_settings().max_message_bytes if max_bytes is None else max_bytes
    for event_type, value in zip(event_types, values, strict=True):
        if len(value) > limit:
            raise EventTooLarge(event_type, len(value), limit)
    # One statement for the whole list: a scheduler round enqueues a thousand events.
    await conn.execute(
        f"WITH stored AS (INSERT INTO {schema}.emitted_events (event_id, event_type, topic, key, value, headers)"
        " SELECT i, y, t, k, v, h::jsonb"
        " FROM unnest($1::uuid[], $2::text[], $3::text[], $4::bytea[], $5::bytea[], $6::text[])"
        " WITH ORDINALITY AS e(i, y, t, k, v, h, n) ORDER BY n"  # positions in the list's order
        " RETURNING position)"
        f" INSERT INTO {schema}.outbox (position) SELECT position FROM stored",
        event_ids, event_types, topics, keys, values, headers,
    )


async def backlog(pool: asyncpg.Pool, schema: str) -> tuple[int, float]:
    """Rows waiting, and the age in seconds of the oldest (0 when empty)."""
    row = await pool.fetchrow(
        f"SELECT count(*) AS n, coalesce(extract(epoch FROM now() - min(created_at)), 0) AS age"
        f" FROM {schema}.outbox"
    )
    return row["n"], float(row["age"])


def _count_published(
    schema: str, rows: list[asyncpg.Record], acknowledged: list[RecordMetadata]
) -> set[tuple[str, str]]:
    """Count the rows published; returns the (topic, partition) offset series it set."""
    published = Counter((row["topic"], row["headers"].get("ce_type", "unknown")) for row in rows)
    for (topic, event_type), count in published.items():
        OUTBOX_PUBLISHED.labels(schema, topic, event_type).inc(count)
    highest: dict[tuple[str, int], int] = {}
    for ack in acknowledged:
        highest[ack.topic, ack.partition] = max(ack.offset, highest.get((ack.topic, ack.partition), -1))
    for (topic, partition), offset in highest.items():
        OUTBOX_PUBLISHED_OFFSET.labels(schema, topic, str(partition)).set(offset)
    return {(topic, str(partition)) for topic, partition in highest}


# The relays running in this process, by schema: a writer that commits outbox rows wakes
# its own process's relay at once (`wake_relays`) instead of waiting for the NOTIFY's
# round trip through the database (issue 15: the deadline scheduler's steady lag). The
# NOTIFY still goes, for the relays of other processes.
_RUNNING: dict[str, set[OutboxRelay]] = {}


def wake_relays(schema: str) -> None:
    """Wake every relay of `schema` running in this process (none: nothing happens).
    Call it after the transaction that queued the rows has committed."""
    for relay in _RUNNING.get(schema, ()):
        relay.wake()


def in_process_waker(schema: str) -> Callable[[], None] | None:
    """What wakes this process's relays of `schema`, if one is running here; None: only a
    NOTIFY reaches a relay (intake's writes skip the NOTIFY when they have a waker)."""
    if any(relay.running for relay in _RUNNING.get(schema, ())):
        return functools.partial(wake_relays, schema)
    return None


class OutboxRelay:
    def __init__(
        self,
        pool: asyncpg.Pool,
        schema: str,
        bootstrap: str,
        batch_size: int = RELAY_BATCH,
        poll_seconds: float = 1.0,
        max_backoff_seconds: float = 5.0,
        partitions: int = 6,
        linger_seconds: float = 0.0,
    ):
        self.pool = pool
        self.schema = schema
        self.bootstrap = bootstrap
        self.partitions = partitions
        self.batch_size = batch_size
        self.poll_seconds = poll_seconds
        self.max_backoff_seconds = max_backoff_seconds
        self.linger_seconds = linger_seconds
        self._batch_started = -math.inf  # monotonic time the last batch of `run` began
        self._last_batch = 0  # rows it took
        self._wake = asyncio.Event()
        self._producer: AIOKafkaProducer | None = None
        self._task: asyncio.Task | None = None
        self._offset_series: set[tuple[str, str]] = set()  # published-offset series this relay set
        self._marker_seen_at = -math.inf  # monotonic time the broker last showed the record's marker

    async def start(self) -> None:
        self._task = asyncio.create_task(self.run(), name=f"outbox-relay-{self.schema}")
        _RUNNING.setdefault(self.schema, set()).add(self)

    async def stop(self) -> None:
        _RUNNING.get(self.schema, set()).discard(self)
        if self._task:
            # Cancelled until it has ended: a cancel arriving just as a wait inside a library
            # ends can be lost, and a relay cancelled once would then run on.
            while not self._task.done():
                self._task.cancel()
                await asyncio.wait({self._task}, timeout=1)
            if not self._task.cancelled():
                self._task.exception()  # retrieved, so asyncio does not log it as lost
        await self._close_producer()
        # A stopped relay reports no offsets: a series left behind would be compared with
        # the consumers' offsets (the lag) long after it meant anything.
        for topic, partition in self._offset_series:
            try:
                OUTBOX_PUBLISHED_OFFSET.remove(self.schema, topic, partition)
            except KeyError:
                pass
        self._offset_series.clear()

    async def run(self) -> None:
        channel = f"{self.schema}_outbox"
        listener = await self.pool.acquire()
        backoff = 0.1
        # The listener is given back however the relay ends, a cancel while it was being set
        # up included: otherwise the pool's close waits for it for ever.
        try:
            await listener.add_listener(channel, self._on_notify)
            while True:
                try:
                    self._batch_started = time.monotonic()
                    published = self._last_batch = await self.publish_batch()
                    backoff = 0.1
                except (asyncio.CancelledError, KeyboardInterrupt):
                    raise
                except Exception as error:  # broker or database away: wait, try again
                    log.warning("outbox relay %s: %s; retrying in %.1fs", self.schema, error, backoff)
                    await self._close_producer()
                    await asyncio.sleep(backoff)
                    backoff = min(backoff * 2, self.max_backoff_seconds)
                    continue
                if published < self.batch_size:
                    await self._wait_for_rows()
        finally:
            try:
                await listener.remove_listener(channel, self._on_notify)
            finally:
                await self.pool.release(listener)

    async def publish_batch(self) -> int:
        """Publish up to one batch; returns how many rows left the queue (published or parked)."""
        # Before any claim: a producer's (re)connection may restore a blank broker, which
        # waits for every relay's batch to finish (see shared/record.py).
        producer = await self._ensure_producer()
        # Batches that follow one another closely skip this first look: the look after the
        # previous batch is as fresh as this one would be (MARKER_FRESH_SECONDS), and a
        # broker replaced since is caught by the look after this batch, which keeps the rows.
        if time.monotonic() - self._marker_seen_at > MARKER_FRESH_SECONDS:
            if not await record.marker_seen_by(producer):  # the broker was replaced under us
                await record.ensure_restored(self.pool, self.bootstrap, self.partitions)
            self._marker_seen_at = time.monotonic()
        async with self.pool.acquire() as conn, conn.transaction():
            # Shared with every other relay, exclusive for a restore: nothing new goes out
            # while a restorer re-publishes the record. The second lock keeps two relays of
            # one schema from interleaving their batches.
            if not await conn.fetchval(
                "SELECT pg_try_advisory_xact_lock_shared($1) AND pg_try_advisory_xact_lock(hashtext($2))",
                record.RESTORE_LOCK, f"{self.schema}.outbox",
            ):
                return 0  # a restore is running, or another relay is publishing these rows
            # The queue's first rows, then their events by position, by index whatever the
            # plan (one cached while the tables were empty too). A join of the two was planned
            # as a merge join reading the record from its first event: every batch read every
            # event ever emitted (issue 15).
            rows = await conn.fetch(
                f"SELECT position, topic, key, value, headers FROM {self.schema}.emitted_events"
                f" WHERE position = ANY(ARRAY(SELECT position FROM {self.schema}.outbox"
                "                            ORDER BY position LIMIT $1 FOR UPDATE SKIP LOCKED))"
                " ORDER BY position",
                self.batch_size,
            )
            if not rows:
                return 0
            # Sends are queued in position order and each partition's batches go out in
            # turn, so one case's events keep their order on its partition.
            # Any other error (broker away) propagates: the claim rolls back, all go again.
            outcomes, acknowledged = await _send_in_batches(producer, rows)
            if not await record.marker_seen_by(producer):
                # Replaced while this batch went out: keep the rows queued, so they go
                # again after the restore, in their place behind the events they follow.
                self._marker_seen_at = -math.inf
                raise BrokerReplaced(f"the broker at {self.bootstrap} lost its topics while publishing")
            self._marker_seen_at = time.monotonic()
            refused = [(row, o) for row, o in zip(rows, outcomes, strict=True) if o is not None]
            await conn.execute(
                f"DELETE FROM {self.schema}.outbox WHERE position = ANY($1::bigint[])", [r["position"] for r in rows]
            )
            if refused:
                await _park(conn, self.schema, refused)
        published = [row for row, o in zip(rows, outcomes, strict=True) if o is None]
        self._offset_series |= _count_published(self.schema, published, acknowledged)
        for row, refusal in refused:
            OUTBOX_PARKED.labels(self.schema, row["topic"]).inc()
            log.error(
                "outbox relay %s: the broker refused event at position %s (%s, %d bytes) for good: %r;"
                " parked for review (`sir outbox parked`)",
                self.schema, row["position"], row["headers"].get("ce_type", "unknown"), len(row["value"]), refusal,
            )
        return len(rows)

    async def drain(self, timeout: float = 30.0) -> None:
        """Publish until the outbox is empty (used by commands and tests)."""
        async with asyncio.timeout(timeout):
            while (await backlog(self.pool, self.schema))[0]:
                if not await self.publish_batch():
                    await asyncio.sleep(0.05)

    @property
    def running(self) -> bool:
        return self._task is not None and not self._task.done()

    def wake(self) -> None:
        """Look for rows now: a writer in this process committed some (no NOTIFY needed)."""
        self._wake.set()

    def _on_notify(self, *_: object) -> None:
        self._wake.set()

    async def _wait_for_rows(self) -> None:
        # asyncio.timeout, not wait_for: Python 3.11's wait_for can lose a cancel that arrives
        # as the wake does, and the relay then never stops.
        try:
            async with asyncio.timeout(self.poll_seconds):
                await self._wake.wait()
        except TimeoutError:
            pass
        if self.linger_seconds and self._last_batch >= LINGER_FROM_ROWS:  # under load: gather (LINGER_FROM_ROWS)
            if (rest := self._batch_started + self.linger_seconds - time.monotonic()) > 0:
                await asyncio.sleep(rest)
        self._wake.clear()  # rows committed until now are claimed by the batch that follows

    async def _ensure_producer(self) -> AIOKafkaProducer:
        if self._producer is None:
            # A broker that lost its topics (Tansu keeps them in memory) would otherwise
            # auto-create them with its own partition count.
            await ensure_topics(self.bootstrap, all_topics(), self.partitions)
            producer = new_producer(self.bootstrap, max_batch_size=PRODUCER_BATCH_BYTES)
            try:
                await producer.start()
                # A blank broker gets the record back before this relay sends anything new.
                await record.ensure_restored(self.pool, self.bootstrap, self.partitions)
            except BaseException:
                await producer.stop()
                raise
            self._producer = producer
        return self._producer

    async def _close_producer(self) -> None:
        self._marker_seen_at = -math.inf
        if self._producer is not None:
            producer, self._producer = self._producer, None
            try:
                await producer.stop()
            except Exception as error:
                log.debug("closing producer: %s", error)


async def _send_in_batches(
    producer: AIOKafkaProducer, rows: list[asyncpg.Record]
) -> tuple[list[BaseException | None], list[RecordMetadata]]:
    """Queue the rows for the broker in their order and wait for its answers. Returns, per
    row, the broker's (or the producer's) refusal for good, or None; and the
    acknowledgements (one per record batch, with the offset of its last record).

    The rows of a partition go in record batches built here (`create_batch` /
    `send_batch`) rather than a `send` each: the producer's per-message path was most of a
    relay's time per event (issue 15). A partition is chosen as `send` chooses it (the
    producer's partitioner over the topic's partitions); the producer's accumulator keeps
    each partition's batches in the order they were queued, as it does for `send`, and a
    batch the broker refuses is refused for every record in it, as it was when the
    producer batched the sends itself. A large row (or one without a key) goes through
    `send`, whose own size check refuses it alone."""
    refusals: list[BaseException | None] = [None] * len(rows)
    pending: list[tuple[asyncio.Future, list[int]]] = []  # a batch's future, its rows' indexes
    building: dict[tuple[str, int], tuple[Any, list[int]]] = {}
    partitions: dict[str, list[int]] = {}
    partitioner = producer._partitioner
    # A key's partition, chosen once a call: a case's events come together (an import's
    # six a case), and the partitioner's murmur2 in Python was ~3 us a row (issue 15).
    chosen: dict[tuple[str, bytes], tuple[str, int]] = {}

    async def flush(tp: tuple[str, int]) -> None:
        batch, members = building.pop(tp)
        pending.append((await producer.send_batch(batch, tp[0], partition=tp[1]), members))

    for i, row in enumerate(rows):
        topic, key, value = row["topic"], row["key"], row["value"]
        headers = encode_headers(row["headers"])
        if topic not in partitions:
            partitions[topic] = list(await producer.partitions_for(topic))
        if key is None:
            tp = None
        elif (tp := chosen.get((topic, key))) is None:
            tp = chosen[topic, key] = (topic, partitioner(key, partitions[topic], partitions[topic]))
        if tp is not None and len(value) + len(key) <= _BATCHED_BYTES:
            entry = building.get(tp)
            if entry is None:
                entry = building[tp] = (producer.create_batch(), [])
            if entry[0].append(key=key, value=value, timestamp=None, headers=headers) is None:  # full
                await flush(tp)
                entry = building[tp] = (producer.create_batch(), [])
                entry[0].append(key=key, value=value, timestamp=None, headers=headers)  # an empty batch takes it
            entry[1].append(i)
            continue
        if tp in building:
            await flush(tp)  # what came before it goes before it
        try:
            pending.append((await producer.send(topic, value, key=key, headers=headers), [i]))
        except REFUSED_FOR_GOOD as error:  # the producer's own size check
            refusals[i] = error
    for tp in list(building):
        await flush(tp)
    acknowledged = []
    # Awaited in turn (each is a future the producer resolves), not a task each.
    for future, members in pending:
        try:
            ack = await future
        except REFUSED_FOR_GOOD as error:
            for i in members:
                refusals[i] = error
            continue
        acknowledged.append(ack._replace(offset=ack.offset + len(members) - 1))
    return refusals, acknowledged


async def _park(conn: asyncpg.Connection, schema: str, refused: list[tuple[asyncpg.Record, BaseException]]) -> None:
    await conn.execute(
        f"INSERT INTO {schema}.outbox_parked (position, error)"
        " SELECT * FROM unnest($1::bigint[], $2::text[])",
        [row["position"] for row, _ in refused],
        [f"{type(error).__name__}: {error}"[:2000] for _, error in refused],
    )


# --- parked rows: review, retry, discard (`sir outbox ...`) ---------------------------


async def parked_waiting(pool: asyncpg.Pool, schema: str) -> int:
    """Parked rows awaiting an operator's decision."""
    return await pool.fetchval(f"SELECT count(*) FROM {schema}.outbox_parked WHERE decision IS NULL")


async def list_parked(pool: asyncpg.Pool, schemas: tuple[str, ...]) -> list[dict]:
    """Parked rows awaiting a decision, oldest first, across `schemas` (those that exist)."""
    found = []
    for schema in schemas:
        if not await pool.fetchval("SELECT to_regclass($1) IS NOT NULL", f"{schema}.outbox_parked"):
            continue
        rows = await pool.fetch(
            f"SELECT p.position, p.error, p.parked_at, e.event_id, e.event_type, e.topic, length(e.value) AS size"
            f" FROM {schema}.outbox_parked p JOIN {schema}.emitted_events e USING (position)"
            " WHERE p.decision IS NULL ORDER BY p.id"
        )
        found += [{"id": f"{schema}:{r['position']}", "schema": schema, **dict(r)} for r in rows]
    return sorted(found, key=lambda r: r["parked_at"])


async def decide_parked(pool: asyncpg.Pool, schema: str, position: int, decision: str) -> bool:
    """Record the operator's decision on a parked row: `retried` queues the event again
    (published in the queue's order from now on), `discarded` leaves it unpublished. The
    event stays in the record either way. False when no such row awaits a decision."""
    if decision not in ("retried", "discarded"):
        raise ValueError(f"unknown decision {decision!r}")
    async with pool.acquire() as conn, conn.transaction():
        decided = await conn.fetchval(
            f"UPDATE {schema}.outbox_parked SET decision = $2, decided_at = now()"
            " WHERE position = $1 AND decision IS NULL RETURNING position",
            position, decision,
        )
        if decided is not None and decision == "retried":
            await conn.execute(f"INSERT INTO {schema}.outbox (position) VALUES ($1)", position)
    return decided is not None
