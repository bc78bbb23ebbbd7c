"""The record of emitted events (issue 11) and a relay that cannot be blocked (issue 13),
against real PostgreSQL and Tansu: parked rows, `sir replay` of every service's record,
and a broker replaced by a blank one while notifications are being posted."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging

import asyncpg
import pytest

from services import cli
from services.reporting import commands, repository
from shared import devstack
from shared.auth import issue_token
from shared.db import COMMON, create_pool, migrate
from shared.events import CASE_EVENT
from shared.messaging import CASE_EVENTS, ROUTING_EVENTS, outbound_topic
from shared.outbox import EventTooLarge, enqueue, list_parked
from shared.settings import get_settings
from tests.factories import envelope, mappa_notification, notification
from tests.integration.conftest import bearer, run_services
from tests.integration.helpers import eventually, find_records, header, metric_value

RECORDING = ("intake", "routing", "deadlines")
ALL = ("intake", "routing", "deadlines", "reporting")


def _oversized_event(size: int = 1_300_000):
    """A valid event whose serialised form is `size` bytes or more (as the 1.26 MB review
    of issue 13 was), built past the models' length limits: one stored before them."""
    event = CASE_EVENT.validate_python(envelope("incident.notified", notification()))
    return event.model_copy(update={"data": event.data.model_copy(update={"council_reference": "x" * size})})


@contextlib.contextmanager
def _sir_environment(settings, monkeypatch):
    monkeypatch.setenv("DATABASE_URL", settings.database_url)
    monkeypatch.setenv("KAFKA_BOOTSTRAP", settings.kafka_bootstrap)
    monkeypatch.setenv("KAFKA_PARTITIONS", str(settings.kafka_partitions))
    get_settings.cache_clear()
    try:
        yield
    finally:
        get_settings.cache_clear()


async def test_an_event_past_the_size_limit_is_refused_before_it_is_stored(infra):
    settings = infra.settings(infra.new_database())
    pool = await create_pool(settings.database_url)
    try:
        await migrate(pool, "sizetest", COMMON)
        async with pool.acquire() as conn:
            with pytest.raises(EventTooLarge, match="limit is 1000000 bytes"):
                async with conn.transaction():
                    await enqueue(conn, "sizetest", _oversized_event(), "test")
        assert await pool.fetchval("SELECT count(*) FROM sizetest.emitted_events") == 0
    finally:
        await pool.close()


async def test_the_record_refuses_edits(infra):
    settings = infra.settings(infra.new_database())
    pool = await create_pool(settings.database_url)
    try:
        await migrate(pool, "immutable", COMMON)
        async with pool.acquire() as conn, conn.transaction():
            await enqueue(conn, "immutable", CASE_EVENT.validate_python(envelope("incident.notified", notification())), "test")
        for change in ("UPDATE immutable.emitted_events SET topic = 'x'", "DELETE FROM immutable.emitted_events",
                       "TRUNCATE immutable.emitted_events CASCADE"):
            with pytest.raises(asyncpg.RaiseError, match="never edited or deleted"):
                await pool.execute(change)
    finally:
        await pool.close()


async def test_the_migration_carries_the_old_outbox_and_intakes_store_into_the_record(infra, tmp_path):
    """A database as it was before the record: intake's event store with one published
    event, and one event still waiting in the old outbox."""
    from services.intake.app import SERVICE

    old_common = tmp_path / "common"
    old_common.mkdir()
    for name in ("001_outbox.sql", "002_processed_events.sql"):
        (old_common / name).write_text((COMMON / name).read_text())
    settings = infra.settings(infra.new_database())
    pool = await create_pool(settings.database_url)
    try:
        await migrate(pool, "intake", old_common, SERVICE.migrations)
        published, waiting = (CASE_EVENT.validate_python(envelope("incident.notified", notification())) for _ in range(2))
        for event in (published, waiting):
            await pool.execute("INSERT INTO intake.cases (case_id, local_authority) VALUES ($1, 'glasgow-city')", event.case_id)
            await pool.execute(
                "INSERT INTO intake.events (event_id, case_id, event_type, local_authority, received_at, recorded_at, envelope)"
                " VALUES ($1, $2, $3, $4, $5, $6, $7)",
                event.event_id, event.case_id, event.event_type, event.local_authority, event.received_at,
                event.recorded_at, event.model_dump(mode="json"),
            )
        await pool.execute(
            "INSERT INTO intake.outbox (topic, key, value, headers) VALUES ($1, $2, $3, $4)",
            CASE_EVENTS, str(waiting.case_id).encode(), waiting.model_dump_json().encode(),
            {"ce_id": str(waiting.event_id), "ce_type": waiting.event_type},
        )

        assert await migrate(pool, "intake", COMMON, SERVICE.migrations) == [
            "common/003_event_record.sql", "common/010_case_positions.sql",
            "common/011_outbox_queue_without_foreign_key.sql"]

        rows = await pool.fetch("SELECT position, event_id, topic, value, headers FROM intake.emitted_events ORDER BY position")
        assert [r["event_id"] for r in rows] == [published.event_id, waiting.event_id]
        assert json.loads(rows[0]["value"])["event_id"] == str(published.event_id)
        assert rows[0]["headers"]["ce_id"] == str(published.event_id) and rows[0]["topic"] == CASE_EVENTS
        assert await pool.fetchval("SELECT array_agg(position) FROM intake.outbox") == [rows[1]["position"]]
    finally:
        await pool.close()


async def test_a_row_the_broker_refuses_is_parked_and_the_next_notification_goes_out(infra, monkeypatch, capsys):
    settings = infra.settings(infra.new_database())
    async with run_services(settings, ("intake",)) as platform:
        token = await issue_token(platform.pool, "council", local_authority="glasgow-city")
        parked_before = metric_value("sir_outbox_parked_total", schema="intake", topic=CASE_EVENTS)
        big = _oversized_event()
        async with platform.pool.acquire() as conn, conn.transaction():
            # Stored past today's limit, as before intake checked sizes: the producer refuses it.
            await enqueue(conn, "intake", big, "intake", max_bytes=2_000_000)

        answer = await platform.clients["intake"].post("/v1/notifications", json=notification(), headers=bearer(token))
        assert answer.status_code == 201
        await find_records(settings.kafka_bootstrap, CASE_EVENTS, lambda r: header(r, "ce_id") == answer.json()["event_id"])

        [parked] = await eventually(lambda: list_parked(platform.pool, RECORDING), what="the refused row to be parked")
        assert parked["event_id"] == big.event_id and "MessageSizeTooLargeError" in parked["error"]
        assert metric_value("sir_outbox_parked_total", schema="intake", topic=CASE_EVENTS) == parked_before + 1

        with _sir_environment(settings, monkeypatch):
            assert await asyncio.to_thread(cli.main, ["outbox", "parked"]) == 0
            assert parked["id"] in capsys.readouterr().out
            # Retried, it is refused again and parked again; discarded, it stays in the record.
            assert await asyncio.to_thread(cli.main, ["outbox", "retry", parked["id"]]) == 0
            [again] = await eventually(lambda: list_parked(platform.pool, RECORDING), what="the retried row to be parked again")
            assert again["id"] == parked["id"]
            assert await asyncio.to_thread(cli.main, ["outbox", "discard", parked["id"]]) == 0
            assert await asyncio.to_thread(cli.main, ["outbox", "discard", parked["id"]]) == 1  # decided already
        assert await list_parked(platform.pool, RECORDING) == []
        assert await platform.pool.fetchval(
            "SELECT count(*) FROM intake.emitted_events WHERE event_id = $1", big.event_id) == 1
        assert await platform.pool.fetch(
            "SELECT decision FROM intake.outbox_parked ORDER BY id") == [("retried",), ("discarded",)]
        assert (await platform.pool.fetchval("SELECT count(*) FROM intake.outbox")) == 0


async def _recorded_ids(pool, schema: str) -> dict[str, set[str]]:
    """The event ids (ce_id) of a service's record, by topic."""
    by_topic: dict[str, set[str]] = {}
    for row in await pool.fetch(f"SELECT topic, headers->>'ce_id' AS id FROM {schema}.emitted_events"):
        by_topic.setdefault(row["topic"], set()).add(row["id"])
    return by_topic


async def _on_topics(bootstrap: str, pool) -> dict[str, list[int]]:
    """Every recorded event of every service is on its topic; returns the timestamps (set
    by the producer as it sent them) of each service's records there."""
    sent_at: dict[str, list[int]] = {}
    for schema in RECORDING:
        for topic, ids in (await _recorded_ids(pool, schema)).items():
            found = await find_records(bootstrap, topic, lambda r, ids=ids: header(r, "ce_id") in ids, count=len(ids), timeout=60)
            assert {header(r, "ce_id") for r in found} == ids, (schema, topic)
            sent_at.setdefault(schema, []).extend(r.timestamp for r in found)
    return sent_at


async def _stable_projections(pool, rounds: int = 120) -> dict:
    """The projections once two readings half a second apart agree (on a loaded machine a
    derived event can still be on its way when the counts first match)."""
    previous = await _projections(pool)
    for _ in range(rounds):
        await asyncio.sleep(0.5)
        current = await _projections(pool)
        if current == previous:
            return current
        previous = current
    raise AssertionError("the projections never settled")


async def _projections(pool) -> dict:
    async with pool.acquire() as conn:
        return {t: await repository.table_contents(conn, t) for t in ("notifications", "forwards", "deadlines")}


async def _settled(platform, notifications: int) -> bool:
    """Every service applied every notification, and reporting every routing and deadline
    event recorded."""
    pool = platform.pool
    for schema in ("routing", "deadlines", "reporting"):
        seen = await pool.fetchval(f"SELECT count(*) FROM {schema}.processed_events WHERE topic = $1", CASE_EVENTS)
        if seen != notifications:
            return False
    waiting = sum([await pool.fetchval(f"SELECT count(*) FROM {s}.outbox") for s in RECORDING])
    recorded = await pool.fetchval(
        "SELECT count(*) FROM (SELECT event_id FROM routing.emitted_events WHERE topic = $1"
        " UNION ALL SELECT event_id FROM deadlines.emitted_events) e", ROUTING_EVENTS)
    applied = await pool.fetchval("SELECT count(*) FROM reporting.processed_events WHERE topic <> $1", CASE_EVENTS)
    # Deadlines meets its forwarding deadlines from routing's events: until it has applied
    # them all, more deadline events may come.
    forwards = await pool.fetchval("SELECT count(*) FROM routing.emitted_events WHERE topic = $1", ROUTING_EVENTS)
    forwards_applied = await pool.fetchval(
        "SELECT count(*) FROM deadlines.processed_events WHERE topic = $1", ROUTING_EVENTS)
    return not waiting and recorded == applied and forwards == forwards_applied


async def test_sir_replay_restores_routings_and_deadlines_events(infra, monkeypatch):
    if infra.tansu is None:
        pytest.skip("needs a broker this test can restart: runs with the suite's own Tansu")
    with devstack.Tansu() as broker:
        settings = infra.settings(infra.new_database(), kafka_bootstrap=broker.bootstrap)
        async with run_services(settings, ALL) as platform:
            token = await issue_token(platform.pool, "council", local_authority="glasgow-city")
            for body in (mappa_notification(), notification()):
                answer = await platform.clients["intake"].post("/v1/notifications", json=body, headers=bearer(token))
                assert answer.status_code == 201
            await eventually(lambda: _settled(platform, 2), timeout=90, what="every service to apply both")
            before = await _stable_projections(platform.pool)
            assert before["forwards"] and before["deadlines"]
            routed = await _recorded_ids(platform.pool, "routing")
            assert routed[ROUTING_EVENTS] and routed[outbound_topic("scottish-government")]

        broker.restart()  # same port, nothing on it
        with _sir_environment(settings, monkeypatch):
            assert await asyncio.to_thread(cli.main, ["replay"]) == 0
        pool = await create_pool(settings.database_url)
        try:
            sent_at = await _on_topics(broker.bootstrap, pool)
            # Causal order: all of intake's record, then routing's, then deadlines'.
            assert max(sent_at["intake"]) <= min(sent_at["routing"])
            assert max(sent_at["routing"]) <= min(sent_at["deadlines"])
            # Reporting rebuilt from the restored topics: the forwards and deadlines are back.
            await commands.rebuild(pool, settings, idle_polls=2, poll_ms=200)
            after = await _projections(pool)
            for table in before:
                assert sorted(map(tuple, after[table])) == sorted(map(tuple, before[table])), table
        finally:
            await pool.close()


async def test_a_broker_replaced_while_notifications_arrive_loses_nothing_and_applies_each_once(infra, caplog):
    if infra.tansu is None:
        pytest.skip("needs a broker this test can restart: runs with the suite's own Tansu")
    # The restore's progress is said at INFO: heard whatever level an earlier test left.
    caplog.set_level(logging.INFO, logger="shared.record")
    total, restart_after = 30, 10
    with devstack.Tansu() as broker:
        settings = infra.settings(infra.new_database(), kafka_bootstrap=broker.bootstrap)
        async with run_services(settings, ALL) as platform:
            token = await issue_token(platform.pool, "council", local_authority="glasgow-city")
            posted: list[str] = []
            restarted = asyncio.Event()

            async def post_all():
                for i in range(total):
                    body = (mappa_notification if i % 3 == 0 else notification)(council_reference=f"R-{i}")
                    answer = await platform.clients["intake"].post("/v1/notifications", json=body, headers=bearer(token))
                    assert answer.status_code == 201, answer.text
                    posted.append(answer.json()["case_id"])
                    if len(posted) == restart_after:
                        await asyncio.to_thread(broker.restart)  # killed; a blank one on the same port
                        restarted.set()

            await post_all()
            assert restarted.is_set()
            await eventually(lambda: _settled(platform, total), timeout=180, what="every service to apply every notification")

            pool = platform.pool
            await _on_topics(broker.bootstrap, pool)  # every recorded event back on the topics
            assert await pool.fetchval("SELECT count(*) FROM intake.events") == total
            # Effects once each: one routing delivery per recipient, one reporting row per case.
            mappa = len(range(0, total, 3))
            assert await pool.fetchval("SELECT count(*) FROM routing.deliveries") == total + mappa
            assert await pool.fetchval("SELECT count(*) FROM reporting.notifications") == total
            assert await pool.fetchval(
                "SELECT count(DISTINCT case_id) FROM deadlines.deadlines") == total
            deadline_rows = await pool.fetchval("SELECT count(*) FROM deadlines.deadlines")
            opened = await pool.fetchval(
                "SELECT count(*) FROM deadlines.emitted_events WHERE event_type = 'deadline.opened'")
            assert deadline_rows == opened
            # Restored by the services themselves, nobody typing a command; said in the log.
            assert "has lost its topics" in caplog.text and "restore: " in caplog.text
