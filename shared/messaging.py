"""Topics, CloudEvents headers and Kafka clients, set up one way for every service.

Only features both Tansu and Apache Kafka support are used: no idempotent producer and
no transactions (consumers dedupe instead).
"""

from __future__ import annotations

import logging
import random
import struct
from typing import TYPE_CHECKING, Any

from aiokafka import AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from prometheus_client import REGISTRY

from shared.events import Envelope

# The topic names live in a pure module (shared/topics.py); re-exported for the code that
# imports them from here.
from shared.topics import (  # noqa: F401
    CASE_EVENTS,
    DEADLINE_EVENTS,
    OUTBOUND_TOPICS,
    PLATFORM_TOPICS,
    ROUTING_EVENTS,
    all_topics,
    dead_letter_topic,
    outbound_topic,
    topic_of,
)

log = logging.getLogger(__name__)

if TYPE_CHECKING:
    from faststream.kafka import KafkaBroker

# CloudEvents extension attribute set on imported history, so routing never re-delivers it.
IMPORTED_HEADER = "ce_sirimported"
_TOPIC_EXISTS = 36  # Kafka error code TOPIC_ALREADY_EXISTS


def cloudevent_headers(event: Envelope, service: str, imported: bool = False) -> dict[str, str]:
    """CloudEvents 1.0 binary-mode headers (SPEC §3), so any CloudEvents SDK reads the topics."""
    return ({IMPORTED_HEADER: "true"} if imported else {}) | {
        "ce_specversion": "1.0",
        "ce_id": str(event.event_id),
        "ce_source": f"/sir/{service}",
        "ce_type": event.event_type,
        "ce_time": event.recorded_at.isoformat().replace("+00:00", "Z"),
        "ce_subject": str(event.case_id),
        "content-type": "application/json",
    }


def encode_headers(headers: dict[str, str]) -> list[tuple[str, bytes]]:
    return [(name, value.encode()) for name, value in headers.items()]


_M = 0x5BD1E995


def murmur2(data: bytes) -> int:
    """Kafka's murmur2 of a key, as aiokafka.partitioner.murmur2 (and the Java client)
    compute it, a word at a time: aiokafka's byte-by-byte version was half of a relay's
    time per event (issue 15; tests/unit/test_partitioner.py holds them equal)."""
    length = len(data)
    h = 0x9747B28C ^ length
    for k in struct.unpack_from(f"<{length // 4}I", data):
        k = (k * _M) & 0xFFFFFFFF
        k ^= k >> 24
        k = (k * _M) & 0xFFFFFFFF
        h = ((h * _M) & 0xFFFFFFFF) ^ k
    extra = length & 3
    if extra:
        tail = length & ~3
        if extra >= 3:
            h ^= data[tail + 2] << 16
        if extra >= 2:
            h ^= data[tail + 1] << 8
        h ^= data[tail]
        h = (h * _M) & 0xFFFFFFFF
    h ^= h >> 13
    h = (h * _M) & 0xFFFFFFFF
    h ^= h >> 15
    return h


class DefaultPartitioner:
    """aiokafka's (and Kafka's) default partitioner with the murmur2 above: a key goes
    to the partition every other producer of the topic sends it to."""

    def __call__(self, key: bytes | None, all_partitions: list[int], available: list[int]) -> int:
        if key is None:
            return random.choice(available or all_partitions)
        return all_partitions[(murmur2(key) & 0x7FFFFFFF) % len(all_partitions)]


def new_producer(bootstrap: str, **options: Any) -> AIOKafkaProducer:
    # acks=all and no idempotence: Tansu has no idempotent producer; duplicates from
    # retries are removed by the consumers. `options` add to or replace these.
    return AIOKafkaProducer(**{
        "bootstrap_servers": bootstrap,
        "acks": "all",
        "enable_idempotence": False,
        "linger_ms": 2,
        "request_timeout_ms": 10_000,
        "partitioner": DefaultPartitioner(),
    } | options)


def new_broker(bootstrap: str, service: str) -> KafkaBroker:
    # Imported here: a process that only publishes (an outbox relay, `sir import`) starts
    # without FastStream's modules, a fifth of a second of CPU.
    from faststream.kafka import KafkaBroker
    from faststream.kafka.prometheus import KafkaPrometheusMiddleware

    # FastStream logs every message at INFO by default; at this volume that halves the
    # throughput, so per-message logs go to DEBUG.
    return KafkaBroker(
        bootstrap,
        client_id=f"sir-{service}",
        # faststream_* metrics of each subscriber's batches and of the dead-letter sends,
        # in the registry /metrics serves.
        middlewares=[KafkaPrometheusMiddleware(registry=REGISTRY, app_name=service)],
        log_level=logging.DEBUG,
        # A plain logger, so its lines go through the root handler (JSON, shared/logs.py).
        logger=logging.getLogger(f"sir.broker.{service}"),
        enable_idempotence=False,
        # What the broker publishes itself (dead letters) waits for every replica, as the
        # outbox relay's producer does.
        acks="all",
        request_timeout_ms=10_000,
    )


async def ensure_topics(bootstrap: str, topics: tuple[str, ...], partitions: int) -> None:
    """Create the topics that are missing; an existing topic is left as it is."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=10_000)
    await admin.start()
    try:
        response = await admin.create_topics(
            [NewTopic(name, num_partitions=partitions, replication_factor=1) for name in topics]
        )
        for topic, code, message in response.topic_errors:
            if code not in (0, _TOPIC_EXISTS):
                raise RuntimeError(f"cannot create topic {topic}: {code} {message}")
    finally:
        await admin.close()
