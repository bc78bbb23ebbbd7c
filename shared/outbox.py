"""The transactional outbox: rows written with the state that produced them, and the
relay that publishes them.

Order: one case's events are written under a lock on the case, so their ids follow
their commit order. The relay publishes rows in id order, one batch at a time, holding
an advisory lock so that two relays never publish interleaved batches; the rows are
also claimed `FOR UPDATE SKIP LOCKED`, so a relay never waits on a writer's lock.
A batch is deleted only after the broker acknowledged every message of it; a failure
rolls the claim back and the batch goes again (at least once: consumers dedupe).
"""

from __future__ import annotations

import asyncio
import logging
from collections import Counter

import asyncpg
from aiokafka import AIOKafkaProducer
from aiokafka.structs import RecordMetadata

from shared.events import Envelope
from shared.messaging import all_topics, cloudevent_headers, encode_headers, ensure_topics, new_producer, topic_of
from shared.metrics import OUTBOX_PUBLISHED, OUTBOX_PUBLISHED_OFFSET

log = logging.getLogger(__name__)


async def enqueue(
    conn: asyncpg.Connection, schema: str, event: Envelope, service: str, *, imported: bool = False,
    topic: str | None = None,
) -> None:
    """Add `event` to the outbox inside the caller's transaction; `topic` overrides the
    event type's own topic (routing forwards notifications to outbound topics)."""
    await enqueue_many(conn, schema, [event], service, imported=imported, topic=topic)


async def enqueue_many(
    conn: asyncpg.Connection, schema: str, events: list[Envelope], service: str, *, imported: bool = False,
    topic: str | None = None,
) -> None:
    if not events:
        return
    # One statement for the whole list: a scheduler round enqueues a thousand events.
    await conn.execute(
        f"INSERT INTO {schema}.outbox (topic, key, value, headers)"
        " SELECT t, k, v, h FROM unnest($1::text[], $2::bytea[], $3::bytea[], $4::jsonb[])"
        " WITH ORDINALITY AS e(t, k, v, h, n) ORDER BY n",  # ids in the list's order
        [topic or topic_of(event.event_type) for event in events],
        [str(event.case_id).encode() for event in events],
        [event.model_dump_json().encode() for event in events],
        [cloudevent_headers(event, service, imported) for event in events],
    )


async def backlog(pool: asyncpg.Pool, schema: str) -> tuple[int, float]:
    """Rows waiting, and the age in seconds of the oldest (0 when empty)."""
    row = await pool.fetchrow(
        f"SELECT count(*) AS n, coalesce(extract(epoch FROM now() - min(created_at)), 0) AS age"
        f" FROM {schema}.outbox"
    )
    return row["n"], float(row["age"])


def _count_published(schema: str, rows: list[asyncpg.Record], acknowledged: list[RecordMetadata]) -> None:
    published = Counter((row["topic"], row["headers"].get("ce_type", "unknown")) for row in rows)
    for (topic, event_type), count in published.items():
        OUTBOX_PUBLISHED.labels(schema, topic, event_type).inc(count)
    highest: dict[tuple[str, int], int] = {}
    for ack in acknowledged:
        highest[ack.topic, ack.partition] = max(ack.offset, highest.get((ack.topic, ack.partition), -1))
    for (topic, partition), offset in highest.items():
        OUTBOX_PUBLISHED_OFFSET.labels(schema, topic, str(partition)).set(offset)


class OutboxRelay:
    def __init__(
        self,
        pool: asyncpg.Pool,
        schema: str,
        bootstrap: str,
        batch_size: int = 500,
        poll_seconds: float = 1.0,
        max_backoff_seconds: float = 5.0,
        partitions: int = 6,
    ):
        self.pool = pool
        self.schema = schema
        self.bootstrap = bootstrap
        self.partitions = partitions
        self.batch_size = batch_size
        self.poll_seconds = poll_seconds
        self.max_backoff_seconds = max_backoff_seconds
        self._wake = asyncio.Event()
        self._producer: AIOKafkaProducer | None = None
        self._task: asyncio.Task | None = None

    async def start(self) -> None:
        self._task = asyncio.create_task(self.run(), name=f"outbox-relay-{self.schema}")

    async def stop(self) -> None:
        if self._task:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        await self._close_producer()

    async def run(self) -> None:
        listener = await self.pool.acquire()
        channel = f"{self.schema}_outbox"
        await listener.add_listener(channel, self._on_notify)
        backoff = 0.1
        try:
            while True:
                try:
                    published = await self.publish_batch()
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
            await listener.remove_listener(channel, self._on_notify)
            await self.pool.release(listener)

    async def publish_batch(self) -> int:
        """Publish up to one batch; returns how many rows went out."""
        async with self.pool.acquire() as conn, conn.transaction():
            if not await conn.fetchval(
                "SELECT pg_try_advisory_xact_lock(hashtext($1))", f"{self.schema}.outbox"
            ):
                return 0  # another relay is publishing; it will take these rows
            rows = await conn.fetch(
                f"SELECT id, topic, key, value, headers FROM {self.schema}.outbox"
                " ORDER BY id LIMIT $1 FOR UPDATE SKIP LOCKED",
                self.batch_size,
            )
            if not rows:
                return 0
            producer = await self._ensure_producer()
            # Sends are queued in id order and each partition's batches go out in turn,
            # so one case's events keep their order on its partition.
            pending = [
                await producer.send(
                    row["topic"], row["value"], key=row["key"], headers=encode_headers(row["headers"])
                )
                for row in rows
            ]
            acknowledged = await asyncio.gather(*pending)
            await conn.execute(
                f"DELETE FROM {self.schema}.outbox WHERE id = ANY($1::bigint[])", [r["id"] for r in rows]
            )
        _count_published(self.schema, rows, acknowledged)
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

    def _on_notify(self, *_: object) -> None:
        self._wake.set()

    async def _wait_for_rows(self) -> None:
        try:
            await asyncio.wait_for(self._wake.wait(), self.poll_seconds)
        except TimeoutError:
            pass
        self._wake.clear()

    async def _ensure_producer(self) -> AIOKafkaProducer:
        if self._producer is None:
            # A broker that lost its topics (Tansu keeps them in memory) would otherwise
            # auto-create them with its own partition count.
            await ensure_topics(self.bootstrap, all_topics(), self.partitions)
            producer = new_producer(self.bootstrap)
            try:
                await producer.start()
            except BaseException:
                await producer.stop()
                raise
            self._producer = producer
        return self._producer

    async def _close_producer(self) -> None:
        if self._producer is not None:
            producer, self._producer = self._producer, None
            try:
                await producer.stop()
            except Exception as error:
                log.debug("closing producer: %s", error)
