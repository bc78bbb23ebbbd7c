"""The idempotent consumer: each event's effects applied exactly once.

Each event is applied together with a row in the service's `processed_events` table, so
a redelivered event is recognised and skipped. A batch of messages is written in one
transaction and its offsets are committed only after that transaction. If a handler
fails, the batch is applied again event by event, each in a savepoint, and the failing
one is retried in place with backoff; after `max_attempts` the message goes to
`<topic>.dlq` with the error, and so does a message that is not a valid event. If the
database itself fails, the batch is rewound and comes again.

Case events are applied in each case's `sequence` order whatever the delivery order
(shared/ordering.py): one that comes before its turn is marked processed and held in
`case_positions` until its predecessors have been applied. A case event that goes to
the dead letters is not processed, and its case's later events wait for it.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import time
import uuid
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

import asyncpg
from aiokafka import AIOKafkaConsumer, ConsumerRebalanceListener, ConsumerRecord, TopicPartition
from faststream import AckPolicy
from faststream.kafka import KafkaBroker, KafkaMessage
from pydantic import TypeAdapter, ValidationError

from shared.events import ANY_EVENT, CASE_EVENT_MODELS, Envelope
from shared.logs import event_context
from shared.messaging import IMPORTED_HEADER, dead_letter_topic
from shared.metrics import (
    CONSUMER_APPLIED_OFFSET,
    CONSUMER_DELAY_SECONDS,
    DEAD_LETTERS,
    EVENTS_CONSUMED,
    EVENTS_DUPLICATE,
    HANDLER_SECONDS,
)
from shared.ordering import Position, arrive, stop_before
from shared.process import Process
from shared.settings import Settings

log = logging.getLogger(__name__)



@dataclass(frozen=True)
class Delivery:
    """Where an event came from, for handlers that care: `imported` is true for history
    brought in by `sir import` (CloudEvents extension header `ce_sirimported`)."""

    topic: str
    partition: int
    offset: int
    imported: bool = False

    @classmethod
    def of(cls, record: ConsumerRecord) -> Delivery:
        headers = dict(record.headers or ())
        return cls(record.topic, record.partition, record.offset, headers.get(IMPORTED_HEADER) == b"true")


# Every service's consumer is a `Process` (shared/process.py: a pure decider between a
# loader and a saver). A plain `Handler`, applied event by event, is taken too: the
# consumer's own tests use one to fail, count and record on cue.
Handler = Callable[[asyncpg.Connection, Any, Delivery], Awaitable[None]]
DeadLetter = tuple[ConsumerRecord, str]

# Errors that say the database, not the event, is at fault: retry the whole batch.
_INFRASTRUCTURE_ERRORS = (asyncpg.InterfaceError, asyncpg.PostgresConnectionError, OSError)


class IdempotentApplier:
    """Applies batches of records to a handler, once per event and each case's events in
    their sequence order (shared/ordering.py); knows nothing of Kafka clients."""

    def __init__(
        self,
        pool: asyncpg.Pool,
        schema: str,
        consumer: str,
        handler: Handler | Process,
        adapter: TypeAdapter = ANY_EVENT,
        max_attempts: int = 5,
        retry_base_seconds: float = 0.05,
    ):
        self.pool = pool
        self.consumer = consumer
        self.handler = handler
        self.adapter = adapter
        self.max_attempts = max_attempts
        self.retry_base_seconds = retry_base_seconds
        self._mark_processed = (
            f"INSERT INTO {schema}.processed_events (consumer, event_id, topic, partition, \"offset\")"
            " VALUES ($1, $2, $3, $4, $5) ON CONFLICT DO NOTHING RETURNING true"
        )
        # The batch's one statement before the consumer runs: mark every event processed
        # and load (locked) the positions of every case in the batch. Rows of `marked`
        # carry an event_id, rows of `positions` a case_id.
        self._mark_and_load = (
            f"WITH marked AS (INSERT INTO {schema}.processed_events (consumer, event_id, topic, partition, \"offset\")"
            " SELECT $1, * FROM unnest($2::uuid[], $3::text[], $4::integer[], $5::bigint[])"
            " ON CONFLICT DO NOTHING RETURNING event_id),"
            f" positions AS (SELECT case_id, applied, held FROM {schema}.case_positions"
            " WHERE consumer = $1 AND case_id = ANY($6::uuid[]) FOR UPDATE)"
            " SELECT event_id, NULL::uuid AS case_id, NULL::integer AS applied, NULL::jsonb AS held FROM marked"
            " UNION ALL SELECT NULL, case_id, applied, held FROM positions"
        )
        self._unmark = f"DELETE FROM {schema}.processed_events WHERE consumer = $1 AND event_id = $2"
        self._load_positions = (
            f"SELECT case_id, applied, held FROM {schema}.case_positions"
            " WHERE consumer = $1 AND case_id = ANY($2::uuid[]) FOR UPDATE"
        )
        self._save_positions = (
            f"INSERT INTO {schema}.case_positions (consumer, case_id, applied, held)"
            " SELECT $1, * FROM unnest($2::uuid[], $3::integer[], $4::jsonb[])"
            " ON CONFLICT (consumer, case_id) DO UPDATE SET applied = EXCLUDED.applied, held = EXCLUDED.held"
        )

    async def apply_batch(self, records: Sequence[ConsumerRecord]) -> list[DeadLetter]:
        """Apply the records in one transaction; returns the ones for the dead-letter topic.

        First all at once: one statement marks the whole batch processed and loads the
        positions of its cases, one saves them, and the handler runs for each event whose
        turn has come, with no savepoints. Only if a handler fails is that transaction
        rolled back and the batch applied again one event at a time, each handler call in
        its own savepoint with retries, so a poison event fails alone."""
        dead: list[DeadLetter] = []
        events = []
        for record in records:
            try:
                events.append((record, self.adapter.validate_json(record.value)))
            except ValidationError as error:
                dead.append((record, f"not a valid event: {_summary(error)}"))
        async with self.pool.acquire() as conn:
            try:
                async with conn.transaction():
                    applied, duplicates = await self._apply_all(conn, events)
            except _INFRASTRUCTURE_ERRORS:
                raise
            except Exception as error:
                log.info("%s: a handler failed in the batch (%r); applying it event by event", self.consumer, error)
            else:
                self._count(applied, duplicates)
                return dead
            async with conn.transaction():
                for record, event in events:
                    with event_context(event_id=event.event_id, case_id=event.case_id):
                        dead += await self._apply_one(conn, record, event)
        return dead

    async def _apply_all(self, conn: asyncpg.Connection, events: list[Arrival]) -> tuple[list[Arrival], int]:
        """Mark every event processed and load its cases' positions in one statement,
        then apply the ones that are new (once each: a batch may hold the same event
        twice) as their turn comes. Returns
        those applied and the number of duplicates."""
        if not events:
            return [], 0
        rows = await conn.fetch(
            self._mark_and_load,
            self.consumer,
            [event.event_id for _, event in events],
            [record.topic for record, _ in events],
            [record.partition for record, _ in events],
            [record.offset for record, _ in events],
            list({event.case_id for _, event in events if event.event_type in CASE_EVENT_MODELS}),
        )
        new = {row["event_id"] for row in rows if row["event_id"] is not None}
        stored = {row["case_id"]: row for row in rows if row["case_id"] is not None}
        fresh = []
        for record, event in events:
            if event.event_id in new:
                new.discard(event.event_id)
                fresh.append((record, event))
        # Positions of the fresh events' cases only (a case whose events all came again is left as it is).
        positions: dict[uuid.UUID, Position] = {}
        for _, event in fresh:
            if event.event_type in CASE_EVENT_MODELS and event.case_id not in positions:
                row = stored.get(event.case_id)
                positions[event.case_id] = Position() if row is None else _position(row)
        ready = []
        for arrival in fresh:
            ready += self._arrive(positions, arrival)
        await self._save(conn, positions)
        with HANDLER_SECONDS.labels(self.consumer).time():
            await self._run(conn, ready)
        return ready, len(events) - len(fresh)

    async def _run(self, conn: asyncpg.Connection, arrivals: list[Arrival]) -> None:
        """The consumer on `arrivals`, in order, in the caller's transaction."""
        if isinstance(self.handler, Process):
            await self.handler.apply(conn, [(event, Delivery.of(record).imported) for record, event in arrivals])
            return
        for record, event in arrivals:
            with event_context(event_id=event.event_id, case_id=event.case_id):
                await self.handler(conn, event, Delivery.of(record))

    def _count(self, applied: list, duplicates: int) -> None:
        for record, event in applied:
            EVENTS_CONSUMED.labels(self.consumer, record.topic, event.event_type).inc()
        if duplicates:
            EVENTS_DUPLICATE.labels(self.consumer).inc(duplicates)

    async def _apply_one(self, conn: asyncpg.Connection, record: ConsumerRecord, event: Envelope) -> list[DeadLetter]:
        """One event, and the held events of its case it lets through, each handler call
        in a savepoint with retries. An event that fails every attempt is not processed:
        it goes to the dead letters, and its case's later events wait (held) until it is
        published again."""
        first_time = await conn.fetchval(
            self._mark_processed, self.consumer, event.event_id, record.topic, record.partition, record.offset,
        )
        if not first_time:
            EVENTS_DUPLICATE.labels(self.consumer).inc()
            return []
        positions = await self._positions(conn, [(record, event)])
        ready = self._arrive(positions, (record, event))
        for index, (ready_record, ready_event) in enumerate(ready):
            error = await self._apply_effects(conn, ready_record, ready_event)
            if error is None:
                continue
            await conn.execute(self._unmark, self.consumer, ready_event.event_id)
            if ready_event.case_id in positions:
                position = positions[ready_event.case_id]
                failed = position.applied - (len(ready) - 1 - index)
                positions[ready_event.case_id] = stop_before(position, failed, ready[index + 1:])
            await self._save(conn, positions)
            return [(ready_record, error)]
        await self._save(conn, positions)
        return []

    async def _apply_effects(self, conn: asyncpg.Connection, record: ConsumerRecord, event: Envelope) -> str | None:
        """The handler on one event, in a savepoint, retried with backoff; the error if
        every attempt failed."""
        last_error: Exception | None = None
        for attempt in range(1, self.max_attempts + 1):
            try:
                async with conn.transaction():
                    with HANDLER_SECONDS.labels(self.consumer).time():
                        await self._run(conn, [(record, event)])
                EVENTS_CONSUMED.labels(self.consumer, record.topic, event.event_type).inc()
                return None
            except _INFRASTRUCTURE_ERRORS:
                raise
            except Exception as error:  # the handler failed on this event
                last_error = error
                log.warning(
                    "%s: attempt %d/%d at event %s failed: %r",
                    self.consumer, attempt, self.max_attempts, event.event_id, error,
                )
                if attempt < self.max_attempts:
                    await asyncio.sleep(self.retry_base_seconds * 2 ** (attempt - 1))
        return f"failed {self.max_attempts} attempts: {type(last_error).__name__}: {last_error}"[:1000]

    # --- each case's events in sequence order (shared/ordering.py) ----------------------

    async def _positions(self, conn: asyncpg.Connection, arrivals: list[Arrival]) -> dict[uuid.UUID, Position]:
        """The stored positions of the arrivals' cases (one query), locked; a case with
        none stored starts at the beginning."""
        cases = list({event.case_id for _, event in arrivals if event.event_type in CASE_EVENT_MODELS})
        if not cases:
            return {}
        positions: dict[uuid.UUID, Position] = dict.fromkeys(cases, Position())
        for row in await conn.fetch(self._load_positions, self.consumer, cases):
            positions[row["case_id"]] = _position(row)
        return positions

    def _arrive(self, positions: dict[uuid.UUID, Position], arrival: Arrival) -> list[Arrival]:
        """What `arrival` makes ready (a non-case event: itself), its case's position moved on."""
        _record, event = arrival
        if event.event_type not in CASE_EVENT_MODELS:
            return [arrival]
        positions[event.case_id], ready = arrive(positions[event.case_id], event.sequence, arrival)
        return [item if isinstance(item, tuple) else self._held_arrival(item) for item in ready]

    async def _save(self, conn: asyncpg.Connection, positions: dict[uuid.UUID, Position]) -> None:
        if positions:
            await conn.execute(
                self._save_positions, self.consumer, list(positions),
                [p.applied for p in positions.values()],
                [{str(k): held_record(v) for k, v in p.held.items()} for p in positions.values()],
            )

    def _held_arrival(self, stored: dict) -> Arrival:
        record = ConsumerRecord(
            topic=stored["topic"], partition=stored["partition"], offset=stored["offset"],
            timestamp=stored["timestamp"], timestamp_type=0,
            key=None if stored["key"] is None else stored["key"].encode(), value=stored["value"].encode(),
            checksum=None, serialized_key_size=-1, serialized_value_size=len(stored["value"]),
            headers=tuple((name, value.encode()) for name, value in stored["headers"]),
        )
        return record, self.adapter.validate_json(record.value)


Arrival = tuple[ConsumerRecord, Envelope]


def held_record(item: Arrival | dict) -> dict:
    """An early record as `case_positions.held` keeps it (a stored one as it is)."""
    if isinstance(item, dict):
        return item
    record, _ = item
    return {
        "topic": record.topic, "partition": record.partition, "offset": record.offset, "timestamp": record.timestamp,
        "key": None if record.key is None else record.key.decode(errors="replace"),
        "value": record.value.decode(),
        "headers": [(name, value.decode(errors="replace")) for name, value in record.headers or ()],
    }


def _position(row: asyncpg.Record) -> Position:
    return Position(row["applied"], {int(k): v for k, v in row["held"].items()})


def consumer_name(group_id: str, topic: str) -> str:
    """The name a consumer's processed events and metrics go under: one per group and topic."""
    return f"{group_id}:{topic}"


def subscribe_idempotent(
    broker: KafkaBroker,
    settings: Settings,
    *,
    pool_of: Callable[[], asyncpg.Pool],
    schema: str,
    group_id: str,
    handlers: dict[str, Handler | Process],
    adapter: TypeAdapter = ANY_EVENT,
    max_records: int = 500,
) -> None:
    """Subscribe each topic's handler through an `IdempotentApplier`, all of them in one
    Kafka consumer: one group member per process, whatever the number of topics. (Several
    members of one group, each on its own topic, make every restart a rebalance of all of
    them, and Tansu can leave such a group rejoining for ever.)

    Subscribers are registered when the app is built (so the broker can describe them)
    and `pool_of` is called at the first message, once the service has started.
    """
    consumers = {topic: consumer_name(group_id, topic) for topic in handlers}

    @functools.cache
    def applier(topic: str) -> IdempotentApplier:
        return IdempotentApplier(pool_of(), schema, consumers[topic], handlers[topic], adapter, settings.max_attempts)

    for topic, consumer in consumers.items():
        DEAD_LETTERS.labels(consumer, topic)  # at 0 from the start, so increase() sees the first
    offsets = _AppliedOffsets(consumers)
    # MANUAL: offsets are committed by `ack` only after the transaction (the default,
    # ACK_FIRST, commits before the handler runs and can lose a message).
    subscriber = broker.subscriber(
        *handlers,
        group_id=group_id,
        batch=True,
        max_records=max_records,
        ack_policy=AckPolicy.MANUAL,
        auto_offset_reset="earliest",
        fetch_max_wait_ms=settings.fetch_max_wait_ms,
        batch_timeout_ms=settings.consumer_batch_timeout_ms,
        session_timeout_ms=settings.session_timeout_ms,
        heartbeat_interval_ms=settings.heartbeat_interval_ms,
        decoder=_undecoded,
        title=group_id,
        listener=offsets,
    )
    offsets.kafka_consumer = lambda: subscriber.consumer

    @subscriber
    async def on_batch(msg: KafkaMessage) -> None:
        records = msg.raw_message if isinstance(msg.raw_message, tuple) else (msg.raw_message,)
        by_topic: dict[str, list[ConsumerRecord]] = {}
        for record in records:
            by_topic.setdefault(record.topic, []).append(record)
        try:
            for topic, batch in by_topic.items():
                for record, error in await applier(topic).apply_batch(batch):
                    await _send_to_dead_letters(broker, consumers[topic], record, error)
        except Exception as error:
            log.error("%s: batch failed, it will come again: %r", group_id, error)
            await asyncio.sleep(1.0)  # a nack re-seeks at once; don't spin
            await msg.nack()
            return
        await msg.ack()
        for topic, batch in by_topic.items():
            _observe_applied(consumers[topic], batch)


class _AppliedOffsets(ConsumerRebalanceListener):
    """Keeps `sir_consumer_applied_offset` to the partitions this process owns: a revoked
    partition's series goes (its new owner reports it), and an assigned one starts at the
    group's committed offset, so its lag shows before the first batch is applied."""

    def __init__(self, consumers: dict[str, str]):
        self.consumers = consumers  # topic -> consumer label
        self.kafka_consumer: Callable[[], AIOKafkaConsumer | None] = lambda: None

    async def on_partitions_revoked(self, revoked: set[TopicPartition]) -> None:
        for tp in revoked:
            try:
                CONSUMER_APPLIED_OFFSET.remove(self.consumers[tp.topic], tp.topic, str(tp.partition))
            except KeyError:
                pass

    async def on_partitions_assigned(self, assigned: set[TopicPartition]) -> None:
        kafka = self.kafka_consumer()
        if kafka is None:
            return
        for tp in assigned:
            try:
                async with asyncio.timeout(5.0):
                    committed = await kafka.committed(tp)
            except Exception as error:  # only a metric: the next batch sets it
                log.debug("%s: committed offset of %s unknown: %r", self.consumers[tp.topic], tp, error)
                continue
            # Nothing committed yet: the group starts at the beginning (offset 0).
            CONSUMER_APPLIED_OFFSET.labels(self.consumers[tp.topic], tp.topic, str(tp.partition)).set(
                -1 if committed is None else committed - 1
            )


def _observe_applied(consumer: str, records: Sequence[ConsumerRecord]) -> None:
    """The consumers' side of the lag (docs/operations.md): offsets committed, and how old
    each record was (its producer timestamp) when its batch was done."""
    now = time.time()
    highest: dict[tuple[str, int], int] = {}
    delay = CONSUMER_DELAY_SECONDS.labels(consumer)
    for record in records:
        delay.observe(max(0.0, now - record.timestamp / 1000))
        highest[record.topic, record.partition] = max(record.offset, highest.get((record.topic, record.partition), -1))
    for (topic, partition), offset in highest.items():
        CONSUMER_APPLIED_OFFSET.labels(consumer, topic, str(partition)).set(offset)


# A dead letter is the original record (value, key, CloudEvents headers and content type
# as they came) plus these headers (docs/consumer-guide.md, docs/asyncapi.json).
DEAD_LETTER_TYPE = "sir.dead-letter"
_REQUIRED_CLOUDEVENT_HEADERS = ("ce_specversion", "ce_id", "ce_source", "ce_type")


def dead_letter_headers(consumer: str, record: ConsumerRecord, error: str) -> dict[str, str]:
    """The headers of `record`'s dead letter: its own, with `dlq_*` added. A record that
    came without CloudEvents attributes (not published by the platform) gets the missing
    ones from the dead letter itself, so every dead letter is a valid CloudEvent: a new
    ce_id, ce_source `/sir/<service>` of the consumer that gave up, ce_type
    `sir.dead-letter`, ce_time now, and content type application/octet-stream."""
    headers = {name: value.decode(errors="replace") for name, value in record.headers or ()}
    service = consumer.split(":", 1)[0].removeprefix("sir-")
    made = {
        "ce_specversion": "1.0",
        "ce_id": str(uuid.uuid4()),
        "ce_source": f"/sir/{service}",
        "ce_type": DEAD_LETTER_TYPE,
    }
    missing = [name for name in _REQUIRED_CLOUDEVENT_HEADERS if not headers.get(name)]
    for name in missing:
        headers[name] = made[name]
    if missing:
        headers.setdefault("ce_time", datetime.now(timezone.utc).isoformat().replace("+00:00", "Z"))
    if not headers.get("content-type"):
        headers["content-type"] = "application/octet-stream"
    return headers | {
        "dlq_error": error,
        "dlq_consumer": consumer,
        "dlq_source": f"{record.topic}/{record.partition}/{record.offset}",
        "dlq_time": datetime.now(timezone.utc).isoformat().replace("+00:00", "Z"),
    }


async def _send_to_dead_letters(broker: KafkaBroker, consumer: str, record: ConsumerRecord, error: str) -> None:
    headers = dead_letter_headers(consumer, record, error)
    # The broker publishes with acks=all, like the outbox relay (shared/messaging.py).
    await broker.publish(
        record.value, topic=dead_letter_topic(record.topic), key=record.key, headers=headers,
        correlation_id=headers["ce_id"],
    )
    DEAD_LETTERS.labels(consumer, record.topic).inc()
    log.warning("%s: message %s sent to %s: %s", consumer, headers["dlq_source"], dead_letter_topic(record.topic), error)


async def _undecoded(msg: Any) -> Any:
    # The applier validates the raw bytes itself, so a malformed message reaches it
    # (and the dead-letter topic) instead of failing in FastStream's decoder.
    return msg.body


def _summary(error: ValidationError) -> str:
    return "; ".join(
        f"{'.'.join(str(p) for p in e['loc']) or '(message)'}: {e['msg']}" for e in error.errors()[:5]
    )[:1000]
