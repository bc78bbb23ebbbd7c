"""The counts kept by month (issue 15) give the figures the rows give (real PostgreSQL).

A history of cases over fifteen months goes through reporting's live consumers (the save
path notes what it changes), is summarised half-way, and goes on: some months are then
summarised, some stale (rows, reviews, responses and forwards changed since), and the
partial months at the ends of any period are read from the rows. For every period drawn
(whole months or not, running or ended, on either basis, as of a past moment or not) the
report added up from the summaries equals the report read from the rows alone, in one
snapshot. The rebuild's summaries equal the live ones, and migration 103 carries the rows
already there."""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import random
import uuid
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from services.reporting import handlers, repository
from services.reporting.app import SERVICE
from services.reporting.commands import Projection, record_of
from services.reporting.domain import national_report
from services.reporting.queries import _signals, compute_national, report_scope
from shared.db import COMMON, create_pool, migrate
from shared.events import ANY_EVENT
from shared.messaging import CASE_EVENTS, ROUTING_EVENTS
from shared.reference import LOCAL_AUTHORITY_SLUGS, MAPPA_REGIONS, VOCABULARIES
from tests.factories import envelope_json, notification, review
from tests.integration.helpers import eventually

UTC = dt.timezone.utc
# The history: Scottish dates from 25 November 2019 to mid-February 2021 (BST included:
# a notification at 23:30 UTC in summer is the next day's, maybe the next month's).
START = dt.datetime(2019, 11, 25, tzinfo=UTC)
SPAN_DAYS = 450
# Summarised after the events received before this, and the forwards of most cases.
CUT = dt.datetime(2020, 9, 10, tzinfo=UTC)
LATE_FORWARDS = (2020, 1)  # the forwards of the cases notified then come after it
FIRST_DAY, LAST_DAY = dt.date(2019, 11, 1), dt.date(2021, 6, 30)


def _event(event_type: str, case_id: uuid.UUID, local_authority: str, at: dt.datetime, data: dict,
           sequence: int | None = None) -> dict:
    return envelope_json(event_type, case_id, at, data, sequence) | {"local_authority": local_authority}


def _case(rng: random.Random, number: int) -> list[dict]:
    """One case's events: notified (on time or late), assessed (maybe twice), forwarded to
    the Scottish Government none, once or twice (in time or late) and maybe to a SOG,
    reviewed up to twice, with requests for information and responses."""
    case_id, la = uuid.UUID(int=rng.getrandbits(128), version=4), rng.choice(LOCAL_AUTHORITY_SLUGS[:6])
    received = START + dt.timedelta(days=rng.randrange(SPAN_DAYS), hours=rng.choice([6, 10, 15, 22]),
                                    minutes=rng.choice([0, 30, 59]))
    mappa = rng.random() < 0.3
    body = notification(
        council_reference=f"S-{number}",
        incident_date=(received.date() - dt.timedelta(days=rng.choice([0, 1, 3, 6, 9, 40]))).isoformat(),
        criterion=rng.choice(VOCABULARIES["criterion"]), incident_type=rng.choice(VOCABULARIES["incident_type"]),
        order_type=rng.choice(VOCABULARIES["order_type"]),
        mappa={"applies": True, "category": rng.choice([1, 3]), "level": rng.randint(1, 3)} if mappa
        else {"applies": False},
        domestic_abuse_aggravated=rng.random() < 0.3, historical=rng.random() < 0.1,
        signed_off_by=rng.choice(VOCABULARIES["sign_off_role"]),
    )
    events = [_event("incident.notified", case_id, la, received, body, 1)]
    at = received
    for _ in range(rng.choice([0, 1, 1, 2])):
        at += dt.timedelta(days=rng.randint(1, 20))
        events.append(_event("notification.criteria_assessed", case_id, la, at,
                             {"meets_criteria": rng.random() < 0.8}, len(events) + 1))
    for _ in range(rng.choice([0, 1, 1, 1, 2])):
        at += dt.timedelta(days=rng.randint(10, 100))
        events.append(_event("review.submitted", case_id, la, at, review(
            review_type=rng.choice(VOCABULARIES["review_type"]),
            signed_off_by=rng.choice(VOCABULARIES["sign_off_role"]), reviewer_independent=rng.random() < 0.7,
            risk_assessment={"completed": rng.random() < 0.8, "up_to_date": rng.random() < 0.5,
                             "tools": rng.sample(VOCABULARIES["risk_tool"], rng.randint(0, 2))},
            risk_management_plan={"in_place": rng.random() < 0.7, "informed_by_assessment": rng.random() < 0.5},
            order_reviews_referenced=rng.random() < 0.5, good_practice_identified=rng.random() < 0.3,
            findings=rng.sample(VOCABULARIES["finding"], rng.randint(0, 3)),
        ), len(events) + 1))
        for _ in range(rng.choice([0, 0, 1, 2])):
            at += dt.timedelta(days=rng.randint(1, 10))
            events.append(_event("review.additional_info_requested", case_id, la, at, {}, len(events) + 1))
        if rng.random() < 0.75:
            at += dt.timedelta(days=rng.randint(3, 45))
            events.append(_event("review.responded", case_id, la, at, {
                "outcome": rng.choice(["concluded", "comprehensive_review_required"]),
                "iar_decision_appropriate": rng.choice([True, False, None]), "high_quality": rng.choice([True, False, None]),
            }, len(events) + 1))
    recipients = ["scottish-government"] * rng.choice([0, 1, 1, 1, 2]) + (["sog:" + next(iter(MAPPA_REGIONS))] * mappa)
    for attempt, recipient in enumerate(recipients):
        delivered = received + dt.timedelta(hours=rng.choice([1, 20, 50, 75, 200]))
        events.append(_event("notification.forwarded", case_id, la, delivered, {
            "recipient": recipient, "channel": "topic", "attempts": attempt + 1, "delivered_at": delivered.isoformat(),
        }))
    return events


def _history(cases: int = 260, seed: int = 15) -> list[list[dict]]:
    rng = random.Random(seed)
    return [_case(rng, number) for number in range(cases)]


def _topic(event: dict) -> str:
    return ROUTING_EVENTS if event["event_type"] == "notification.forwarded" else CASE_EVENTS


async def _apply(pool, events: list[dict], batch: int = 25) -> None:
    """Through the live consumers, in batches of several cases, each topic in the order received."""
    by_topic: dict[str, list] = {CASE_EVENTS: [], ROUTING_EVENTS: []}
    for event in sorted(events, key=lambda e: e["received_at"]):
        by_topic[_topic(event)].append(ANY_EVENT.validate_python(event))
    for topic, process in ((CASE_EVENTS, handlers.CASES), (ROUTING_EVENTS, handlers.FORWARDS)):
        arrivals = by_topic[topic]
        for start in range(0, len(arrivals), batch):
            async with pool.acquire() as conn, conn.transaction():
                await process.apply(conn, [(event, False) for event in arrivals[start:start + batch]])


def _rebuilt(events: list[dict]) -> Projection:
    """The projection `sir report rebuild` folds from these events."""
    projection = Projection()
    for offset, event in enumerate(sorted(events, key=lambda e: e["received_at"])):
        projection.add(record_of(_topic(event), json.dumps(event).encode(), offset))
    return projection


@pytest.fixture(scope="module")
async def seeded(infra):
    """The history applied live: summarised after the first part, then the rest applied
    (case events received after CUT, and the forwards of one case in four)."""
    pool = await create_pool(infra.new_database(), max_size=5)
    await migrate(pool, SERVICE.name, COMMON, SERVICE.migrations)
    history = _history()
    first, rest = [], []
    for case in history:
        notified = dt.datetime.fromisoformat(case[0]["received_at"])
        for event in case:
            if event["event_type"] == "notification.forwarded":
                later = (notified.year, notified.month) == LATE_FORWARDS
            else:
                later = dt.datetime.fromisoformat(event["received_at"]) >= CUT
            (rest if later else first).append(event)
    await _apply(pool, first)
    await repository.refresh_summaries(pool)
    await _apply(pool, rest)
    yield pool, [event for case in history for event in case]
    await pool.close()


async def _report(conn, scope: repository.Scope, summaries: repository.Summaries | None) -> dict:
    """The national report's figures and tables (with the extra tables) over the scope."""
    n = await repository.notification_counts(conn, scope, summaries)
    r = await repository.review_counts(conn, scope, summaries)
    return national_report(scope.period_from, scope.period_to, scope.as_at or dt.datetime.now(UTC), n, r,
                           extra_tables=_signals(scope, n, r, None))


async def _both(pool, period_from, period_to, now=None, as_of=None, basis="received"):
    """The report from the summaries where they may be read, and from the rows alone, in
    one snapshot; and the months read from the summaries."""
    async with pool.acquire() as conn, conn.transaction(isolation="repeatable_read", readonly=True):
        await repository.report_settings(conn)
        now = now or await repository.database_now(conn)
        scope = report_scope(period_from, period_to, now, as_of, basis)
        summaries = await repository.summaries(conn, scope)
        used = [] if summaries is None else summaries.usable(repository.AGGREGATES["notification_totals"], scope)
        return await _report(conn, scope, summaries), await _report(conn, scope, None), used


async def _stale_months(pool) -> set[dt.date]:
    rows = await pool.fetch(repository._STALE_MONTHS.format(stale=f"{repository.SCHEMA}.report_stale"))
    return {r["month"] for r in rows}


async def test_the_history_leaves_months_summarised_and_months_stale(seeded):
    pool, _ = seeded
    stale = await _stale_months(pool)
    summarised = {r["month"] for r in await pool.fetch("SELECT month FROM reporting.report_months")}
    in_2020 = {dt.date(2020, month, 1) for month in range(1, 13)}
    assert summarised - stale & in_2020, "some months of 2020 summarised and unchanged since"
    # case events after CUT; forwards of January's cases (noted by case)
    assert dt.date(2020, 10, 1) in stale and dt.date(2020, 1, 1) in stale
    _, _, used = await _both(pool, dt.date(2020, 1, 1), dt.date(2020, 12, 31))
    assert set(used) == (summarised - stale) & in_2020


_days = st.integers(0, (LAST_DAY - FIRST_DAY).days)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    start=_days, length=st.one_of(st.integers(0, 70), st.integers(0, 600)),
    # None: the database's clock (every period ended); else a moment inside the history
    now=st.one_of(st.none(), _days.map(lambda d: dt.datetime.combine(FIRST_DAY, dt.time(12), UTC)
                                       + dt.timedelta(days=d, hours=11))),
    as_of=st.one_of(st.none(), st.none(), _days.map(lambda d: dt.datetime.combine(FIRST_DAY, dt.time(23, 30), UTC)
                                                     + dt.timedelta(days=d))),
    basis=st.sampled_from(["received", "cohort"]),
)
async def test_summaries_and_rows_give_the_same_report(seeded, start, length, now, as_of, basis):
    pool, _ = seeded
    period_from = FIRST_DAY + dt.timedelta(days=start)
    fast, raw, _ = await _both(pool, period_from, period_from + dt.timedelta(days=length), now, as_of, basis)
    assert fast == raw


async def test_summarised_again_every_month_reads_from_the_summaries_with_the_same_figures(seeded):
    pool, _ = seeded
    await repository.refresh_summaries(pool)
    assert not await _stale_months(pool)
    for period, now in (
        ((dt.date(2019, 12, 1), dt.date(2021, 1, 31)), None),
        ((dt.date(2020, 1, 1), dt.date(2020, 12, 31)), None),
        ((dt.date(2020, 4, 1), dt.date(2020, 6, 30)), None),  # a quarter
        ((dt.date(2020, 2, 14), dt.date(2020, 8, 2)), None),  # partial months at both ends
        ((dt.date(2020, 1, 1), dt.date(2020, 12, 31)), dt.datetime(2020, 7, 2, 12, tzinfo=UTC)),  # running
        ((dt.date(2020, 6, 1), dt.date(2020, 6, 30)), dt.datetime(2020, 7, 1, 9, tzinfo=UTC)),  # forwards still due
    ):
        fast, raw, used = await _both(pool, *period, now)
        assert fast == raw, period
        assert used, period
    # The service's own path (summarising first, then reading) gives the same report.
    report = await compute_national(pool, dt.date(2019, 11, 1), dt.date(2021, 2, 28))
    _, raw, _ = await _both(pool, dt.date(2019, 11, 1), dt.date(2021, 2, 28), dt.datetime.fromisoformat(report["generated_at"]))
    assert report["figures"] == raw["figures"] and report["tables"] == raw["tables"]


async def test_the_rebuild_summarises_every_month_as_the_live_path_did(seeded):
    pool, events = seeded
    await repository.refresh_summaries(pool)
    live = {t: await repository.table_contents(pool, t) for t in repository.SUMMARY_TABLES}
    projection = _rebuilt(events)
    async with pool.acquire() as conn, conn.transaction():
        await repository.replace_all(conn, projection.tables(), versions=projection.versions())
    assert not await _stale_months(pool)
    rebuilt = {t: await repository.table_contents(pool, t) for t in repository.SUMMARY_TABLES}
    assert rebuilt == live
    fast, raw, used = await _both(pool, dt.date(2019, 11, 1), dt.date(2021, 6, 30))
    assert fast == raw and used


async def test_migration_103_summarises_the_rows_already_there(infra, tmp_path):
    """Upgrading: the months of the rows already stored are noted stale, so the first
    report summarises them; until then, and after, the figures are the rows'."""
    migrations = Path(SERVICE.migrations)
    before_103 = tmp_path / "migrations"
    before_103.mkdir()
    for sql in sorted(migrations.glob("*.sql")):  # noqa: ASYNC240 (a few small files)
        if sql.name < "103":
            (before_103 / sql.name).write_text(sql.read_text())
    pool = await create_pool(infra.new_database(), max_size=3)
    try:
        await migrate(pool, SERVICE.name, COMMON, before_103)
        tables = _rebuilt([event for case in _history(30, seed=7) for event in case]).tables()
        async with pool.acquire() as conn, conn.transaction():  # as written before 103: no summaries
            for table in ("notifications", "reviews", "forwards"):
                await conn.copy_records_to_table(table, records=tables[table],
                                                 columns=repository.table_columns(table), schema_name="reporting")

        await migrate(pool, SERVICE.name, COMMON, migrations)
        months = {r["month"] for r in await pool.fetch(
            "SELECT DISTINCT date_trunc('month', received_on::timestamp)::date AS month FROM reporting.notifications")}
        assert months <= await _stale_months(pool)
        period = (dt.date(2019, 11, 1), dt.date(2021, 6, 30))
        fast, raw, used = await _both(pool, *period)
        assert fast == raw and not used, "stale months are read from their rows"
        report = await compute_national(pool, *period)  # summarises them first
        assert not await _stale_months(pool)
        fast, raw, used = await _both(pool, *period, dt.datetime.fromisoformat(report["generated_at"]))
        assert fast == raw and used
        assert report["figures"] == raw["figures"] and report["figures"]["notifications"] == len(tables["notifications"])
    finally:
        await pool.close()


async def test_a_report_during_a_rebuild_waits_for_it_and_neither_fails(seeded):
    """A report that reads while a rebuild holds the projections waits for it, holding read
    locks on the summaries' tables; the rebuild's summarising must not wait for the report
    in turn (it emptied them with TRUNCATE, and PostgreSQL ended the rebuild as a deadlock)."""
    pool, _ = seeded
    async with pool.acquire() as rebuild:
        transaction = rebuild.transaction()
        await transaction.start()
        try:
            await repository.lock_summaries(rebuild)  # as replace_all does before the tables (the gate left out)
            await rebuild.execute(f"LOCK TABLE {repository.SCHEMA}.notifications IN ACCESS EXCLUSIVE MODE")
            report = asyncio.create_task(compute_national(pool, dt.date(2019, 1, 1), dt.date(2020, 12, 31)))
            await eventually(lambda: _waiting_for_a_lock(rebuild), timeout=20, what="the report to wait for the rebuild")
            await repository.summarise(rebuild, None)
        finally:
            await transaction.rollback()
        async with asyncio.timeout(30):
            assert (await report)["figures"]["notifications"] > 0


async def _waiting_for_a_lock(conn) -> bool:
    """On the rebuild's own connection: the report holds every other one of the pool."""
    await conn.execute("SELECT pg_stat_clear_snapshot()")  # else read once a transaction
    return bool(await conn.fetchval(
        "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND wait_event_type = 'Lock'"))
