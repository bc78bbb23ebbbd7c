"""End to end: intake → event store → outbox → Kafka → routing, deadlines and reporting."""

import json
import uuid

from aiokafka import AIOKafkaProducer

from shared.messaging import CASE_EVENTS, dead_letter_topic
from tests.factories import envelope, mappa_notification, notification
from tests.integration.conftest import bearer
from tests.integration.helpers import eventually, find_records, header, metric_value

CONSUMING_SERVICES = ("routing", "deadlines", "reporting")


async def _notify(platform, token, body=None) -> dict:
    answer = await platform.clients["intake"].post("/v1/notifications", json=body or notification(), headers=bearer(token))
    assert answer.status_code == 201, answer.text
    return answer.json()


async def _handled_by_all(platform, event_id) -> bool:
    for schema in CONSUMING_SERVICES:
        if not await platform.pool.fetchval(
            f"SELECT count(*) FROM {schema}.processed_events WHERE event_id = $1", uuid.UUID(str(event_id))
        ):
            return False
    return True


async def _effects(platform, case_id) -> dict:
    case_id = uuid.UUID(str(case_id))
    return {
        "processed": [
            await platform.pool.fetchval(
                f"SELECT count(*) FROM {schema}.processed_events p WHERE p.topic = $1 AND p.event_id IN"
                " (SELECT event_id FROM intake.events WHERE case_id = $2)", CASE_EVENTS, case_id)
            for schema in CONSUMING_SERVICES
        ],
        "deliveries": await platform.pool.fetchval("SELECT count(*) FROM routing.deliveries WHERE case_id = $1", case_id),
        "deadlines": await platform.pool.fetchval("SELECT count(*) FROM deadlines.deadlines WHERE case_id = $1", case_id),
        "counted": await platform.pool.fetchval(
            "SELECT notifications FROM reporting.notifications_by_authority WHERE local_authority = 'glasgow-city'"),
    }


def _duplicates(service: str) -> float:
    return metric_value("sir_events_duplicate_total", consumer=f"sir-{service}:{CASE_EVENTS}")


async def _publish(bootstrap, *messages, key=None, headers=()):
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, enable_idempotence=False)
    await producer.start()
    try:
        for value in messages:
            await producer.send_and_wait(CASE_EVENTS, value, key=key, headers=list(headers))
    finally:
        await producer.stop()


async def test_a_notification_reaches_every_service_once(platform, tokens):
    accepted = await _notify(platform, tokens["glasgow"])
    await eventually(lambda: _handled_by_all(platform, accepted["event_id"]), what="all three services")

    [record] = await find_records(
        platform.settings.kafka_bootstrap, CASE_EVENTS, lambda r: header(r, "ce_id") == accepted["event_id"]
    )
    assert record.key == accepted["case_id"].encode()
    assert header(record, "ce_specversion") == "1.0"
    assert header(record, "ce_type") == "incident.notified"
    assert header(record, "ce_source") == "/sir/intake"
    assert header(record, "ce_subject") == accepted["case_id"]
    assert header(record, "content-type") == "application/json"
    assert header(record, "ce_time").endswith("Z")
    assert json.loads(record.value)["event_id"] == accepted["event_id"]

    effects = await _effects(platform, accepted["case_id"])
    assert effects["processed"] == [1, 1, 1]
    assert effects["deliveries"] == 1  # the Scottish Government; no MAPPA
    deadline = await platform.clients["deadlines"].get(
        f"/v1/cases/{accepted['case_id']}/deadlines", headers=bearer(tokens["glasgow"])
    )
    # No MAPPA: no sog_forward.
    assert {d["rule"] for d in deadline.json()["deadlines"]} == {"notification", "sg_forward", "review_submission"}

    counts = (await platform.clients["reporting"].get(
        "/v1/reports/notifications-by-authority", headers=bearer(tokens["inspectorate"]))).json()
    assert len(counts["by_local_authority"]) == 32
    glasgow = next(r for r in counts["by_local_authority"] if r["local_authority"] == "glasgow-city")
    assert glasgow["notifications"] == effects["counted"] >= 1


async def test_mappa_routes_to_the_supervising_authoritys_sog(platform, tokens):
    accepted = await _notify(platform, tokens["glasgow"], mappa_notification(supervising_local_authority="dundee-city"))
    await eventually(lambda: _handled_by_all(platform, accepted["event_id"]), what="all three services")
    deliveries = await platform.clients["routing"].get(
        "/v1/deliveries", params={"case_id": accepted["case_id"]}, headers=bearer(tokens["admin"])
    )
    assert sorted(d["recipient"] for d in deliveries.json()) == ["scottish-government", "sog:tayside"]


async def test_the_same_message_twice_changes_nothing(platform, tokens):
    accepted = await _notify(platform, tokens["glasgow"])
    await eventually(lambda: _handled_by_all(platform, accepted["event_id"]), what="the first delivery")
    before = await _effects(platform, accepted["case_id"])

    [record] = await find_records(
        platform.settings.kafka_bootstrap, CASE_EVENTS, lambda r: header(r, "ce_id") == accepted["event_id"]
    )
    # The same message again, then a marker: once the marker is handled, so is the copy.
    marker = envelope("incident.notified", notification(), local_authority="angus")
    await _publish(platform.settings.kafka_bootstrap, record.value, key=record.key, headers=record.headers)
    await _publish(platform.settings.kafka_bootstrap, json.dumps(marker).encode(), key=marker["case_id"].encode())
    await eventually(lambda: _handled_by_all(platform, marker["event_id"]), what="the marker")

    assert await _effects(platform, accepted["case_id"]) == before


async def test_a_malformed_message_goes_to_the_dead_letter_topic(platform):
    bootstrap = platform.settings.kafka_bootstrap
    tag = uuid.uuid4().hex
    bad_field = envelope("incident.notified", notification(incident_type="arson"), local_authority="angus")
    good = envelope("incident.notified", notification(), local_authority="angus")
    key = tag.encode()  # one key: one partition, so the good message comes after the bad ones
    await _publish(bootstrap, b"not json " + key, json.dumps(bad_field).encode(), key=key)
    await _publish(bootstrap, json.dumps(good).encode(), key=key)

    await eventually(lambda: _handled_by_all(platform, good["event_id"]), what="the good message after the bad")
    dead = await find_records(bootstrap, dead_letter_topic(CASE_EVENTS), lambda r: r.key == key, count=6)
    by_consumer = {}
    for record in dead:
        by_consumer.setdefault(header(record, "dlq_consumer"), []).append(record)
    assert sorted(by_consumer) == [f"sir-{s}:{CASE_EVENTS}" for s in ("deadlines", "reporting", "routing")]
    for records in by_consumer.values():
        assert len(records) == 2
        assert all("not a valid event" in header(r, "dlq_error") for r in records)
        assert any("incident_type" in header(r, "dlq_error") for r in records)
        assert all(header(r, "dlq_source").startswith(CASE_EVENTS + "/") for r in records)


async def test_a_replay_republishes_the_store_and_changes_nothing(platform, tokens):
    from shared import record

    accepted = await _notify(platform, tokens["glasgow"])
    await eventually(lambda: _handled_by_all(platform, accepted["event_id"]), what="the first delivery")
    before = await _effects(platform, accepted["case_id"])
    seen_before = {s: _duplicates(s) for s in CONSUMING_SERVICES}

    settings = platform.settings
    replayed = await record.replay(platform.pool, settings.kafka_bootstrap, settings.kafka_partitions)
    # Every service's published events: intake's, routing's and deadlines' records.
    assert replayed >= await platform.pool.fetchval("SELECT count(*) FROM intake.events")
    # Imported forwarding records are in the store too, but go to sir.routing.v1.
    case_events = await platform.pool.fetchval(
        "SELECT count(*) FROM intake.events WHERE event_type <> 'notification.forwarded'"
    )

    async def every_consumer_skipped_the_replay():
        return all(_duplicates(s) - seen_before[s] >= case_events for s in CONSUMING_SERVICES)

    await eventually(every_consumer_skipped_the_replay, what="every consumer to skip the replayed events")
    assert await _effects(platform, accepted["case_id"]) == before
