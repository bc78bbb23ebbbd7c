"""Benchmark: the national report's latency over N notifications (issue 15's row: median
< 200 ms over 125,000 notifications), and the quarterly report, the report as of a moment
and drill-downs (issue 16: < 1 s), on projections seeded directly.

No broker: the cases are bench/reporting.py's (8 events each: notified, criteria assessed,
review submitted, responded, closed; forwarded; a deadline opened and met; spread over
2010-2025), folded in memory through the rebuild's own projection (`commands.Projection`,
the same pure functions the live handlers use, replaced versions kept for `as_of`) and
written with `repository.replace_all` (TRUNCATE + COPY + ANALYZE), as `sir report rebuild`
writes them. So the rows are exactly what a rebuild of those events makes; only the
broker round trip is skipped (bench/reporting.py times that).

Then, in the same run, each timed `--repeat` times (median, p95, max): the national report
over the whole span (the row's figure), its HTML rendering, a quarterly report, the
national report as of a moment halfway through, and drill-downs. Beside the national
report, a floor measured in the same run: one `count(*)` scan of the notifications of
the period (the least a report over those rows can read).

    .venv/bin/python bench/report_latency.py --notifications 125000
    .venv/bin/python bench/report_latency.py --notifications 10000 --repeat 5   # a quick check
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import random
import statistics
import time
from dataclasses import dataclass

from pipeline import bench_database
from reporting import case_events

from services.reporting import commands, repository
from services.reporting.app import SERVICE
from services.reporting.queries import compute_cases, compute_national, compute_quarterly
from services.reporting.render import render
from shared.db import COMMON, create_pool, migrate

TARGET_MS = 200.0
TARGET_OTHERS_MS = 1000.0
WHOLE_SPAN = (dt.date(2010, 1, 1), dt.date(2025, 12, 31))
AS_OF = dt.datetime(2018, 1, 1, tzinfo=dt.timezone.utc)


@dataclass
class _Record:
    """What Projection.add reads of a consumer record."""

    topic: str
    value: bytes
    partition: int
    offset: int
    headers: tuple = ()


def seed_projection(notifications: int, seed: int) -> commands.Projection:
    rng = random.Random(seed)
    projection = commands.Projection()
    offsets: dict[str, int] = {}
    for number in range(notifications):
        for topic, _key, value in case_events(rng, number):
            offset = offsets.get(topic, 0)
            offsets[topic] = offset + 1
            projection.add(_Record(topic, value, 0, offset))  # type: ignore[arg-type]
    return projection


def _stats(latencies: list[float]) -> str:
    ordered = sorted(latencies)
    p95 = ordered[min(len(ordered) - 1, round(0.95 * (len(ordered) - 1)))]
    return (f"median {statistics.median(ordered) * 1000:.0f} ms, p95 {p95 * 1000:.0f} ms,"
            f" max {ordered[-1] * 1000:.0f} ms over {len(ordered)} runs")


async def _timed(repeat: int, work) -> tuple[object, list[float]]:
    await work()  # warm: statement caches, the first connection's plans
    latencies = []
    result = None
    for _ in range(repeat):
        started = time.perf_counter()
        result = await work()
        latencies.append(time.perf_counter() - started)
    return result, latencies


def _verdict(latencies: list[float], target_ms: float) -> str:
    median = statistics.median(latencies) * 1000
    return f"target < {target_ms:.0f} ms: {'MET' if median < target_ms else 'NOT MET'} ({median / target_ms:.2f} of it)"


async def main(args: argparse.Namespace, database_url: str) -> None:
    started = time.perf_counter()
    projection = seed_projection(args.notifications, args.seed)
    folded = time.perf_counter() - started
    pool = await create_pool(database_url, max_size=4)
    try:
        await migrate(pool, SERVICE.name, COMMON, SERVICE.migrations)
        started = time.perf_counter()
        async with pool.acquire() as conn, conn.transaction():
            await repository.replace_all(conn, projection.tables(), versions=projection.versions)
        written = time.perf_counter() - started
        sizes = {t: await pool.fetchval(f"SELECT count(*) FROM reporting.{t}") for t in repository.PROJECTIONS}
        versions = {t: await pool.fetchval(f"SELECT count(*) FROM reporting.{t}_versions") for t in repository.PROJECTIONS}
        print(f"seeded {args.notifications:,} cases ({args.notifications * 8:,} events) in memory in {folded:.1f}s"
              f" (commands.Projection), written by COPY in {written:.1f}s")
        print(f"    rows: {sizes}; replaced versions: {versions}")
        del projection

        floor_sql = "SELECT count(*) FROM reporting.notifications WHERE received_on BETWEEN $1 AND $2"
        _, floor = await _timed(args.repeat, lambda: pool.fetchval(floor_sql, *WHOLE_SPAN))
        report, latencies = await _timed(args.repeat, lambda: compute_national(pool, *WHOLE_SPAN))
        print(f"(c) national report {WHOLE_SPAN[0]}..{WHOLE_SPAN[1]} over {report['figures']['notifications']:,}"
              f" notifications and {report['figures']['reviews']:,} reviews: {_stats(latencies)}")
        print(f"    {_verdict(latencies, TARGET_MS)}; floor (one count(*) scan of those notifications):"
              f" median {statistics.median(floor) * 1000:.1f} ms")

        async def html():
            return render(await compute_national(pool, *WHOLE_SPAN), "html")
        _, latencies = await _timed(args.repeat, html)
        print(f"    the same, rendered as HTML: {_stats(latencies)}")

        report, latencies = await _timed(args.repeat, lambda: compute_quarterly(pool, 2017, 3))
        print(f"(q) quarterly report 2017 Q3 ({report['figures']['notifications']:,} notifications):"
              f" {_stats(latencies)}; {_verdict(latencies, TARGET_OTHERS_MS)}")
        report, latencies = await _timed(args.repeat, lambda: compute_national(pool, *WHOLE_SPAN, as_of=AS_OF))
        print(f"(d) national report as of {AS_OF:%Y-%m-%d} over the whole span"
              f" ({report['figures']['notifications']:,} notifications known then): {_stats(latencies)};"
              f" {_verdict(latencies, TARGET_OTHERS_MS)}")
        year = (dt.date(2017, 1, 1), dt.date(2017, 12, 31))
        for label, period, figure, value, as_of in (
            ("one year, notified late", year, "notified_late", None, None),
            ("one year, one authority's row", year, "notifications_by_authority", "glasgow-city", None),
            ("whole span, reviews within 3 months", WHOLE_SPAN, "reviews_within_3_months", None, None),
            (f"as of {AS_OF:%Y-%m-%d}, one year, notified late", year, "notified_late", None, AS_OF),
        ):
            listed, latencies = await _timed(args.repeat, lambda p=period, f=figure, v=value, a=as_of: compute_cases(
                pool, *p, f, v, as_of=a))
            print(f"(e) drill-down, {label}: {listed['count']:,} cases, {_stats(latencies)};"
                  f" {_verdict(latencies, TARGET_OTHERS_MS)}")
    finally:
        await pool.close()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--notifications", type=int, default=125_000)
    parser.add_argument("--repeat", type=int, default=20)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--keep", help="seed this database URL and leave it (for EXPLAIN by hand)")
    arguments = parser.parse_args()
    if arguments.keep:
        asyncio.run(main(arguments, arguments.keep))
    else:
        with bench_database() as url:
            asyncio.run(main(arguments, url))
