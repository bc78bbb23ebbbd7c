"""Dead letters read as an outside consumer reads them: with the CloudEvents SDK.

A dead letter keeps the original record's bytes, key, CloudEvents headers and content
type, and adds dlq_* headers; a record that came with no CloudEvents headers at all gets
them from the dead letter itself (type `sir.dead-letter`), so the SDK reads every one.
"""

import json
import uuid

from aiokafka import AIOKafkaProducer
from cloudevents.core.bindings.kafka import KafkaMessage, from_binary_event

from shared.consumer import DEAD_LETTER_TYPE
from shared.messaging import CASE_EVENTS, dead_letter_topic
from tests.factories import envelope, notification
from tests.integration.helpers import find_records, header

DLQ_HEADERS = ("dlq_error", "dlq_consumer", "dlq_source", "dlq_time")


def _cloudevent(record):
    headers = {name: value for name, value in record.headers or ()}
    return from_binary_event(KafkaMessage(headers=headers, key=record.key, value=record.value))


async def _publish(bootstrap, value, key, headers=()):
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, enable_idempotence=False)
    await producer.start()
    try:
        await producer.send_and_wait(CASE_EVENTS, value, key=key, headers=list(headers))
    finally:
        await producer.stop()


async def test_a_dead_letter_keeps_the_cloudevent_it_came_as(platform):
    bad = envelope("incident.notified", notification(incident_type="arson"), local_authority="angus")
    key = bad["case_id"].encode()
    original = {
        "ce_specversion": "1.0", "ce_id": bad["event_id"], "ce_source": "/sir/intake",
        "ce_type": "incident.notified", "ce_time": bad["recorded_at"], "ce_subject": bad["case_id"],
        "content-type": "application/json",
    }
    await _publish(
        platform.settings.kafka_bootstrap, json.dumps(bad).encode(), key,
        [(name, value.encode()) for name, value in original.items()],
    )

    dead = await find_records(platform.settings.kafka_bootstrap, dead_letter_topic(CASE_EVENTS), lambda r: r.key == key, count=3)
    for record in dead:
        assert record.value == json.dumps(bad).encode()
        assert {name: header(record, name) for name in original} == original
        assert all(header(record, name) for name in DLQ_HEADERS)
        event = _cloudevent(record)
        assert event.get_id() == bad["event_id"]
        assert event.get_type() == "incident.notified"
        assert event.get_subject() == bad["case_id"]
        assert event.get_data()["data"]["incident_type"] == "arson"


async def test_a_record_without_cloudevents_headers_becomes_a_sir_dead_letter_event(platform):
    key = uuid.uuid4().hex.encode()
    await _publish(platform.settings.kafka_bootstrap, b"not json at all", key)

    dead = await find_records(platform.settings.kafka_bootstrap, dead_letter_topic(CASE_EVENTS), lambda r: r.key == key, count=3)
    consumers = set()
    for record in dead:
        event = _cloudevent(record)
        assert event.get_type() == DEAD_LETTER_TYPE
        assert event.get_specversion() == "1.0"
        assert event.get_source() == "/sir/" + header(record, "dlq_consumer").split(":")[0].removeprefix("sir-")
        assert uuid.UUID(event.get_id())
        assert event.get_datacontenttype() == "application/octet-stream"
        assert record.value == b"not json at all"  # the SDK hands it over as text
        assert "not a valid event" in header(record, "dlq_error")
        consumers.add(header(record, "dlq_consumer"))
    assert consumers == {f"sir-{s}:{CASE_EVENTS}" for s in ("deadlines", "reporting", "routing")}
