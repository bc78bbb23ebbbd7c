"""kill -9 of each service, and PostgreSQL restarted, while notifications pour in: 0 events
lost and 0 duplicate effects (docs/operations.md, "Faults the platform survives").

Each test posts notifications from concurrent clients (each retried with its
Idempotency-Key on a connection error or a 5xx, as a council's system would), strikes
once a third of them are accepted, brings the part back, and then checks every accepted
notification end to end (tests/faults/load.py).
"""

from __future__ import annotations

import asyncio

import pytest

from tests.faults.load import Load, assert_nothing_lost_nothing_twice

NOTIFICATIONS = 120


async def _under_load(platform, strike) -> Load:
    load = Load(platform.services["intake"].url, platform.tokens["council"])
    posting = asyncio.create_task(load.run(NOTIFICATIONS))
    try:
        await asyncio.wait_for(load.until_accepted(NOTIFICATIONS // 3), 60)
        await strike()
    finally:
        await asyncio.wait_for(posting, 180)
    return load


@pytest.mark.parametrize("service", ["intake", "routing", "deadlines", "reporting"])
async def test_a_service_killed_during_load_loses_nothing_and_does_nothing_twice(fault_platform, service):
    async def kill_and_restart():
        fault_platform.kill(service)
        await asyncio.sleep(0.5)  # a moment down: the load keeps coming (or retrying)
        fault_platform.start(service)
        await fault_platform.wait_ready(service)

    load = await _under_load(fault_platform, kill_and_restart)
    if service == "intake":
        assert load.retries > 0, "the clients never saw intake down: the kill came too late"
    await assert_nothing_lost_nothing_twice(fault_platform.database_url, fault_platform.bootstrap, load)


async def test_postgresql_restarted_during_load_loses_nothing_and_does_nothing_twice(fault_platform):
    async def restart_postgres():
        # Off the event loop: stopping waits for the server, the clients keep retrying.
        await asyncio.to_thread(fault_platform.postgres.restart)

    load = await _under_load(fault_platform, restart_postgres)
    assert load.retries > 0, "the clients never saw the database away: the restart came too late"
    await fault_platform.wait_ready()
    await assert_nothing_lost_nothing_twice(fault_platform.database_url, fault_platform.bootstrap, load)
