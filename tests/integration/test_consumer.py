"""The idempotent applier against real PostgreSQL: retries, dead letters, redelivery."""

import json

import pytest
from aiokafka import AIOKafkaProducer, ConsumerRecord

from shared import devstack
from shared.consumer import IdempotentApplier
from shared.db import COMMON, create_pool, migrate
from shared.messaging import CASE_EVENTS
from tests.factories import envelope, notification
from tests.integration.conftest import run_services
from tests.integration.helpers import eventually, metric_value


@pytest.fixture(scope="module")
async def pool(infra):
    pool = await create_pool(infra.new_database())
    await migrate(pool, "consumertest", COMMON)
    await pool.execute("CREATE TABLE consumertest.effects (event_id uuid)")
    yield pool
    await pool.close()


def _record(value: bytes, offset: int = 0) -> ConsumerRecord:
    return ConsumerRecord(
        topic="sir.case-events.v1", partition=0, offset=offset, timestamp=0, timestamp_type=0,
        key=None, value=value, checksum=None, serialized_key_size=0, serialized_value_size=len(value), headers=(),
    )


def _event() -> bytes:
    return json.dumps(envelope("incident.notified", notification())).encode()


async def _effects(pool) -> int:
    return await pool.fetchval("SELECT count(*) FROM consumertest.effects")


def _applier(pool, handler) -> IdempotentApplier:
    return IdempotentApplier(pool, "consumertest", "test", handler, max_attempts=3, retry_base_seconds=0.01)


async def _write_effect(conn, event, delivery):
    await conn.execute("INSERT INTO consumertest.effects VALUES ($1)", event.event_id)


async def test_an_event_applied_twice_has_one_effect(pool):
    before = await _effects(pool)
    applier = _applier(pool, _write_effect)
    value = _event()
    assert await applier.apply_batch([_record(value, 0), _record(value, 1)]) == []
    assert await applier.apply_batch([_record(value, 2)]) == []
    assert await _effects(pool) == before + 1


async def test_a_handler_that_fails_then_succeeds_is_retried_in_place(pool):
    before = await _effects(pool)
    failures = []

    async def flaky(conn, event, delivery):
        await _write_effect(conn, event, delivery)
        if len(failures) < 2:
            failures.append(1)
            raise RuntimeError("transient")

    assert await _applier(pool, flaky).apply_batch([_record(_event())]) == []
    assert await _effects(pool) == before + 1  # the failed attempts' writes were rolled back


async def test_a_poison_event_goes_to_dead_letters_and_the_rest_of_the_batch_goes_on(pool):
    before = await _effects(pool)
    poison, good = _event(), _event()

    async def refuses_poison(conn, event, delivery):
        if str(event.event_id) == json.loads(poison)["event_id"]:
            await _write_effect(conn, event, delivery)
            raise ValueError("cannot apply")
        await _write_effect(conn, event, delivery)

    dead = await _applier(pool, refuses_poison).apply_batch([_record(poison, 0), _record(b"{", 1), _record(good, 2)])
    assert [(record.offset, error.split(":")[0]) for record, error in dead] == [
        (1, "not a valid event"),
        (0, "failed 3 attempts"),
    ]
    assert "ValueError: cannot apply" in dead[1][1]
    assert await _effects(pool) == before + 1  # only the good event's


async def test_a_restarted_consumer_resumes_after_its_committed_offsets(infra):
    """Offsets are committed after each batch's transaction: a restarted service picks up
    what came while it was down, and reads nothing twice."""
    async def publish(count: int) -> None:
        producer = AIOKafkaProducer(bootstrap_servers=broker.bootstrap, enable_idempotence=False)
        await producer.start()
        try:
            for _ in range(count):
                event = envelope("incident.notified", notification(), local_authority="moray")
                await producer.send_and_wait(CASE_EVENTS, json.dumps(event).encode(), key=event["case_id"].encode())
        finally:
            await producer.stop()

    async def counted(platform, expected: int) -> bool:
        return await platform.pool.fetchval(
            "SELECT coalesce(sum(notifications), 0) FROM reporting.notifications_by_authority"
        ) == expected

    def duplicates() -> float:
        return metric_value("sir_events_duplicate_total", consumer=f"sir-reporting:{CASE_EVENTS}")

    with devstack.Tansu() as broker:
        settings = infra.settings(infra.new_database(), kafka_bootstrap=broker.bootstrap)
        async with run_services(settings, ("reporting",)) as platform:
            await publish(10)
            await eventually(lambda: counted(platform, 10), what="the first ten")
        duplicates_before = duplicates()
        await publish(5)  # while reporting is down
        async with run_services(settings, ("reporting",)) as platform:
            await eventually(lambda: counted(platform, 15), what="the five sent while it was down")
        assert duplicates() == duplicates_before
