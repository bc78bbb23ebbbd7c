"""The outbox relay against a real broker: nothing lost while the broker is away, and
one case's events never reordered, even with two relays at once."""

import asyncio
import datetime as dt
import json
import uuid

import pytest

from shared import devstack
from shared.auth import issue_token
from shared.db import COMMON, create_pool, migrate
from shared.events import CASE_EVENT
from shared.messaging import CASE_EVENTS
from shared.outbox import OutboxRelay, backlog, enqueue
from tests.factories import envelope, notification
from tests.integration.conftest import bearer, run_services
from tests.integration.helpers import eventually, find_records, header


async def test_intake_accepts_while_the_broker_is_away_and_the_outbox_drains_after(infra):
    if infra.tansu is None:
        pytest.skip("needs a broker this test can stop: runs with the suite's own Tansu")
    with devstack.Tansu() as broker:
        settings = infra.settings(infra.new_database(), kafka_bootstrap=broker.bootstrap)
        async with run_services(settings, ("intake",)) as platform:
            token = await issue_token(platform.pool, "council", local_authority="highland")
            broker.stop()
            answer = await platform.clients["intake"].post(
                "/v1/notifications", json=notification(), headers=bearer(token)
            )
            assert answer.status_code == 201
            assert (await backlog(platform.pool, "intake"))[0] == 1

            broker.start()  # same port; in-memory storage, so a blank broker
            await eventually(lambda: _empty(platform.pool), timeout=60, what="the outbox to drain")
            [record] = await find_records(
                broker.bootstrap, CASE_EVENTS, lambda r: header(r, "ce_id") == answer.json()["event_id"]
            )
            assert json.loads(record.value)["case_id"] == answer.json()["case_id"]


async def _empty(pool) -> bool:
    return (await backlog(pool, "intake"))[0] == 0


async def test_two_relays_keep_each_cases_order_and_lose_nothing(infra):
    settings = infra.settings(infra.new_database())
    pool = await create_pool(settings.database_url)
    try:
        await migrate(pool, "relaytest", COMMON)
        cases = [uuid.uuid4() for _ in range(20)]
        keys = {str(case_id).encode() for case_id in cases}
        per_case = 25
        tag = uuid.uuid4().hex
        base = dt.datetime(2026, 1, 1, tzinfo=dt.timezone.utc)
        for sequence in range(per_case):
            async with pool.acquire() as conn, conn.transaction():
                for case_id in cases:
                    event = envelope("incident.notified", notification(council_reference=f"{tag}-{sequence}"), case_id=case_id)
                    event["recorded_at"] = (base + dt.timedelta(seconds=sequence)).isoformat()
                    await enqueue(conn, "relaytest", CASE_EVENT.validate_python(event), "test")

        relays = [OutboxRelay(pool, "relaytest", settings.kafka_bootstrap, batch_size=37) for _ in range(2)]
        await asyncio.gather(*(relay.start() for relay in relays))
        try:
            await eventually(lambda: _drained(pool), timeout=60, what="both relays to drain the outbox")
        finally:
            await asyncio.gather(*(relay.stop() for relay in relays))

        records = await find_records(
            settings.kafka_bootstrap, CASE_EVENTS,
            lambda r: r.key in keys,
            count=len(cases) * per_case,
        )
        sequences: dict[str, list[int]] = {}
        for record in sorted(records, key=lambda r: (r.partition, r.offset)):
            value = json.loads(record.value)
            sequences.setdefault(value["case_id"], []).append(int(value["data"]["council_reference"].rsplit("-", 1)[1]))
        assert len(sequences) == len(cases)
        for seen in sequences.values():
            assert seen == list(range(per_case))  # all there, in order, none twice
    finally:
        await pool.close()


async def _drained(pool) -> bool:
    return (await backlog(pool, "relaytest"))[0] == 0


async def test_a_relay_stopped_at_any_moment_ends_and_gives_its_connections_back(infra):
    """A cancel while the relay takes its listener, or one arriving just as a wake does,
    once left the listener out of the pool (whose close then waited for ever) or the relay
    running on (`sir import`'s relay process never ended)."""
    settings = infra.settings(infra.new_database())
    pool = await create_pool(settings.database_url, max_size=2)
    try:
        await migrate(pool, "relaystop", COMMON)
        for delay in (0, 0, 0.001, 0.005, 0.02, 0.1, 0.3):
            relay = OutboxRelay(pool, "relaystop", settings.kafka_bootstrap, poll_seconds=0.01)
            await relay.start()
            await asyncio.sleep(delay)
            relay._wake.set()  # a wake at the moment of the cancel
            async with asyncio.timeout(15):
                await relay.stop()
            assert pool.get_idle_size() == pool.get_size(), f"a connection not given back (stopped after {delay}s)"
    finally:
        async with asyncio.timeout(15):
            await pool.close()
