"""Benchmark: the deadline scheduler, from due time to `deadline.breached` on the topic.

Starts its own Tansu, a fresh database on the local server and the deadlines service as
one or more processes (`sir serve deadlines`, the real scheduler on the database clock),
bulk-loads open deadlines with COPY (not through the API), and reads sir.deadlines.v1:

(a) steady: `--open` open deadlines, of which `--rate` fall due each second for
    `--seconds` seconds (the rest months later); lag from each due time to its
    breach arriving on the topic, p50/p99 (target p99 < 500 ms, issue 15);
(b) burst: `--burst` deadlines due at one instant; time until all are on the topic and
    breaches per second, beside the ceiling measured in the same run just before it
    (bench/ceilings.py `deadlines_claim_loop`: one worker claiming 1,000 due rows per
    transaction with SKIP LOCKED and inserting their events into a record and outbox);
    target ratio >= 0.5 (issue 15);
(c) duplicates and misses in both, counted on the topic (target: none).

    .venv/bin/python bench/deadlines.py                        # full size: 1,000,000 open, 100,000 burst
    .venv/bin/python bench/deadlines.py --open 100000 --burst 10000 --seconds 10   # a quick check
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import random
import time
import uuid
from collections import Counter

import asyncpg
from aiokafka import AIOKafkaConsumer
from ceilings import deadlines_claim_loop
from pipeline import bench_platform, percentile, wait_ready

from shared.db import create_pool
from shared.messaging import DEADLINE_EVENTS
from shared.reference import LOCAL_AUTHORITY_SLUGS

COLUMNS = (
    "case_id", "rule", "sequence", "local_authority", "status", "watched", "imported",
    "started_at", "due_at", "next_fire_at", "opened_by",
)


async def copy_deadlines(pool: asyncpg.Pool, due_times: list[dt.datetime]) -> dict[str, dt.datetime]:
    """COPY one open, watched review_submission deadline per due time (a case each);
    returns case_id -> due time."""
    cases = {}
    records = []
    for due in due_times:
        case = uuid.uuid4()
        cases[str(case)] = due
        records.append((case, "review_submission", 1, random.choice(LOCAL_AUTHORITY_SLUGS), "open", True, False,
                        due - dt.timedelta(days=90), due, due, case))
    async with pool.acquire() as conn:
        for start in range(0, len(records), 100_000):
            await conn.copy_records_to_table(
                "deadlines", schema_name="deadlines", columns=COLUMNS, records=records[start:start + 100_000]
            )
    return cases


class TopicReader:
    """Reads sir.deadlines.v1 from its start, noting when each breach arrives."""

    def __init__(self, bootstrap: str):
        self.consumer = AIOKafkaConsumer(
            DEADLINE_EVENTS, bootstrap_servers=bootstrap, group_id=None, auto_offset_reset="earliest",
            enable_auto_commit=False, max_partition_fetch_bytes=8 * 1024 * 1024, fetch_max_wait_ms=50,
        )
        self.arrivals: dict[str, float] = {}  # case_id -> first arrival (epoch seconds)
        self.recorded: dict[str, str] = {}  # case_id -> the breach's recorded_at (ce_time)
        self.copies: Counter[str] = Counter()  # event_id -> times seen
        self._task: asyncio.Task | None = None

    async def start(self) -> None:
        await self.consumer.start()
        self._task = asyncio.create_task(self._read())

    async def _read(self) -> None:
        while True:
            for records in (await self.consumer.getmany(timeout_ms=100, max_records=10_000)).values():
                now = time.time()
                for record in records:
                    headers = dict(record.headers)
                    if headers.get("ce_type") != b"deadline.breached":
                        continue
                    self.copies[headers["ce_id"].decode()] += 1
                    case = headers["ce_subject"].decode()
                    if case not in self.arrivals:
                        self.arrivals[case] = now
                        self.recorded[case] = headers["ce_time"].decode()

    async def wait_for(self, cases: dict[str, dt.datetime], timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and not all(c in self.arrivals for c in cases):
            await asyncio.sleep(0.2)

    async def stop(self) -> None:
        self._task.cancel()
        await asyncio.gather(self._task, return_exceptions=True)
        await self.consumer.stop()


async def db_now(pool: asyncpg.Pool) -> dt.datetime:
    return await pool.fetchval("SELECT now()")


async def count_breached(pool: asyncpg.Pool) -> int:
    return await pool.fetchval("SELECT count(*) FROM deadlines.deadlines WHERE status = 'breached'")


async def seconds_until_breached(pool: asyncpg.Pool, target: int, due: float) -> float:
    """When the database held `target` breached deadlines (polled), seconds after `due`:
    the scheduler's part of the burst, apart from the relay's and the broker's."""
    while await count_breached(pool) < target:
        await asyncio.sleep(0.25)  # a count over the table: not so often that it slows what it watches
    return time.time() - due


def report_phase(name: str, cases: dict[str, dt.datetime], reader: TopicReader) -> list[float]:
    lags = [reader.arrivals[c] - due.timestamp() for c, due in cases.items() if c in reader.arrivals]
    missing = len(cases) - len(lags)
    print(f"{name}: {len(lags):,} of {len(cases):,} breaches on the topic, {missing:,} missing")
    if lags:
        # The breach's recorded_at (the scheduler's transaction) splits each lag in two.
        fired = [dt.datetime.fromisoformat(reader.recorded[c]).timestamp() for c in cases if c in reader.arrivals]
        scheduler = [f - due.timestamp() for f, due in zip(fired, (cases[c] for c in cases if c in reader.arrivals),
                                                           strict=True)]
        relay = [reader.arrivals[c] - f for f, c in zip(fired, (c for c in cases if c in reader.arrivals), strict=True)]
        print(f"    due → recorded (scheduler) p50 {percentile(scheduler, .5) * 1000:.0f} ms,"
              f" p99 {percentile(scheduler, .99) * 1000:.0f} ms; recorded → on the topic (relay, broker, this reader)"
              f" p50 {percentile(relay, .5) * 1000:.0f} ms, p99 {percentile(relay, .99) * 1000:.0f} ms")
    return lags


def row(path: str, figure: str, ceiling: str | None, ratio: float | None, target: str) -> None:
    """One line per row of issue 15's table: path | figure | ceiling | ratio | target."""
    print(" | ".join((path, figure, ceiling or "—", "—" if ratio is None else f"{ratio:.2f}", target)), flush=True)


async def run(args: argparse.Namespace, database_url: str, bootstrap: str, ports: dict[str, int]) -> None:
    pool = await create_pool(database_url, max_size=4)
    await wait_ready(ports)
    reader = TopicReader(bootstrap)
    await reader.start()
    steady_p99: float | None = None
    rate: float | None = None
    try:
        window = args.rate * args.seconds
        background = max(0, args.open - window)
        now = await db_now(pool)
        loading = time.perf_counter()
        # Months away, spread: they only stand in the index, as a real backlog would.
        await copy_deadlines(pool, [now + dt.timedelta(days=30, seconds=random.uniform(0, 90 * 86400))
                                    for _ in range(background)])
        # The window last, so that it starts after the load: `rate` due each second.
        start = await db_now(pool) + dt.timedelta(seconds=3 + window / 50_000)
        steady = await copy_deadlines(pool, [start + dt.timedelta(seconds=i / args.rate) for i in range(window)])
        print(f"loaded {background + window:,} open deadlines with COPY in {time.perf_counter() - loading:.1f} s;"
              f" {window:,} fall due over {args.seconds} s at {args.rate:,}/s")
        await reader.wait_for(steady, timeout=(start - await db_now(pool)).total_seconds() + args.seconds + 120)
        lags = report_phase("(a) steady", steady, reader)
        if lags:
            print(f"    lag from due time to the topic: p50 {percentile(lags, .5) * 1000:.0f} ms,"
                  f" p99 {percentile(lags, .99) * 1000:.0f} ms, max {max(lags) * 1000:.0f} ms (target p99 < 500 ms)")
            steady_p99 = percentile(lags, .99)

        # The ceiling, in this run, while the service idles: the simplest code doing the burst's I/O.
        ceiling = await deadlines_claim_loop(database_url, args.burst, batch=1000)
        print(f"ceiling: a SKIP LOCKED claim of 1,000 + outbox insert per transaction, 1 worker:"
              f" {ceiling:,.0f} breaches/s ({args.burst:,} due)")

        instant = await db_now(pool) + dt.timedelta(seconds=3 + args.burst / 50_000)
        breached_before = await count_breached(pool)
        burst = await copy_deadlines(pool, [instant] * args.burst)
        committed = asyncio.create_task(
            seconds_until_breached(pool, breached_before + args.burst, instant.timestamp())
        )
        await reader.wait_for(burst, timeout=(instant - await db_now(pool)).total_seconds() + args.burst / 500 + 60)
        lags = report_phase("(b) burst", burst, reader)
        print(f"    the scheduler had committed every breach (database) {await committed:.2f} s after the due time")
        if lags:
            seconds = max(lags)
            rate = len(lags) / seconds
            print(f"    {args.burst:,} due at one instant: all on the topic after {seconds:.2f} s,"
                  f" {rate:,.0f} breaches/s; p50 lag {percentile(lags, .5):.2f} s; ratio to the ceiling {rate / ceiling:.2f}")

        await asyncio.sleep(2)  # anything emitted twice would be on the topic by now
        duplicates = sum(n - 1 for n in reader.copies.values() if n > 1)
        expected = len(steady) + len(burst)
        print(f"(c) breaches on the topic: {sum(reader.copies.values()):,} for {expected:,} deadlines due;"
              f" duplicates {duplicates}, missing {expected - len(set(reader.arrivals) & (steady.keys() | burst.keys()))}")
        left = await pool.fetchval("SELECT count(*) FROM deadlines.deadlines WHERE status = 'breached'")
        print(f"    breached in the database: {left:,}; open still: "
              f"{await pool.fetchval('SELECT count(*) FROM deadlines.deadlines WHERE status = $1', 'open'):,}")
        print()
        if steady_p99 is not None:
            row(f"{args.rate:,} falling due each second over {args.open:,} open", f"lag p99 {steady_p99 * 1000:,.0f} ms",
                None, None, "p99 < 500 ms")
        if rate is not None:
            row(f"{args.burst:,} breaches due at one instant", f"{rate:,.0f}/s (all on the topic after {seconds:.1f} s)",
                f"SKIP LOCKED claim of 1,000 + outbox insert per transaction, 1 worker: {ceiling:,.0f}/s",
                rate / ceiling, ">= 0.5")
    finally:
        await reader.stop()
        await pool.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--open", type=int, default=1_000_000, help="open deadlines loaded (steady phase)")
    parser.add_argument("--rate", type=int, default=1000, help="deadlines falling due each second (steady phase)")
    parser.add_argument("--seconds", type=int, default=60, help="length of the steady phase")
    parser.add_argument("--burst", type=int, default=100_000, help="deadlines due at one instant")
    parser.add_argument("--processes", type=int, default=1, help="deadlines service processes (SKIP LOCKED shares the work)")
    args = parser.parse_args()

    processes = {f"deadlines-{i}": "deadlines" for i in range(args.processes)}
    with bench_platform(processes) as (database_url, bootstrap, ports):
        asyncio.run(run(args, database_url, bootstrap, ports))

if __name__ == "__main__":
    main()
