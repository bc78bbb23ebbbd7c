"""Benchmark: notifications posted through intake until all three consumers applied them.

Starts its own Tansu, a fresh database on the local server and the four services as
processes (as `sir up` does), posts N notifications and prints intake's throughput and the
end-to-end latency from the event's recording to the last of routing, deadlines and
reporting applying it (both sides read off the database clock). Two ways to post:

- closed loop (default): C concurrent clients, each posting its next notification when
  the last one was answered (`--concurrency 20`);
- open loop (`--rate R`): a notification every 1/R s whatever the answers, as real
  demand comes (the offered rate, not what the platform lets through).

A few notifications first (`--warmup`) wait for the consumer groups to form; they are
not measured. `--processes P` runs P processes of each consumer service (routing,
deadlines, reporting) sharing the work through the consumer group and SKIP LOCKED, and
checks every effect was applied exactly once (one delivery, one deadline and one count
per notification, each event processed once per consumer).

    .venv/bin/python bench/pipeline.py --notifications 2000 --concurrency 20
    .venv/bin/python bench/pipeline.py --rate 50 --notifications 1500
    .venv/bin/python bench/pipeline.py --rate 50 --notifications 1500 --processes 2
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
from aiokafka import AIOKafkaConsumer
from ceilings import report_row
from prometheus_client.parser import text_string_to_metric_families

from shared import devstack
from shared.auth import issue_token
from shared.db import create_pool
from shared.messaging import CASE_EVENTS
from shared.settings import SERVICES

SERVER = os.environ.get("BENCH_SERVER", "postgresql://postgres@127.0.0.1:5432/postgres")
CONSUMERS = tuple(s for s in SERVICES if s != "intake")
OPEN_LOOP_CONNECTIONS = 64

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


async def applied_by_all(pool: asyncpg.Pool, since) -> int:
    """Intake's events recorded after `since` that all three consumers have applied."""
    return await pool.fetchval(
        "SELECT count(*) FROM intake.events e WHERE e.recorded_at > $1"
        + "".join(f" AND EXISTS (SELECT FROM {s}.processed_events p WHERE p.event_id = e.event_id)" for s in CONSUMERS),
        since,
    )


async def post_notification(client: httpx.AsyncClient, headers: dict) -> None:
    """One notification, 201 expected; a connection the server closed as it was reused is
    tried again with the same Idempotency-Key (no duplicate)."""
    keyed = headers | {"Idempotency-Key": str(uuid.uuid4())}
    for attempt in range(3):
        try:
            answer = await client.post("/v1/notifications", json=NOTIFICATION, headers=keyed)
            break
        except httpx.TransportError:
            if attempt == 2:
                raise
    answer.raise_for_status()


async def closed_loop(client: httpx.AsyncClient, headers: dict, count: int, concurrency: int) -> list[float]:
    """`concurrency` clients, each posting again as soon as it is answered; POST seconds."""
    queue: asyncio.Queue[int] = asyncio.Queue()
    for i in range(count):
        queue.put_nowait(i)
    post_seconds: list[float] = []

    async def client_loop() -> None:
        while not queue.empty():
            queue.get_nowait()
            started = time.perf_counter()
            await post_notification(client, headers)
            post_seconds.append(time.perf_counter() - started)

    await asyncio.gather(*(client_loop() for _ in range(concurrency)))
    return post_seconds


async def open_loop(client: httpx.AsyncClient, headers: dict, count: int, rate: float) -> list[float]:
    """One POST every 1/rate s on a fixed schedule, whatever the answers; POST seconds
    (from the scheduled moment, so a backlog in the client counts too)."""
    post_seconds: list[float] = []
    start = time.perf_counter()

    # At most as many in flight as the client has connections: a backlog waits here, cheaply,
    # not in httpx's pool (which rescans every waiting request at each step, and would eat
    # the CPU the platform is measured on).
    connections = asyncio.Semaphore(OPEN_LOOP_CONNECTIONS)

    async def one(due: float) -> None:
        async with connections:
            await post_notification(client, headers)
        post_seconds.append(time.perf_counter() - due)

    tasks = []
    for i in range(count):
        due = start + i / rate
        delay = due - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        tasks.append(asyncio.create_task(one(due)))
    await asyncio.gather(*tasks)
    return post_seconds


async def exactly_once(pool: asyncpg.Pool, since) -> dict[str, int]:
    """Effects of the notifications recorded after `since`, counted where they land: each
    should equal the number of notifications (none twice, none missing)."""
    events = "SELECT event_id, case_id FROM intake.events WHERE recorded_at > $1"
    return {
        "notifications": await pool.fetchval(f"SELECT count(*) FROM ({events}) e", since),
        "routing deliveries": await pool.fetchval(
            f"SELECT count(*) FROM routing.deliveries WHERE case_id IN (SELECT case_id FROM ({events}) e)", since),
        # Several deadlines per case (one per rule): the cases with each rule's one, none twice.
        "cases with deadlines, none twice": await pool.fetchval(
            "SELECT count(*) FILTER (WHERE rows = rules) FROM (SELECT count(*) AS rows, count(DISTINCT rule) AS rules"
            f" FROM deadlines.deadlines WHERE case_id IN (SELECT case_id FROM ({events}) e) GROUP BY case_id) c", since),
        "reporting notifications": await pool.fetchval(
            f"SELECT count(*) FROM reporting.notifications WHERE case_id IN (SELECT case_id FROM ({events}) e)", since),
        **{f"{s} applied": await pool.fetchval(
            f"SELECT count(*) FROM {s}.processed_events WHERE event_id IN (SELECT event_id FROM ({events}) e)", since)
           for s in CONSUMERS},
    }


async def stage_latencies(pool: asyncpg.Pool, bootstrap: str, since) -> dict[str, list[float]]:
    """Where the time goes: recorded → on the topic (intake's relay; the record's producer
    timestamp) and on the topic → applied, for each consumer."""
    recorded = {
        r["event_id"]: r["recorded_at"].timestamp()
        for r in await pool.fetch("SELECT event_id, recorded_at FROM intake.events WHERE recorded_at > $1", since)
    }
    on_topic: dict[uuid.UUID, float] = {}
    consumer = AIOKafkaConsumer(CASE_EVENTS, bootstrap_servers=bootstrap, group_id=None, auto_offset_reset="earliest",
                                enable_auto_commit=False)
    await consumer.start()
    try:
        idle = 0
        while idle < 4 and len(on_topic) < len(recorded):
            batches = await consumer.getmany(timeout_ms=300)
            idle = 0 if batches else idle + 1
            for record in (r for records in batches.values() for r in records):
                event_id = uuid.UUID(dict(record.headers)["ce_id"].decode())
                if event_id in recorded:
                    on_topic.setdefault(event_id, record.timestamp / 1000)
    finally:
        await consumer.stop()
    stages = {"recorded → on the topic (relay)": [on_topic[e] - recorded[e] for e in on_topic]}
    for service in CONSUMERS:
        applied = await pool.fetch(
            f"SELECT event_id, processed_at FROM {service}.processed_events WHERE event_id = ANY($1::uuid[])", list(on_topic))
        stages[f"on the topic → applied by {service}"] = [r["processed_at"].timestamp() - on_topic[r["event_id"]]
                                                          for r in applied]
    return stages


async def handler_seconds(ports: dict[str, int]) -> dict[str, tuple[float, float]]:
    """Per consumer (summed over its processes): batches applied and seconds in the handler
    (sir_handler_duration_seconds, from each process's /metrics)."""
    totals: dict[str, list[float]] = {}
    async with httpx.AsyncClient(timeout=10) as client:
        for name, port in ports.items():
            if name == "intake":
                continue
            text = (await client.get(f"http://127.0.0.1:{port}/metrics")).text
            for family in text_string_to_metric_families(text):
                for sample in family.samples:
                    if sample.name in ("sir_handler_duration_seconds_count", "sir_handler_duration_seconds_sum"):
                        pair = totals.setdefault(sample.labels["consumer"], [0.0, 0.0])
                        pair[sample.name.endswith("_sum")] += sample.value
    return {consumer: (count, seconds) for consumer, (count, seconds) in totals.items()}


async def run(args: argparse.Namespace, database_url: str, bootstrap: str, ports: dict[str, int]) -> dict:
    pool = await create_pool(database_url)
    await wait_ready(ports)
    token = await issue_token(pool, "council", local_authority="glasgow-city")
    headers = {"Authorization": f"Bearer {token}"}
    limits = httpx.Limits(max_connections=max(args.concurrency, OPEN_LOOP_CONNECTIONS),
                          max_keepalive_connections=max(args.concurrency, OPEN_LOOP_CONNECTIONS))
    timeout = httpx.Timeout(60, pool=None)  # open loop: a request waits its turn for a connection
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{ports['intake']}", timeout=timeout, limits=limits) as client:
        # Warm up: the consumer groups form (a join takes about half the session timeout on Tansu).
        since = await pool.fetchval("SELECT now()")
        await closed_loop(client, headers, args.warmup, 1)
        while await applied_by_all(pool, since) < args.warmup:
            await asyncio.sleep(0.2)
        since = await pool.fetchval("SELECT now()")
        started = time.perf_counter()
        if args.rate:
            post_seconds = await open_loop(client, headers, args.notifications, args.rate)
        else:
            post_seconds = await closed_loop(client, headers, args.notifications, args.concurrency)
    posting = time.perf_counter() - started

    n = args.notifications
    waited = time.perf_counter()
    while await applied_by_all(pool, since) < n:
        if time.perf_counter() - waited > args.wait:
            raise SystemExit(f"only {await applied_by_all(pool, since)} of {n} applied by all three after {args.wait}s")
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
            " WHERE e.recorded_at > $1", since,
        )
    ]
    effects = await exactly_once(pool, since)
    stages = await stage_latencies(pool, bootstrap, since)
    handlers = await handler_seconds(ports)
    await pool.close()
    p50, p99 = percentile(latencies, .5) * 1000, percentile(latencies, .99) * 1000
    load = f"{args.rate:g}/s offered (open loop)" if args.rate else f"{args.concurrency} concurrent clients"
    print(f"notifications            {n} at {load}; {args.processes} process(es) per consumer service")
    print(f"intake                   {n / posting:,.1f} /s accepted (201); POST p50 {percentile(post_seconds, .5) * 1000:.1f} ms,"
          f" p99 {percentile(post_seconds, .99) * 1000:.1f} ms")
    print(f"end to end               {n / total:,.1f} /s until all three consumers applied every one")
    print(f"recorded → applied by all three: p50 {p50:.0f} ms, p99 {p99:.0f} ms, mean {statistics.mean(latencies) * 1000:.0f} ms")
    for stage, seconds in stages.items():
        print(f"  {stage:37} p50 {percentile(seconds, .5) * 1000:6.0f} ms, p99 {percentile(seconds, .99) * 1000:6.0f} ms")
    for consumer, (count, seconds) in sorted(handlers.items()):
        print(f"  {consumer:37} {count:6.0f} batches applied, mean {seconds / max(count, 1) * 1000:5.1f} ms in the handler")
    wrong = {name: value for name, value in effects.items() if value != n}
    print(f"exactly once             {'yes' if not wrong else 'NO'}: " + ", ".join(f"{k} {v}" for k, v in effects.items()))
    report_row(f"whole platform, {load}, {args.processes} process(es) per consumer",
               f"{n / posting:,.1f} notifications/s; recorded → applied by all three p50 {p50:.0f} ms, p99 {p99:.0f} ms",
               target="p99 < 500 ms at 50/s offered")
    if wrong:
        raise SystemExit(f"effects not applied exactly once: {wrong}")
    return {"p50_ms": p50, "p99_ms": p99, "effects": effects}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--notifications", type=int, default=2000)
    parser.add_argument("--concurrency", type=int, default=20, help="closed loop: concurrent clients")
    parser.add_argument("--rate", type=float, help="open loop: notifications offered per second")
    parser.add_argument("--processes", type=int, default=1, help="processes of each consumer service")
    parser.add_argument("--warmup", type=int, default=5, help="notifications posted first, not measured")
    parser.add_argument("--wait", type=float, default=300, help="longest wait for the last to be applied")
    args = parser.parse_args()

    processes = {"intake": "intake"} | {
        (service if i == 0 else f"{service}-{i + 1}"): service for service in CONSUMERS for i in range(args.processes)
    }
    with bench_platform(processes) as (database_url, bootstrap, ports):
        asyncio.run(run(args, database_url, bootstrap, ports))


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
