"""docs/consumer-guide.md's confluent-kafka reader, run as written against the session's
broker (Tansu here): it reads the platform's events as CloudEvents, survives malformed
records (reporting them) and drops a repeated event."""

from __future__ import annotations

import asyncio
import json
import re
import uuid
from pathlib import Path

from aiokafka import AIOKafkaProducer

from shared.events import CASE_EVENT_TYPES
from shared.examples import example_event
from shared.messaging import cloudevent_headers, encode_headers, ensure_topics

GUIDE = Path(__file__).parents[2] / "docs/consumer-guide.md"


def _reader_code() -> str:
    section = GUIDE.read_text().split("## A reader for Tansu and Apache Kafka", 1)[1]
    return re.search(r"```python\n(.*?)```", section, re.S).group(1)


def _event(model, **changes) -> tuple[bytes, list[tuple[str, bytes]]]:
    event = example_event(model).model_copy(update={"event_id": uuid.uuid4(), **changes})
    return event.model_dump_json().encode(), encode_headers(cloudevent_headers(event, "intake"))


async def test_the_guides_reader_reads_events_and_survives_malformed_records(infra, monkeypatch):
    topic = f"sir.guide-{uuid.uuid4().hex[:8]}.v1"
    await ensure_topics(infra.bootstrap, (topic,), 1)
    first, headers_first = _event(CASE_EVENT_TYPES[0])
    second, headers_second = _event(CASE_EVENT_TYPES[1])
    records = [
        (first, headers_first),
        (b"not json at all", []),  # no CloudEvents headers
        (b"{broken", headers_second),  # CloudEvents headers, body not JSON
        (first, headers_first),  # a repeat
        (second, headers_second),
    ]
    producer = AIOKafkaProducer(bootstrap_servers=infra.bootstrap, enable_idempotence=False)
    await producer.start()
    try:
        for value, headers in records:
            await producer.send_and_wait(topic, value, key=b"case", headers=headers)
    finally:
        await producer.stop()

    monkeypatch.setenv("KAFKA_BOOTSTRAP", infra.bootstrap)
    guide: dict = {"__name__": "consumer_guide"}
    exec(compile(_reader_code(), str(GUIDE), "exec"), guide)

    def read_two() -> tuple[list, list[str]]:
        # Tansu takes about half the session timeout to join a group: a short one here.
        consumer = guide["reader"](f"guide-{uuid.uuid4().hex[:8]}", [topic],
                                   **{"session.timeout.ms": 6000, "heartbeat.interval.ms": 1000})
        skipped: list[str] = []
        read = []
        try:
            for event in guide["events"](consumer, set(), skipped):
                read.append(event)
                if len(read) == 2:
                    break
        finally:
            consumer.close()
        return read, skipped

    read, skipped = await asyncio.wait_for(asyncio.to_thread(read_two), timeout=120)
    assert [e.get_id() for e in read] == [json.loads(first)["event_id"], json.loads(second)["event_id"]]
    assert read[0].get_type() == "incident.notified" and read[0].get_data()["case_id"] == read[0].get_subject()
    assert [line.split(":")[0] for line in skipped] == [f"{topic}/0/1", f"{topic}/0/2"]
