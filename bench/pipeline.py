"""Benchmark: notifications posted through intake until all three consumers applied them.

Starts its own Tansu, a fresh database on the local server and the four services as
processes (as `sir up` does), posts N notifications with C concurrent clients, and prints
intake's throughput and the end-to-end latency from the event's recording to the last of
routing, deadlines and reporting applying it (both sides read off the database clock).

    .venv/bin/python bench/pipeline.py --notifications 2000 --concurrency 20
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import statistics
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator

import asyncpg
import httpx

from shared import devstack
from shared.auth import issue_token
from shared.db import create_pool
from shared.settings import SERVICES

SERVER = os.environ.get("BENCH_SERVER", "postgresql://postgres@127.0.0.1:5432/postgres")

NOTIFICATION = {
    "council_reference": "BENCH", "incident_date": "2026-11-02", "criterion": "charged_with_serious_offence",
    "incident_type": "serious_assault", "order_type": "community_payback_order", "subject_role": "perpetrator",
    "mappa": {"applies": False}, "domestic_abuse_aggravated": False, "historical": False,
    "signed_off_by": "service_manager",
}


def percentile(values: list[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(share * len(ordered)))]


async def wait_ready(ports: dict[str, int]) -> None:
    async with httpx.AsyncClient() as client:
        for name, port in ports.items():
            for _ in range(600):
                try:
                    if (await client.get(f"http://127.0.0.1:{port}/readyz")).status_code == 200:
                        break
                except httpx.HTTPError:
                    pass
                await asyncio.sleep(0.1)
            else:
                raise RuntimeError(f"{name} never became ready")


async def run(args: argparse.Namespace, database_url: str, ports: dict[str, int]) -> None:
    pool = await create_pool(database_url)
    await wait_ready(ports)
    token = await issue_token(pool, "council", local_authority="glasgow-city")
    headers = {"Authorization": f"Bearer {token}"}
    queue: asyncio.Queue[int] = asyncio.Queue()
    for i in range(args.notifications):
        queue.put_nowait(i)
    post_seconds: list[float] = []

    async def client_loop(client: httpx.AsyncClient) -> None:
        while not queue.empty():
            queue.get_nowait()
            started = time.perf_counter()
            answer = await client.post("/v1/notifications", json=NOTIFICATION, headers=headers)
            answer.raise_for_status()
            post_seconds.append(time.perf_counter() - started)

    started = time.perf_counter()
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{ports['intake']}", timeout=30) as client:
        await asyncio.gather(*(client_loop(client) for _ in range(args.concurrency)))
    posting = time.perf_counter() - started

    consumers = [s for s in SERVICES if s != "intake"]
    while True:
        done = [
            await pool.fetchval(f"SELECT count(*) FROM {s}.processed_events") for s in consumers
        ]
        if min(done) >= args.notifications:
            break
        await asyncio.sleep(0.2)
    total = time.perf_counter() - started
    latencies = [
        r["seconds"]
        for r in await pool.fetch(
            "SELECT extract(epoch FROM greatest(r.processed_at, d.processed_at, p.processed_at) - e.recorded_at)"
            " ::float8 AS seconds FROM intake.events e"
            " JOIN routing.processed_events r USING (event_id)"
            " JOIN deadlines.processed_events d USING (event_id)"
            " JOIN reporting.processed_events p USING (event_id)"
        )
    ]
    await pool.close()
    n = args.notifications
    print(f"notifications            {n} with {args.concurrency} concurrent clients")
    print(f"intake                   {n / posting:,.0f} /s accepted (201); POST p50 {percentile(post_seconds, .5) * 1000:.1f} ms,"
          f" p99 {percentile(post_seconds, .99) * 1000:.1f} ms")
    print(f"end to end               {n / total:,.0f} /s until all three consumers applied every one")
    print(f"recorded → applied by all three: p50 {percentile(latencies, .5) * 1000:.0f} ms,"
          f" p99 {percentile(latencies, .99) * 1000:.0f} ms, mean {statistics.mean(latencies) * 1000:.0f} ms")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--notifications", type=int, default=2000)
    parser.add_argument("--concurrency", type=int, default=20)
    args = parser.parse_args()

    with bench_platform({name: name for name in SERVICES}) as (database_url, _, ports):
        asyncio.run(run(args, database_url, ports))


@contextlib.contextmanager
def bench_platform(processes: dict[str, str], env: dict[str, str] | None = None) -> Iterator[tuple[str, str, dict]]:
    """A fresh database (bench_database), a Tansu, and a `sir serve` process for each
    entry of `processes` (a name → the service it runs), each on a free port; yields the
    database URL, the broker's address and the ports by name. Everything goes at the end."""
    ports = {name: devstack.free_port() for name in processes}
    with bench_database() as database_url, devstack.Tansu() as broker:
        common = dict(os.environ, DATABASE_URL=database_url, KAFKA_BOOTSTRAP=broker.bootstrap, SIR_LOG_LEVEL="WARNING")
        running = [
            subprocess.Popen(
                [sys.executable, "-m", "services.cli", "serve", service],
                env=common | (env or {}) | {f"{service.upper()}_PORT": str(ports[name])},
            )
            for name, service in processes.items()
        ]
        try:
            yield database_url, broker.bootstrap, ports
        finally:
            for process in running:
                process.terminate()
            for process in running:
                process.wait(timeout=20)


@contextlib.contextmanager
def bench_database() -> Iterator[str]:
    """A fresh database on the local server for one run; dropped at the end."""
    database_url = SERVER.rsplit("/", 1)[0] + f"/sir_bench_{uuid.uuid4().hex[:8]}"
    devstack.ensure_database(database_url)
    try:
        yield database_url
    finally:
        asyncio.run(_drop(database_url))


async def _drop(database_url: str) -> None:
    conn = await asyncpg.connect(SERVER)
    try:
        await conn.execute(f'DROP DATABASE IF EXISTS "{database_url.rsplit("/", 1)[1]}" WITH (FORCE)')
    finally:
        await conn.close()


if __name__ == "__main__":
    main()
