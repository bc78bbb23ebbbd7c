"""The record on the broker: re-publishing every service's emitted events (`sir replay`)
and restoring a broker that has lost its topics before anything new goes out.

Each emitting service keeps its events in `<schema>.emitted_events` (shared/outbox.py).
The three services share one database, a schema each, so one process can read all three
records in causal order: intake's first (case events cause everything else), then
routing's (forwarding records, outbound copies), then deadlines' (which follow from both);
within a record, its positions' order. A record's events are all acknowledged before the
next record's go out.

A blank broker (a restarted Tansu keeps nothing; a recreated Kafka) is told from a kept
one by a marker topic, `sir.record-marker.v1`, which is created only after a restore or
the first start, and which no service writes otherwise. Every outbox relay checks for it
whenever its producer (re)connects. When it is missing, one restorer runs under an
advisory lock on the database (`RESTORE_LOCK`, taken exclusively; each relay's batch
takes it shared), so the relays of every service hold off until the topics hold the
record again, then the marker is written.

What is restored: the events the relays had published (not those still queued, which
the relays publish next, nor parked ones awaiting a decision or discarded). Consumers
read the restored topics from the start and skip what their `processed_events` already
hold.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import logging
import time
from collections.abc import Callable

import asyncpg
from aiokafka import AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.protocol.metadata import MetadataRequest

from shared.messaging import all_topics, encode_headers, ensure_topics, new_producer

log = logging.getLogger(__name__)

# The services that emit events, in causal order.
EMITTING = ("intake", "routing", "deadlines")
MARKER_TOPIC = "sir.record-marker.v1"
# One advisory lock key for restores (exclusive) and relay batches (shared): 'SIRREST'.
RESTORE_LOCK = 0x53495252455354
_CHUNK = 5000

Progress = Callable[[int, int], None]


async def marker_present(bootstrap: str) -> bool:
    # A metadata request for all topics: it creates nothing, unlike one naming a topic
    # on a broker that auto-creates topics.
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=10_000)
    await admin.start()
    try:
        return MARKER_TOPIC in await admin.list_topics()
    finally:
        await admin.close()


class _OlderBroker(Exception):
    """The broker speaks no Metadata request that can say "do not create it" (v4+)."""


class _MarkerMetadata(MetadataRequest):
    """The marker topic's metadata alone, asked so that no broker creates it (Metadata v4+,
    `allow_auto_topic_creation` false: Tansu and Kafka honour it)."""

    def __init__(self) -> None:
        super().__init__([MARKER_TOPIC], allow_auto_topic_creation=False)

    def build(self, request_struct_class):
        if request_struct_class.API_VERSION < 4:  # the flag does not exist: it would create the topic
            raise _OlderBroker
        return super().build(request_struct_class)


# A Metadata answer's errors for a topic that exists: none, or its leader still being chosen.
_TOPIC_EXISTS = (0, 5)


async def marker_seen_by(producer: AIOKafkaProducer) -> bool:
    """The same question over a running producer's connection: one metadata round trip.
    A broker replaced under a producer is not always noticed by its sends: a blank Tansu
    auto-creates a topic that a client (a consumer rejoining its group) asks about.

    It asks for the marker topic alone, never creating it: every relay asks after every
    batch, and the answer for every topic (a hundred partitions, decoded in Python) was
    most of a relay's own time per batch (issue 15). A broker too old for that request is
    asked for every topic, which creates nothing."""
    client = producer.client
    node = client.get_random_node()
    if node is not None:
        try:
            answer = await client.send(node, _MarkerMetadata())
        except _OlderBroker:
            pass
        else:
            return any(topic[1] == MARKER_TOPIC and topic[0] in _TOPIC_EXISTS for topic in answer.topics)
    return MARKER_TOPIC in (await client.fetch_all_metadata()).topics()


async def write_marker(bootstrap: str, restored: int) -> None:
    await ensure_topics(bootstrap, (MARKER_TOPIC,), 1)
    producer = new_producer(bootstrap)
    await producer.start()
    try:
        note = {"restored_events": restored, "at": dt.datetime.now(dt.timezone.utc).isoformat()}
        await producer.send_and_wait(MARKER_TOPIC, json.dumps(note).encode())
    finally:
        await producer.stop()


async def ensure_restored(pool: asyncpg.Pool, bootstrap: str, partitions: int) -> None:
    """Restore the topics from the records if the broker has lost them; called by every
    outbox relay when its producer (re)connects, before it publishes anything."""
    if await marker_present(bootstrap):
        return
    async with pool.acquire() as conn, conn.transaction():
        # Waits for the batches in flight, and for another restorer; then look again.
        await conn.execute("SELECT pg_advisory_xact_lock($1)", RESTORE_LOCK)
        if await marker_present(bootstrap):
            return
        total = await _count_published(conn)
        if total:
            log.warning(
                "broker at %s has lost its topics (no %s): restoring %d events from the records before"
                " anything new is published", bootstrap, MARKER_TOPIC, total,
            )
        await ensure_topics(bootstrap, all_topics(), partitions)
        restored = await publish_records(conn, bootstrap, progress=_log_progress(total))
        await write_marker(bootstrap, restored)
    if total:
        log.warning("broker at %s restored: %d events re-published", bootstrap, restored)


async def replay(pool: asyncpg.Pool, bootstrap: str, partitions: int, progress: Progress | None = None) -> int:
    """`sir replay`: re-publish every record to the topics in causal order, whatever the
    broker holds (consumers skip what they have seen); the relays hold off meanwhile."""
    async with pool.acquire() as conn, conn.transaction():
        await conn.execute("SELECT pg_advisory_xact_lock($1)", RESTORE_LOCK)
        await ensure_topics(bootstrap, all_topics(), partitions)
        total = await _count_published(conn)
        restored = await publish_records(conn, bootstrap, progress=progress or _log_progress(total))
        await write_marker(bootstrap, restored)
    return restored


def _published(schema: str) -> str:
    """The record's events the relay has published: not queued, not parked (awaiting a
    decision or discarded; a row retried since is back in the queue or published)."""
    return (
        f"FROM {schema}.emitted_events e"
        f" WHERE NOT EXISTS (SELECT 1 FROM {schema}.outbox o WHERE o.position = e.position)"
        f" AND NOT EXISTS (SELECT 1 FROM {schema}.outbox_parked p WHERE p.position = e.position"
        "  AND p.decision IS DISTINCT FROM 'retried')"
    )


async def _schemas(conn: asyncpg.Connection) -> list[str]:
    """The emitting services whose record exists in this database, in causal order."""
    return [s for s in EMITTING if await conn.fetchval("SELECT to_regclass($1) IS NOT NULL", f"{s}.emitted_events")]


async def _count_published(conn: asyncpg.Connection) -> int:
    return sum([await conn.fetchval(f"SELECT count(*) {_published(s)}") for s in await _schemas(conn)])


async def publish_records(conn: asyncpg.Connection, bootstrap: str, progress: Progress | None = None) -> int:
    """Publish every record's published events in causal order, in the caller's
    transaction (a cursor needs one); returns how many."""
    total = await _count_published(conn)
    producer = new_producer(bootstrap)
    await producer.start()
    done = 0
    try:
        for schema in await _schemas(conn):
            cursor = await conn.cursor(
                f"SELECT e.topic, e.key, e.value, e.headers {_published(schema)} ORDER BY e.position"
            )
            in_flight: list[asyncio.Future] = []
            while rows := await cursor.fetch(_CHUNK):
                sent = [
                    await producer.send(r["topic"], r["value"], key=r["key"], headers=encode_headers(r["headers"]))
                    for r in rows
                ]
                # One chunk's acknowledgements awaited while the next is read and queued.
                await _acknowledged(in_flight)
                in_flight = sent
                done += len(rows)
                if progress:
                    progress(done, total)
            # Every event of this record acknowledged before the next record's go out.
            await _acknowledged(in_flight)
    finally:
        await producer.stop()
    return done


async def _acknowledged(futures: list[asyncio.Future]) -> None:
    if futures:
        await asyncio.gather(*futures)


def _log_progress(total: int) -> Progress:
    """A log line at each tenth of the way (and at the end), with the rate so far."""
    started = time.monotonic()
    step = max(total // 10, 1)
    last = [0]

    def report(done: int, total_now: int) -> None:
        if done - last[0] >= step or done == total_now:
            last[0] = done
            rate = done / max(time.monotonic() - started, 1e-6)
            log.info("restore: %d/%d events (%.0f%%), %.0f events/s", done, total_now, 100 * done / max(total_now, 1), rate)

    return report
