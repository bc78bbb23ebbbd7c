"""The dead letter's headers (pure): the original's kept, dlq_* added, CloudEvents
attributes made up only where the original had none; and the broker that sends dead
letters waits for every replica (acks=all), like the outbox relay."""

import uuid

from aiokafka.structs import ConsumerRecord

from shared.consumer import DEAD_LETTER_TYPE, dead_letter_headers
from shared.messaging import new_broker

CONSUMER = "sir-deadlines:sir.routing.v1"


def _record(headers=()) -> ConsumerRecord:
    return ConsumerRecord("sir.routing.v1", 2, 41, 0, 0, b"key", b"value", None, 3, 5, headers=tuple(headers))


def test_the_originals_headers_are_kept_and_dlq_headers_added():
    original = {"ce_specversion": "1.0", "ce_id": str(uuid.uuid4()), "ce_source": "/sir/routing",
                "ce_type": "notification.forwarded", "ce_time": "2026-11-20T10:30:00Z", "ce_subject": str(uuid.uuid4()),
                "content-type": "application/json", "ce_sirimported": "true"}
    headers = dead_letter_headers(CONSUMER, _record((k, v.encode()) for k, v in original.items()), "failed 5 attempts: X")
    assert {k: headers[k] for k in original} == original
    assert headers["dlq_error"] == "failed 5 attempts: X"
    assert headers["dlq_consumer"] == CONSUMER
    assert headers["dlq_source"] == "sir.routing.v1/2/41"
    assert headers["dlq_time"].endswith("Z")


def test_a_record_without_cloudevents_headers_gets_a_dead_letter_cloudevent():
    headers = dead_letter_headers(CONSUMER, _record(), "not a valid event: (message): Invalid JSON")
    assert headers["ce_specversion"] == "1.0"
    assert uuid.UUID(headers["ce_id"])
    assert headers["ce_source"] == "/sir/deadlines"
    assert headers["ce_type"] == DEAD_LETTER_TYPE
    assert headers["ce_time"].endswith("Z")
    assert headers["content-type"] == "application/octet-stream"
    assert "ce_subject" not in headers


def test_an_empty_content_type_is_not_kept():
    headers = dead_letter_headers(CONSUMER, _record([("content-type", b"")]), "x")
    assert headers["content-type"] == "application/octet-stream"


def test_the_broker_that_sends_dead_letters_waits_for_every_replica():
    # FastStream keeps the producer's settings here; the relay's producer is new_producer's.
    assert new_broker("127.0.0.1:9", "test")._connection_kwargs["acks"] == "all"
