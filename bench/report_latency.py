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
national report as of a moment halfway through, and drill-downs; the HTML page of one
year with its drill-down section (every figure's and row's cases) a few times. Beside the
national report, measured in the same run: a floor, one `count(*)` scan of the period's
notifications (the least a report over those rows reads), and the CPU the database spent
on one report (its backends' /proc times: the figure least moved by other load on the
machine; the wall-clock median moves 2-5x with it), with the load average.

    .venv/bin/python bench/report_latency.py --notifications 125000
    .venv/bin/python bench/report_latency.py --notifications 10000 --repeat 5   # a quick check
    .venv/bin/python bench/report_latency.py --seeded postgresql://...           # a database seeded before (--keep)
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import os
import random
import statistics
import time
from typing import Any

from pipeline import bench_database
from reporting import case_events

from services.reporting import commands, repository
from services.reporting.api import HTML_CASES_PER_FIGURE
from services.reporting.app import SERVICE
from services.reporting.queries import compute_all_cases, compute_cases, compute_national, compute_quarterly
from services.reporting.render import render
from shared.db import COMMON, create_pool, migrate

TARGET_MS = 200.0
TARGET_OTHERS_MS = 1000.0
WHOLE_SPAN = (dt.date(2010, 1, 1), dt.date(2025, 12, 31))
AS_OF = dt.datetime(2018, 1, 1, tzinfo=dt.timezone.utc)


def seed_projection(notifications: int, seed: int) -> commands.Projection:
    rng = random.Random(seed)
    projection = commands.Projection()
    offsets: dict[str, int] = {}
    for number in range(notifications):
        for topic, _key, value in case_events(rng, number):
            offset = offsets.get(topic, 0)
            offsets[topic] = offset + 1
            projection.add(commands.record_of(topic, value, offset))
    return projection


def _stats(latencies: list[float]) -> str:
    ordered = sorted(latencies)
    p95 = ordered[min(len(ordered) - 1, round(0.95 * (len(ordered) - 1)))]
    return (f"median {statistics.median(ordered) * 1000:.0f} ms, p95 {p95 * 1000:.0f} ms,"
            f" max {ordered[-1] * 1000:.0f} ms over {len(ordered)} runs")


async def _timed(repeat: int, work) -> tuple[Any, list[float]]:
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


def _cpu_seconds(pids: list[int]) -> float | None:
    """User + system CPU of these processes (the database's backends, when it runs here)."""
    total = 0.0
    for pid in pids:
        try:
            with open(f"/proc/{pid}/stat") as stat:
                fields = stat.read().rsplit(")", 1)[1].split()
        except OSError:
            return None
        total += (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    return total


async def seed(pool, args: argparse.Namespace) -> None:
    started = time.perf_counter()
    projection = seed_projection(args.notifications, args.seed)
    folded = time.perf_counter() - started
    await migrate(pool, SERVICE.name, COMMON, SERVICE.migrations)
    started = time.perf_counter()
    async with pool.acquire() as conn, conn.transaction():
        await repository.replace_all(conn, projection.tables(), versions=projection.versions())
    print(f"seeded {args.notifications:,} cases ({args.notifications * 8:,} events) in memory in {folded:.1f}s"
          f" (commands.Projection), written by COPY in {time.perf_counter() - started:.1f}s")


async def main(args: argparse.Namespace, database_url: str) -> None:
    # The service's pool size (shared/db.py): a report reads on 4 of its connections.
    pool = await create_pool(database_url)
    try:
        if not args.seeded:
            await seed(pool, args)
        sizes = {t: await pool.fetchval(f"SELECT count(*) FROM reporting.{t}") for t in repository.PROJECTIONS}
        versions = {t: await pool.fetchval(f"SELECT count(*) FROM reporting.{t}_versions") for t in repository.PROJECTIONS}
        print(f"    rows: {sizes}; replaced versions: {versions}")

        floor_sql = "SELECT count(*) FROM reporting.notifications WHERE received_on BETWEEN $1 AND $2"
        _, floor = await _timed(args.repeat, lambda: pool.fetchval(floor_sql, *WHOLE_SPAN))
        report, latencies = await _timed(args.repeat, lambda: compute_national(pool, *WHOLE_SPAN))
        print(f"(c) national report {WHOLE_SPAN[0]}..{WHOLE_SPAN[1]} over {report['figures']['notifications']:,}"
              f" notifications and {report['figures']['reviews']:,} reviews: {_stats(latencies)}")
        print(f"    {_verdict(latencies, TARGET_MS)}; floor (one count(*) scan of those notifications):"
              f" median {statistics.median(floor) * 1000:.1f} ms, report / floor ="
              f" {statistics.median(latencies) / statistics.median(floor):.1f}")
        await server_cpu(pool, args.repeat)

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
                pool, p[0], p[1], f, v, as_of=a))
            print(f"(e) drill-down, {label}: {listed['count']:,} cases, {_stats(latencies)};"
                  f" {_verdict(latencies, TARGET_OTHERS_MS)}")

        async def page():
            report = await compute_national(pool, *year)
            return report, await compute_all_cases(pool, report, None, HTML_CASES_PER_FIGURE)
        (_, listed), latencies = await _timed(max(1, args.repeat // 5), page)
        print(f"(h) national report of 2017 with its HTML drill-down section ({len(listed)} lists of up to"
              f" {HTML_CASES_PER_FIGURE} cases): {_stats(latencies)}")
    finally:
        await pool.close()


async def server_cpu(pool, repeat: int) -> None:
    """The database's CPU for one national report: its backends' CPU time around each run."""
    pids = [r[0] for r in await pool.fetch(
        "SELECT pid FROM pg_stat_activity WHERE datname = current_database() AND pid <> pg_backend_pid()")]
    pids.append(await pool.fetchval("SELECT pg_backend_pid()"))
    spent = []
    for _ in range(repeat):
        before = _cpu_seconds(pids)
        await compute_national(pool, *WHOLE_SPAN)
        after = _cpu_seconds(pids)
        if before is None or after is None:
            print("    (the database's CPU time cannot be read here: not a local server)")
            return
        spent.append(after - before)
    print(f"    database CPU per report: median {statistics.median(spent) * 1000:.0f} ms over {len(pids)} backends"
          f" (clock ticks of 10 ms); load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--notifications", type=int, default=125_000)
    parser.add_argument("--repeat", type=int, default=20)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--keep", help="seed this (existing, empty) database and leave it (for EXPLAIN by hand)")
    parser.add_argument("--seeded", help="a database seeded before with --keep: time the reports only")
    arguments = parser.parse_args()
    if arguments.keep or arguments.seeded:
        asyncio.run(main(arguments, arguments.keep or arguments.seeded))
    else:
        with bench_database() as url:
            asyncio.run(main(arguments, url))
