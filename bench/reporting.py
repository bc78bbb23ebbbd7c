"""Benchmark: rebuilding reporting's projections against raw consumption, and the
latency of a national report.

Starts its own Tansu and a fresh database on the local server, generates N events
(cases of 8 events each: notified, criteria assessed, review submitted, responded,
closed on the case topic; forwarded on the routing topic; a deadline opened and met on
the deadlines topic) spread over 2010-2025, and publishes them. Then, in the same run:

(a) raw aiokafka consumption of all N from the broker (bench/ceilings.py: no group,
    `getmany` batches); beside it, the same consumption validating every event (the
    floor of a rebuild in one process, printed, not a ceiling);
(b) `sir report rebuild` (services/reporting/commands.py) from the same topics: read,
    fold, swap into PostgreSQL;
(c) the national report over the whole span, several times;
(d) the same report as known at a moment halfway through (as_of: row versions read);
(e) drill-downs: the cases behind a figure, a table row, and a figure as of that moment.

It prints events/s for (a) and (b) and their ratio (target: the rebuild at least half
the raw rate), and the report's latency (target: under 1 s). The rebuild finds each
topic's end by `idle_polls` empty fetches; that idle tail (idle_polls x poll_ms, once
per read phase) is subtracted from its time, and printed.

    .venv/bin/python bench/reporting.py --events 1000000
    .venv/bin/python bench/reporting.py --events 50000     # a quick check
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import functools
import json
import random
import statistics
import time
import uuid

from aiokafka import AIOKafkaProducer
from ceilings import ratio, raw_consume, report_row
from pipeline import bench_database

from services.reporting import commands
from services.reporting.app import SERVICE
from services.reporting.queries import compute_cases, compute_national
from shared import devstack
from shared.db import COMMON, create_pool, migrate
from shared.events import ANY_EVENT
from shared.messaging import CASE_EVENTS, DEADLINE_EVENTS, PLATFORM_TOPICS, ROUTING_EVENTS, ensure_topics
from shared.reference import LOCAL_AUTHORITY_SLUGS, VOCABULARIES
from shared.settings import Settings

EVENTS_PER_CASE = 8
START = dt.datetime(2010, 1, 4, 10, tzinfo=dt.timezone.utc)
SPAN_DAYS = 16 * 365


def iso(moment: dt.datetime) -> str:
    return moment.isoformat().replace("+00:00", "Z")


def case_events(rng: random.Random, number: int) -> list[tuple[str, bytes, bytes]]:
    """(topic, key, value) of one case's 8 events."""
    case_id = str(uuid.UUID(int=rng.getrandbits(128), version=4))
    la = rng.choice(LOCAL_AUTHORITY_SLUGS)
    received = START + dt.timedelta(days=rng.randrange(SPAN_DAYS), minutes=rng.randrange(480))
    incident = (received - dt.timedelta(days=rng.choice([1, 2, 3, 5, 8, 13, 40, 200]))).date()

    def envelope(event_type: str, at: dt.datetime, data: dict, role: str, sequence: int | None = None) -> bytes:
        return json.dumps({
            "event_id": str(uuid.UUID(int=rng.getrandbits(128), version=4)), "event_type": event_type,
            "schema_version": 1, "case_id": case_id, "local_authority": la, "received_at": iso(at),
            "recorded_at": iso(at), "actor": {"role": role, "id": "bench"}, "data": data,
            **({"sequence": sequence} if sequence else {}),
        }).encode()

    reviewed = received + dt.timedelta(days=rng.randint(20, 120))
    responded = reviewed + dt.timedelta(days=rng.randint(5, 45))
    forwarded = received + dt.timedelta(hours=rng.choice([2, 20, 30, 60, 100]))
    due = received + dt.timedelta(days=91)
    deadline = {"rule": "review_submission", "started_at": iso(received), "due_at": iso(due)}
    key = case_id.encode()
    return [
        (CASE_EVENTS, key, envelope("incident.notified", received, {
            "council_reference": f"B-{number}", "incident_date": incident.isoformat(),
            "criterion": "charged_with_serious_offence", "incident_type": rng.choice(VOCABULARIES["incident_type"]),
            "order_type": rng.choice(VOCABULARIES["order_type"]), "subject_role": "perpetrator",
            "mappa": {"applies": False}, "domestic_abuse_aggravated": rng.random() < 0.2,
            "historical": False, "signed_off_by": rng.choice(VOCABULARIES["sign_off_role"]),
        }, "council", 1)),
        (ROUTING_EVENTS, key, envelope("notification.forwarded", forwarded, {
            "recipient": "scottish-government", "channel": "topic", "attempts": 1, "delivered_at": iso(forwarded),
        }, "service")),
        (DEADLINE_EVENTS, key, envelope("deadline.opened", received, deadline, "service")),
        (CASE_EVENTS, key, envelope("notification.criteria_assessed", received + dt.timedelta(days=1),
                                    {"meets_criteria": True}, "inspectorate", 2)),
        (CASE_EVENTS, key, envelope("review.submitted", reviewed, {
            "review_type": rng.choice(["initial_analysis", "comprehensive"]),
            "signed_off_by": rng.choice(VOCABULARIES["sign_off_role"]), "reviewer_independent": True,
            "risk_assessment": {"completed": True, "up_to_date": rng.random() < 0.6, "tools": ["lscmi"]},
            "risk_management_plan": {"in_place": rng.random() < 0.6, "informed_by_assessment": rng.random() < 0.5},
            "order_reviews_referenced": rng.random() < 0.4, "good_practice_identified": False,
            "findings": rng.sample(VOCABULARIES["finding"], 2),
        }, "council", 3)),
        (DEADLINE_EVENTS, key, envelope("deadline.met", reviewed, deadline | {"met_at": iso(reviewed)}, "service")),
        (CASE_EVENTS, key, envelope("review.responded", responded, {"outcome": "concluded"}, "inspectorate", 4)),
        (CASE_EVENTS, key, envelope("case.closed", responded + dt.timedelta(days=1), {"reason": "concluded"}, "inspectorate", 5)),
    ]


async def publish(bootstrap: str, events: int, seed: int) -> float:
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks=1, enable_idempotence=False,
                                linger_ms=50, max_batch_size=1_048_576, max_request_size=8_388_608)
    await producer.start()
    rng = random.Random(seed)
    started = time.perf_counter()
    try:
        pending = []
        for number in range(events // EVENTS_PER_CASE):
            for topic, key, value in case_events(rng, number):
                pending.append(await producer.send(topic, value, key=key))
            if len(pending) >= 20_000:
                await asyncio.gather(*pending)
                pending.clear()
        await asyncio.gather(*pending)
    finally:
        await producer.stop()
    return time.perf_counter() - started


async def main(args: argparse.Namespace, database_url: str) -> None:
    events = args.events // EVENTS_PER_CASE * EVENTS_PER_CASE
    with devstack.Tansu() as broker:
        settings = Settings(database_url=database_url, kafka_bootstrap=broker.bootstrap,
                            kafka_partitions=args.partitions)
        await ensure_topics(broker.bootstrap, PLATFORM_TOPICS, args.partitions)
        publishing = await publish(broker.bootstrap, events, args.seed)
        print(f"published {events:,} events in {publishing:.1f}s ({events / publishing:,.0f}/s)")

        raw_count, raw_seconds = await raw_consume(
            broker.bootstrap, (CASE_EVENTS, ROUTING_EVENTS, DEADLINE_EVENTS), events,
            fetch_max_wait_ms=settings.fetch_max_wait_ms,
        )
        raw_rate = raw_count / raw_seconds
        print(f"(a) raw aiokafka consumption: {raw_count:,} records in {raw_seconds:.2f}s = {raw_rate:,.0f} events/s")
        # The floor of any rebuild in one process: it must validate every event as the live
        # consumer does (to skip exactly what that dead-letters), before folding or writing.
        valid_count, valid_seconds = await raw_consume(
            broker.bootstrap, (CASE_EVENTS, ROUTING_EVENTS, DEADLINE_EVENTS), events,
            fetch_max_wait_ms=settings.fetch_max_wait_ms, each=ANY_EVENT.validate_json,
        )
        print(f"    consuming and validating only (ANY_EVENT.validate_json, nothing folded or written):"
              f" {valid_count / valid_seconds:,.0f} events/s = {valid_count / valid_seconds / raw_rate:.2f} of raw")

        pool = await create_pool(database_url, max_size=4)
        try:
            await migrate(pool, SERVICE.name, COMMON, SERVICE.migrations)
            cpu_before = time.process_time()
            result = await commands.rebuild(pool, settings, idle_polls=args.idle_polls, poll_ms=args.poll_ms)
            cpu = time.process_time() - cpu_before
            idle = 2 * args.idle_polls * args.poll_ms / 1000
            busy = result.seconds - idle
            rebuild_rate = result.records / busy
            print(f"(b) rebuild: {result.events:,} events applied ({result.records:,} records) in"
                  f" {result.seconds:.2f}s, less {idle:.1f}s of end-of-topic polls = {busy:.2f}s"
                  f" = {rebuild_rate:,.0f} events/s (read and fold {result.read_seconds:.2f}s)")
            print("    steps: " + ", ".join(f"{k} {v:.2f}s" for k, v in result.timings.items()))
            # CPU time holds on a shared machine where wall time does not (docs/performance.md).
            print(f"    the rebuild's own CPU: {cpu:.2f}s = {cpu / result.records * 1e6:.1f} us an event")
            print(f"    rebuild / raw = {rebuild_rate / raw_rate:.2f} (target >= 0.5)")
            report_row(f"sir report rebuild, {events:,} events", f"{rebuild_rate:,.0f} events/s",
                       f"raw aiokafka consume {raw_rate:,.0f} events/s", ratio(rebuild_rate, raw_rate), "≥ 0.5")

            latencies = []
            for _ in range(args.repeat):
                started = time.perf_counter()
                report = await compute_national(pool, dt.date(2010, 1, 1), dt.date(2025, 12, 31))
                latencies.append(time.perf_counter() - started)
            print(f"(c) national report over {report['figures']['notifications']:,} notifications and"
                  f" {report['figures']['reviews']:,} reviews: median {statistics.median(latencies) * 1000:.0f} ms,"
                  f" max {max(latencies) * 1000:.0f} ms over {args.repeat} runs (target < 1000 ms)")
            report_row(f"national report over {report['figures']['notifications']:,} notifications",
                       f"median {statistics.median(latencies) * 1000:.0f} ms", target="< 200 ms")
            await as_of_and_drill_down(pool, args.repeat)
        finally:
            await pool.close()


async def _timed(repeat: int, work) -> tuple[object, list[float]]:
    latencies = []
    for _ in range(repeat):
        started = time.perf_counter()
        result = await work()
        latencies.append(time.perf_counter() - started)
    return result, latencies


def _ms(latencies: list[float]) -> str:
    return f"median {statistics.median(latencies) * 1000:.0f} ms, max {max(latencies) * 1000:.0f} ms"


async def as_of_and_drill_down(pool, repeat: int) -> None:
    """(d) the national report as known at a moment halfway through the history (every case
    recorded after it changed since: the row versions are read), (e) drill-downs."""
    versions = {t: await pool.fetchval(f"SELECT count(*) FROM reporting.{t}_versions")
                for t in ("notifications", "reviews", "forwards", "deadlines")}
    print(f"    row versions kept for as-of: {versions}")
    as_of = dt.datetime(2018, 1, 1, tzinfo=dt.timezone.utc)
    report, latencies = await _timed(repeat, lambda: compute_national(
        pool, dt.date(2010, 1, 1), dt.date(2025, 12, 31), as_of=as_of))
    print(f"(d) national report as of {as_of:%Y-%m-%d} over the whole span ({report['figures']['notifications']:,}"
          f" notifications, {report['figures']['reviews']:,} reviews known then): {_ms(latencies)} (target < 1000 ms)")
    for label, period, figure, value in (
        ("one year, notified late", (dt.date(2017, 1, 1), dt.date(2017, 12, 31)), "notified_late", None),
        ("one year, one authority's row", (dt.date(2017, 1, 1), dt.date(2017, 12, 31)),
         "notifications_by_authority", "glasgow-city"),
        ("whole span, reviews within 3 months", (dt.date(2010, 1, 1), dt.date(2025, 12, 31)),
         "reviews_within_3_months", None),
    ):
        listed, latencies = await _timed(repeat, functools.partial(compute_cases, pool, *period, figure, value))
        print(f"(e) drill-down, {label}: {listed['count']:,} cases, {_ms(latencies)} (target < 1000 ms)")
    listed, latencies = await _timed(repeat, lambda: compute_cases(
        pool, dt.date(2017, 1, 1), dt.date(2017, 12, 31), "notified_late", as_of=as_of))
    print(f"(e) drill-down as of {as_of:%Y-%m-%d}, one year, notified late: {listed['count']:,} cases, {_ms(latencies)}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--partitions", type=int, default=6)
    parser.add_argument("--idle-polls", type=int, default=2)
    parser.add_argument("--poll-ms", type=int, default=300)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--seed", type=int, default=1)
    with bench_database() as database_url:
        asyncio.run(main(parser.parse_args(), database_url))
