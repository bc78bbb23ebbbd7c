"""Quiet under outage: with the broker away, the services' logs grow by a bounded number
of lines (shared/logs.RepeatFilter), not by one line per retry of every loop."""

from __future__ import annotations

import asyncio
import os
import subprocess
import uuid

from shared import devstack
from tests.faults.conftest import SIR, FaultPlatform
from tests.integration.helpers import Service

OUTAGE_SECONDS = 6
SERVICES = ("intake", "routing")  # a relay and a relay with a consumer


def _lines(platform: FaultPlatform) -> int:
    return sum(len(s.log.read_bytes().splitlines()) for s in platform.services.values())


async def _lines_during_outage(private_postgres, logs, repeat_seconds: str) -> int:
    _, server_dsn = private_postgres
    database_url = server_dsn.rsplit("/", 1)[0] + f"/sir_quiet_{uuid.uuid4().hex[:8]}"
    devstack.ensure_database(database_url)
    tansu = devstack.Tansu(log_path=logs / "tansu.log").start()
    env = dict(
        os.environ, DATABASE_URL=database_url, KAFKA_BOOTSTRAP=tansu.bootstrap, KAFKA_PARTITIONS="3",
        SIR_SESSION_TIMEOUT_MS="3000", SIR_HEARTBEAT_INTERVAL_MS="1000", SIR_OUTBOX_POLL_SECONDS="0.2",
        SIR_LOG_LEVEL="INFO", SIR_LOG_REPEAT_SECONDS=repeat_seconds,
    )
    services = {n: Service(n, devstack.free_port(), logs / f"{n}-{repeat_seconds}.log") for n in SERVICES}
    platform = FaultPlatform(database_url, tansu.bootstrap, env, services, None)  # type: ignore[arg-type]
    await asyncio.to_thread(subprocess.run, [*SIR, "migrate"], env=env, check=True, capture_output=True, timeout=120)
    try:
        for name in SERVICES:
            platform.start(name)
        await platform.wait_ready()
        before = _lines(platform)
        tansu.stop()
        await asyncio.sleep(OUTAGE_SECONDS)  # the outage itself is what is measured
        during = _lines(platform) - before
        tansu.start()
        return during
    finally:
        for name in SERVICES:
            platform.stop(name)
        tansu.stop()


async def test_a_broker_outage_writes_a_bounded_number_of_lines(private_postgres, tmp_path):
    during = await _lines_during_outage(private_postgres, tmp_path, "60")
    # Each kind of warning once per process (aiokafka's, the relay's, the consumer's):
    # a few dozen at most, whatever the outage's length. With SIR_LOG_REPEAT_SECONDS=0
    # (every line) the same 6 s wrote 449 lines here (75 a second, 270,000 an hour);
    # with the filter, 10.
    assert during <= 40, f"{during} lines in {OUTAGE_SECONDS} s of broker outage"

