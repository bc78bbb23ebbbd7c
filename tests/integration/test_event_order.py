"""Order that survives a replay (issue 11): reporting's projections are the same whether a
case's events come in order, shuffled with duplicates, or are rebuilt, and the consumer
applies each case's events in sequence order (real PostgreSQL)."""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import uuid

import pytest
from aiokafka import ConsumerRecord
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from services.reporting import handlers
from services.reporting.app import SERVICE
from services.reporting.commands import Projection, consumer_name, write_projection
from services.reporting.repository import table_contents
from shared.consumer import IdempotentApplier
from shared.db import COMMON, create_pool, migrate
from shared.lifecycle import Refused, apply
from shared.messaging import CASE_EVENTS, DEADLINE_EVENTS, ROUTING_EVENTS
from tests.factories import envelope_json, event_data, mappa_notification, notification, review

# The case rows' replaced versions (reports as of a moment) too: a case's events are folded in
# sequence order, so its versions are the same whatever the delivery order.
PROJECTION_TABLES = ("notifications", "reviews", "forwards", "deadlines",
                     "notifications_versions", "reviews_versions")
HANDLERS = {
    CASE_EVENTS: handlers.CASES,
    ROUTING_EVENTS: handlers.FORWARDS,
    DEADLINE_EVENTS: handlers.DEADLINES,
}


@pytest.fixture(scope="module")
async def pool(infra):
    pool = await create_pool(infra.new_database())
    await migrate(pool, SERVICE.name, COMMON, SERVICE.migrations)
    yield pool
    await pool.close()


# --- histories ----------------------------------------------------------------------------


@st.composite
def case_history(draw, index: int) -> list[dict]:
    """One case: a valid run of case events (shared/lifecycle.py refuses the rest), numbered
    1, 2, 3 … as intake numbers them, with routing and deadline events about it."""
    case_id, local_authority = uuid.UUID(int=draw(st.integers(0, 2**64)) << 8 | index), "glasgow-city"
    received = dt.datetime(2025, 1, 6, 10, tzinfo=dt.timezone.utc) + dt.timedelta(days=7 * index)
    events, case = [], None
    for _ in range(draw(st.integers(1, 9))):
        fitting = []
        for event_type in ("incident.notified", "notification.criteria_assessed", "sog.decision_recorded",
                           "review.submitted", "review.additional_info_requested",
                           "review.additional_info_provided", "review.responded", "case.closed"):
            data = event_data(draw, event_type, received)
            try:
                fitting.append((event_type, data, apply(case, event_type, local_authority, data)))
            except Refused:
                pass
        if not fitting:
            break
        event_type, data, case = draw(st.sampled_from(fitting))
        events.append(envelope_json(event_type, case_id, received, data, sequence=len(events) + 1))
        received += dt.timedelta(days=draw(st.integers(0, 40)), hours=draw(st.integers(0, 8)))
    notified = events[0]["received_at"]
    for attempt in range(draw(st.integers(0, 2))):  # forwards: the first delivery counts
        delivered = (dt.datetime.fromisoformat(notified) + dt.timedelta(days=draw(st.integers(0, 5)))).isoformat()
        events.append(envelope_json("notification.forwarded", case_id, dt.datetime.fromisoformat(delivered), {
            "recipient": "scottish-government", "channel": "topic", "attempts": attempt + 1, "delivered_at": delivered,
        }))
    if draw(st.booleans()):  # a deadline's events: opened, maybe warned, then settled one way
        started = dt.datetime.fromisoformat(notified)
        deadline = {"rule": "review_submission", "started_at": started.isoformat(),
                    "due_at": (started + dt.timedelta(days=90)).isoformat()}
        kinds = ["opened"] + (["warning"] if draw(st.booleans()) else [])
        ending = draw(st.sampled_from([None, "met", "breached", "breached+met", "cancelled"]))
        kinds += ending.split("+") if ending else []
        for kind in kinds:
            moment = started + dt.timedelta(days={"opened": 0, "warning": 89, "breached": 90}.get(kind, 95))
            extra = {"met": {"met_at": moment.isoformat(), "working_days_late": 3},
                     "breached": {"breached_at": deadline["due_at"]}}.get(kind, {})
            events.append(envelope_json(f"deadline.{kind}", case_id, moment, deadline | extra))
    return events


def _topic(event: dict) -> str:
    if event["event_type"].startswith("deadline."):
        return DEADLINE_EVENTS
    return ROUTING_EVENTS if event["event_type"].startswith("notification.forward") else CASE_EVENTS


def _records(events: list[dict]) -> dict[str, list[ConsumerRecord]]:
    by_topic: dict[str, list[ConsumerRecord]] = {CASE_EVENTS: [], ROUTING_EVENTS: [], DEADLINE_EVENTS: []}
    for event in events:
        topic = _topic(event)
        value = json.dumps(event).encode()
        by_topic[topic].append(ConsumerRecord(
            topic=topic, partition=0, offset=len(by_topic[topic]), timestamp=0, timestamp_type=0,
            key=event["case_id"].encode(), value=value, checksum=None, serialized_key_size=36,
            serialized_value_size=len(value), headers=(),
        ))
    return by_topic


# --- applying them --------------------------------------------------------------------------


async def _reset(pool) -> None:
    names = await pool.fetch(
        "SELECT tablename FROM pg_tables WHERE schemaname = 'reporting'"
        " AND tablename NOT IN ('schema_migrations', 'emitted_events', 'outbox', 'outbox_parked')"
    )
    await pool.execute("TRUNCATE " + ", ".join(f"reporting.{r['tablename']}" for r in names))


async def _live(pool, by_topic: dict[str, list[ConsumerRecord]], batches: list[int]) -> None:
    """Through the real IdempotentApplier, each topic in batches of the given sizes."""
    for topic, records in by_topic.items():
        applier = IdempotentApplier(pool, "reporting", consumer_name(topic), HANDLERS[topic])
        sizes, start = iter(batches * (len(records) + 1)), 0
        while start < len(records):
            size = next(sizes)
            assert await applier.apply_batch(records[start:start + size]) == []
            start += size


async def _snapshot(pool) -> dict[str, list]:
    return {table: await table_contents(pool, table) for table in PROJECTION_TABLES}


async def _positions(pool) -> list:
    return sorted(
        (tuple(r.values()) for r in await pool.fetch("SELECT consumer, case_id, applied, held FROM reporting.case_positions")),
        key=repr,
    )


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(
    histories=st.integers(1, 3).flatmap(lambda n: st.tuples(*(case_history(i) for i in range(n)))),
    rand=st.randoms(use_true_random=False),
    batches=st.lists(st.integers(1, 7), min_size=1, max_size=4),
)
async def test_live_shuffled_and_rebuilt_projections_are_identical(pool, histories, rand, batches):
    in_order = [event for history in histories for event in history]

    await _reset(pool)
    await _live(pool, _records(in_order), batches)
    live = await _snapshot(pool)
    live_positions = await _positions(pool)

    # Any order of each topic, some events twice (a replay after a blank broker).
    delivered = in_order + rand.sample(in_order, k=rand.randint(0, len(in_order)))
    rand.shuffle(delivered)
    shuffled_records = _records(delivered)
    await _reset(pool)
    await _live(pool, shuffled_records, batches)
    assert await _snapshot(pool) == live
    assert await _positions(pool) == live_positions

    # `sir report rebuild` folding the same shuffled topics, read one after the other.
    projection = Projection()
    for records in shuffled_records.values():
        for record in records:
            projection.add(record)
    await _reset(pool)
    async with pool.acquire() as conn, conn.transaction():
        await write_projection(conn, projection, {})
    assert await _snapshot(pool) == live
    assert await _positions(pool) == live_positions
    assert projection.skipped == 0
    # Every case event was applied: each case's position is its last sequence.
    last = {}
    for event in in_order:
        if "sequence" in event:
            last[uuid.UUID(event["case_id"])] = event["sequence"]
    assert {(case_id, applied) for _, case_id, applied, _ in live_positions} == set(last.items())


# --- the consumer's gate, event by event ------------------------------------------------------


@pytest.fixture(scope="module")
async def ordered(infra):
    pool = await create_pool(infra.new_database())
    await migrate(pool, "ordertest", COMMON)
    await pool.execute("CREATE TABLE ordertest.effects (n serial, case_id uuid, sequence integer)")
    yield pool
    await pool.close()


def _case_events(count: int) -> list[ConsumerRecord]:
    case_id = uuid.uuid4()
    events = [envelope_json("incident.notified", case_id, dt.datetime(2025, 3, 3, 10, tzinfo=dt.timezone.utc),
                        notification(incident_date="2025-02-28"), sequence=1)]
    events += [
        envelope_json("notification.criteria_assessed", case_id, dt.datetime(2025, 3, 3, 11, n, tzinfo=dt.timezone.utc),
                  {"meets_criteria": True}, sequence=n)
        for n in range(2, count + 1)
    ]
    return _records(events)[CASE_EVENTS]


def _sequence(record: ConsumerRecord) -> int:
    return json.loads(record.value)["sequence"]


async def _applied(pool, record: ConsumerRecord) -> list[int]:
    case_id = uuid.UUID(json.loads(record.value)["case_id"])
    rows = await pool.fetch("SELECT sequence FROM ordertest.effects WHERE case_id = $1 ORDER BY n", case_id)
    return [r["sequence"] for r in rows]


def _ordertest_applier(pool, handler=None) -> IdempotentApplier:
    async def record_effect(conn, event, delivery):
        await conn.execute("INSERT INTO ordertest.effects (case_id, sequence) VALUES ($1, $2)",
                           event.case_id, event.sequence)

    return IdempotentApplier(pool, "ordertest", "test", handler or record_effect, max_attempts=2,
                             retry_base_seconds=0.01)


async def test_an_early_event_is_held_processed_and_applied_when_its_turn_comes(ordered):
    one, two, three = _case_events(3)
    applier = _ordertest_applier(ordered)
    assert await applier.apply_batch([three]) == []
    assert await _applied(ordered, one) == []
    # Held, yet processed: its offset may be committed, and a redelivery is a duplicate.
    assert await ordered.fetchval(
        "SELECT count(*) FROM ordertest.processed_events WHERE event_id = $1",
        uuid.UUID(json.loads(three.value)["event_id"]),
    ) == 1
    assert await applier.apply_batch([three, two]) == []
    assert await _applied(ordered, one) == []
    assert await applier.apply_batch([one]) == []
    assert await _applied(ordered, one) == [1, 2, 3]
    assert await applier.apply_batch([one, two, three]) == []  # a replay: nothing again
    assert await _applied(ordered, one) == [1, 2, 3]


async def test_a_failing_event_waits_its_case_until_it_is_published_again(ordered):
    one, two, three, four = _case_events(4)
    broken = True

    async def fails_on_two(conn, event, delivery):
        if event.sequence == 2 and broken:
            raise ValueError("cannot apply")
        await conn.execute("INSERT INTO ordertest.effects (case_id, sequence) VALUES ($1, $2)",
                           event.case_id, event.sequence)

    applier = _ordertest_applier(ordered, fails_on_two)
    dead = await applier.apply_batch([three, four, two, one])
    # The event-by-event path: 2 fails every attempt and goes to the dead letters; 3 and
    # 4 (released by 2, held again) wait for it; other cases are not held up.
    assert [(_sequence(record), error.split(":")[0]) for record, error in dead] == [(2, "failed 2 attempts")]
    assert await _applied(ordered, one) == [1]
    broken = False  # fixed and deployed: the dead letter is published again
    assert await applier.apply_batch([dead[0][0]]) == []
    assert await _applied(ordered, one) == [1, 2, 3, 4]


async def test_a_held_event_that_fails_goes_to_the_dead_letters_as_it_was_delivered(ordered):
    one, two, three = _case_events(3)

    async def fails_on_three(conn, event, delivery):
        if event.sequence == 3:
            raise ValueError("cannot apply")
        await conn.execute("INSERT INTO ordertest.effects (case_id, sequence) VALUES ($1, $2)",
                           event.case_id, event.sequence)

    applier = _ordertest_applier(ordered, fails_on_three)
    assert await applier.apply_batch([three, two]) == []
    dead = await applier.apply_batch([one])
    assert [(r.topic, r.offset, r.value, r.key) for r, _ in dead] == [(three.topic, three.offset, three.value, three.key)]
    assert await _applied(ordered, one) == [1, 2]
    # Not processed: published again (once fixed), it is applied.
    assert await ordered.fetchval(
        "SELECT count(*) FROM ordertest.processed_events WHERE event_id = $1",
        uuid.UUID(json.loads(three.value)["event_id"]),
    ) == 0


async def test_events_without_a_sequence_are_applied_as_they_come(ordered):
    """Recorded before sequences existed: applied in delivery order, each counting as the
    case's next, so the case's first numbered event (3) follows them."""
    one, two, three = (_edited(r, lambda e: e) for r in _case_events(3))
    first, second = (_edited(r, lambda e: {k: v for k, v in e.items() if k != "sequence"}) for r in (one, two))
    applier = _ordertest_applier(ordered)
    assert await applier.apply_batch([first, second]) == []
    assert await _applied(ordered, first) == [None, None]
    assert await applier.apply_batch([three]) == []
    assert await _applied(ordered, first) == [None, None, 3]


def _edited(record: ConsumerRecord, change) -> ConsumerRecord:
    return dataclasses.replace(record, value=json.dumps(change(json.loads(record.value))).encode())


# --- intake's store: sequences for the events stored before them ---------------------------


async def test_events_stored_before_sequences_are_numbered_by_the_migration(infra):
    from services.intake import repository
    from services.intake.app import SERVICE as INTAKE

    pool = await create_pool(infra.new_database())
    try:
        first = INTAKE.migrations / "001_event_store.sql"
        await pool.execute(f"CREATE SCHEMA intake; {first.read_text().replace('{schema}', 'intake')}")
        await pool.execute("CREATE TABLE intake.schema_migrations (name text PRIMARY KEY, applied_at timestamptz)")
        await pool.execute("INSERT INTO intake.schema_migrations VALUES ('migrations/001_event_store.sql', now())")
        case_a, case_b = uuid.uuid4(), uuid.uuid4()
        received = dt.datetime(2024, 5, 6, 10, tzinfo=dt.timezone.utc)
        old = [  # as stored before today: interleaved cases, a forwarding record among them
            envelope_json("incident.notified", case_a, received, notification(incident_date="2024-05-01")),
            envelope_json("incident.notified", case_b, received, notification(incident_date="2024-05-01")),
            envelope_json("notification.forwarded", case_a, received, {
                "recipient": "scottish-government", "channel": "topic", "attempts": 1,
                "delivered_at": received.isoformat()}),
            envelope_json("notification.criteria_assessed", case_a, received, {"meets_criteria": True}),
            envelope_json("case.closed", case_b, received, {"reason": "withdrawn"}),
        ]
        for case_id in (case_a, case_b):
            await pool.execute("INSERT INTO intake.cases (case_id, local_authority) VALUES ($1, 'glasgow-city')", case_id)
        for event in old:
            await pool.execute(
                "INSERT INTO intake.events (event_id, case_id, event_type, local_authority, received_at, recorded_at,"
                " envelope) VALUES ($1, $2, $3, 'glasgow-city', $4, $4, $5)",
                uuid.UUID(event["event_id"]), uuid.UUID(event["case_id"]), event["event_type"], received, event,
            )
        await migrate(pool, "intake", COMMON, INTAKE.migrations)

        _, a_events = await repository.read_case(pool, case_a)
        assert [(e["event_type"], e.get("sequence")) for e in a_events] == [
            ("incident.notified", 1), ("notification.forwarded", None), ("notification.criteria_assessed", 2),
        ]
        _, b_events = await repository.read_case(pool, case_b)
        assert [e["sequence"] for e in b_events] == [1, 2]
        # The stored envelopes are untouched (immutable); the column carries the number.
        assert await pool.fetchval("SELECT count(*) FROM intake.events WHERE envelope ? 'sequence'") == 0
        with pytest.raises(Exception, match="never edited"):
            await pool.execute("UPDATE intake.events SET sequence = 9")
    finally:
        await pool.close()


async def test_a_consumer_that_applied_events_before_sequences_carries_on_from_them(infra, tmp_path):
    """Upgrading a running platform: what a consumer applied before the numbering counts
    as applied, so the case's next (numbered) event is applied, not held for ever."""
    import shutil

    from services.intake.app import SERVICE as INTAKE

    pool = await create_pool(infra.new_database())
    try:
        event_store = (INTAKE.migrations / "001_event_store.sql").read_text().replace("{schema}", "intake")
        await pool.execute(f"CREATE SCHEMA intake; {event_store}")
        before = tmp_path / "common"  # the consumer's common tables as they were
        before.mkdir()
        for path in sorted(COMMON.glob("*.sql"))[:2]:
            shutil.copy(path, before)
        await migrate(pool, "ordertest", before)
        case_id = uuid.uuid4()
        await pool.execute("INSERT INTO intake.cases (case_id, local_authority) VALUES ($1, 'glasgow-city')", case_id)
        old = _case_events(3)[:2]
        for record in old:
            event = json.loads(record.value)
            event = {k: v for k, v in event.items() if k != "sequence"} | {"case_id": str(case_id)}
            await pool.execute(
                "INSERT INTO intake.events (event_id, case_id, event_type, local_authority, received_at, recorded_at,"
                " envelope) VALUES ($1, $2, $3, 'glasgow-city', now(), now(), $4)",
                uuid.UUID(event["event_id"]), case_id, event["event_type"], event,
            )
            await pool.execute(
                "INSERT INTO ordertest.processed_events (consumer, event_id, topic, partition, \"offset\")"
                " VALUES ('test', $1, 'sir.case-events.v1', 0, 0)", uuid.UUID(event["event_id"]),
            )
        await migrate(pool, "ordertest", COMMON)
        assert await pool.fetchval(
            "SELECT applied FROM ordertest.case_positions WHERE consumer = 'test' AND case_id = $1", case_id
        ) == 2
    finally:
        await pool.close()


async def test_the_deadlines_service_gives_the_same_deadlines_and_events_in_any_delivery_order(infra):
    """The gate is in the consumer shell, so every service's projection is order-safe:
    here the deadlines service, fed one case's review cycle in order and then reversed
    with duplicates (as a replay after a newer event would deliver it)."""
    from services.deadlines.app import SERVICE as DEADLINES
    from services.deadlines.handlers import on_event

    case_id, day = uuid.uuid4(), dt.datetime(2026, 9, 7, 10, tzinfo=dt.timezone.utc)
    steps = [("incident.notified", mappa_notification(incident_date="2026-09-07")),
             ("review.submitted", review()), ("review.additional_info_requested", {}),
             ("review.additional_info_provided", {}), ("review.responded", {"outcome": "comprehensive_review_required"}),
             ("review.submitted", review(review_type="comprehensive")), ("case.closed", {"reason": "withdrawn"})]
    events = [envelope_json(event_type, case_id, day + dt.timedelta(days=3 * n), data, sequence=n + 1)
              for n, (event_type, data) in enumerate(steps)]
    records = _records(events)[CASE_EVENTS]

    async def outcome(delivered: list[ConsumerRecord]) -> tuple[list, list]:
        pool = await create_pool(infra.new_database())
        try:
            await migrate(pool, DEADLINES.name, COMMON, DEADLINES.migrations)
            applier = IdempotentApplier(pool, "deadlines", "test", on_event)
            for record in delivered:
                assert await applier.apply_batch([record]) == []
            rows = await pool.fetch(
                "SELECT rule, sequence, status, started_at, due_at, met_at, cancelled_at, working_days_late"
                " FROM deadlines.deadlines ORDER BY rule, sequence"
            )
            emitted = await pool.fetch("SELECT value FROM deadlines.emitted_events")
            return [tuple(r.values()) for r in rows], sorted(
                (e["event_id"], e["event_type"], e.get("causation_id"), json.dumps(e["data"], sort_keys=True))
                for e in (json.loads(r["value"]) for r in emitted)
            )
        finally:
            await pool.close()

    in_order = await outcome(records)
    assert len(in_order[0]) >= 6
    assert await outcome(records[::-1] + records[2:5]) == in_order


async def test_a_case_concluded_before_its_older_events_are_replayed_stays_concluded(infra):
    """Issue 11's symptom on a real broker: a blank Tansu gets the case's newest event (the
    response that concludes it) first, then the replay of its older ones. Live reporting
    and `sir report rebuild` both show the case concluded, with the same rows."""
    from aiokafka import AIOKafkaProducer

    from services.reporting.commands import rebuild
    from shared import devstack
    from tests.integration.conftest import run_services
    from tests.integration.helpers import eventually

    case_id, day = uuid.uuid4(), dt.datetime(2026, 6, 1, 10, tzinfo=dt.timezone.utc)
    steps = [("incident.notified", notification(incident_date="2026-05-29")), ("review.submitted", review()),
             ("review.additional_info_requested", {}), ("review.additional_info_provided", {}),
             ("review.responded", {"outcome": "concluded"})]
    events = [envelope_json(event_type, case_id, day + dt.timedelta(days=5 * n), data, sequence=n + 1)
              for n, (event_type, data) in enumerate(steps)]
    delivered = [events[-1]] + events  # the new event, then the whole store replayed

    with devstack.Tansu() as broker:
        settings = infra.settings(infra.new_database(), kafka_bootstrap=broker.bootstrap)
        async with run_services(settings, ("reporting",)) as platform:
            producer = AIOKafkaProducer(bootstrap_servers=broker.bootstrap, enable_idempotence=False)
            await producer.start()
            try:
                for event in delivered:
                    await producer.send_and_wait(CASE_EVENTS, json.dumps(event).encode(), key=str(case_id).encode())
            finally:
                await producer.stop()

            async def state():
                return await platform.pool.fetchval(
                    "SELECT state FROM reporting.notifications WHERE case_id = $1", case_id)

            async def all_applied():
                return await platform.pool.fetchval(
                    "SELECT applied = 5 FROM reporting.case_positions WHERE case_id = $1", case_id)

            await eventually(all_applied, what="every event of the case applied")
            assert await state() == "concluded"
            live = await _snapshot(platform.pool)
            # The response found its review (applied on top of an empty case, it would not).
            assert await platform.pool.fetchval(
                "SELECT outcome FROM reporting.reviews WHERE case_id = $1", case_id) == "concluded"

            await rebuild(platform.pool, settings, idle_polls=2, poll_ms=200)
            assert await _snapshot(platform.pool) == live
            assert await state() == "concluded"
