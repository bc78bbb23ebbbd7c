"""Benchmark: the casework view's query (GET /v1/cases) over a large projection.

Creates a scratch database on the local server, fills reporting's projections (the case
rows of `notifications`, and `deadlines`: the view is a query over them) with
N cases over the 32 authorities (most open, each owing a few deadlines, some overdue),
then times `casework.list_cases` as each role would call it, and drops the database.

    .venv/bin/python bench/casework.py --cases 20000 --repeat 20
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time
from pathlib import Path

from pipeline import bench_database

from services.reporting import casework
from shared.db import COMMON, create_pool, migrate
from shared.reference import LOCAL_AUTHORITY_SLUGS, mappa_region_of

MIGRATIONS = Path(casework.__file__).parent / "migrations"

FILL = """
INSERT INTO reporting.notifications (case_id, local_authority, received_at, received_on, incident_date,
    working_days_taken, criterion, incident_type, order_type, subject_role, mappa_applies, historical,
    signed_off_by, sg_forward_due_at, review_owed_since, state, sog_region)
SELECT gen_random_uuid(), la, at, at::date, at::date - 2, 2, 'charged_with_serious_offence', 'serious_assault',
       'parole_licence', 'perpetrator', n % 3 = 0, false, 'service_manager', at + interval '2 days', at::date,
       (ARRAY['notified','awaiting_review','under_review','awaiting_information','concluded','closed'])[1 + n % 6],
       CASE WHEN n % 3 = 0 THEN region END
FROM generate_series(1, $1) AS n,
     LATERAL (SELECT ($2::text[])[1 + n % 32] AS la, ($3::text[])[1 + n % 32] AS region,
                     now() - make_interval(days => n % 400) AS at) AS place;
INSERT INTO reporting.deadlines (case_id, rule, started_at, local_authority, due_at, status)
SELECT c.case_id, r.rule, c.received_at, c.local_authority, c.received_at + r.span,
       CASE WHEN c.state = 'closed' THEN 'cancelled' WHEN r.rule = 'notification' THEN 'met' ELSE 'open' END
FROM reporting.notifications c,
     (VALUES ('notification', interval '7 days'), ('sg_forward', interval '2 days'),
             ('review_submission', interval '3 months')) AS r(rule, span);
ANALYZE reporting.notifications;
ANALYZE reporting.deadlines;
"""


async def timed(repeat: int, query) -> tuple[float, float]:
    samples = []
    for _ in range(repeat):
        started = time.perf_counter()
        await query()
        samples.append((time.perf_counter() - started) * 1000)
    return statistics.median(samples), max(samples)


async def run(args: argparse.Namespace, dsn: str) -> None:
    pool = await create_pool(dsn, max_size=2)
    try:
        await migrate(pool, "reporting", COMMON, MIGRATIONS)
        started = time.perf_counter()
        regions = [mappa_region_of(la) for la in LOCAL_AUTHORITY_SLUGS]
        async with pool.acquire() as conn:
            for statement in FILL.strip().split(";\n"):
                if statement.strip():
                    params = (args.cases, list(LOCAL_AUTHORITY_SLUGS), regions) if "$1" in statement else ()
                    await conn.execute(statement, *params)
        deadlines = await pool.fetchval("SELECT count(*) FROM reporting.deadlines")
        print(f"filled {args.cases} cases, {deadlines} deadlines in {time.perf_counter() - started:.1f}s")

        first = await casework.list_cases(pool, limit=100)
        deep_cursor = (first[-1]["next_due"], first[-1]["case_id"])
        queries = {
            "inspectorate, first page of 100": lambda: casework.list_cases(pool, limit=100),
            "inspectorate, second page (cursor)": lambda: casework.list_cases(pool, limit=100, after=deep_cursor),
            "inspectorate, overdue=true": lambda: casework.list_cases(pool, limit=100, overdue=True),
            "council (one authority)": lambda: casework.list_cases(pool, local_authority="glasgow-city", limit=100),
            "sog (one region)": lambda: casework.list_cases(pool, sog_region="tayside", limit=100),
            "status=under_review": lambda: casework.list_cases(pool, states=("under_review",), limit=100),
        }
        print(f"{'query':40} {'median ms':>10} {'max ms':>10}")
        for name, query in queries.items():
            median, worst = await timed(args.repeat, query)
            print(f"{name:40} {median:10.1f} {worst:10.1f}")
    finally:
        await pool.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cases", type=int, default=20_000)
    parser.add_argument("--repeat", type=int, default=20)
    args = parser.parse_args()
    with bench_database() as dsn:
        asyncio.run(run(args, dsn))

if __name__ == "__main__":
    main()
