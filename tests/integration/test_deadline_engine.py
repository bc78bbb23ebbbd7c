"""The deadlines engine against real PostgreSQL: the handler applied to events as the
consumer would, and the scheduler with injected clocks (no broker, no sleeping)."""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import os
import signal
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

from services.deadlines.app import SERVICE
from services.deadlines.handlers import on_event
from services.deadlines.scheduler import Scheduler
from shared.consumer import Delivery
from shared.db import COMMON, create_pool, migrate
from shared.events import ANY_EVENT
from shared.messaging import IMPORTED_HEADER
from shared.settings import get_settings
from tests.clocks import FixedClock
from tests.factories import mappa_notification, notification, review
from tests.integration.helpers import eventually

UTC = dt.timezone.utc
ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
async def database(infra):
    dsn = infra.new_database()
    pool = await create_pool(dsn, max_size=6)
    await migrate(pool, SERVICE.name, COMMON, SERVICE.migrations)
    yield dsn, pool
    await pool.close()


@pytest.fixture
async def pool(database):
    return database[1]


def _event(event_type, data, case_id, received_at, *, recorded_at=None, local_authority="glasgow-city", role="council"):
    return ANY_EVENT.validate_python({
        "event_id": str(uuid.uuid4()), "event_type": event_type, "schema_version": 1,
        "case_id": str(case_id), "local_authority": local_authority,
        "received_at": received_at.isoformat(), "recorded_at": (recorded_at or received_at).isoformat(),
        "actor": {"role": role, "id": "tok_test"}, "data": data,
    })


def _forwarded(case_id, recipient, at, **kwargs):
    data = {"recipient": recipient, "channel": "topic", "attempts": 1, "delivered_at": at.isoformat()}
    return _event("notification.forwarded", data, case_id, at, role="service", **kwargs)


async def _apply(pool, event, imported=False):
    async with pool.acquire() as conn, conn.transaction():
        await on_event(conn, event, Delivery("test", 0, 0, imported))


async def _deadlines(pool, case_id) -> dict[tuple[str, int], dict]:
    rows = await pool.fetch("SELECT * FROM deadlines.deadlines WHERE case_id = $1", case_id)
    return {(r["rule"], r["sequence"]): dict(r) for r in rows}


async def _outbox(pool, case_id=None) -> list[dict]:
    rows = await pool.fetch("SELECT value FROM deadlines.emitted_events ORDER BY position")
    events = [json.loads(r["value"]) for r in rows]
    return [e for e in events if case_id is None or e["case_id"] == str(case_id)]


def _kinds(events, rule=None) -> list[str]:
    return [e["event_type"] for e in events if rule is None or e["data"]["rule"] == rule]


# A Monday; no holidays near it.
MONDAY = dt.datetime(2026, 11, 2, 10, 0, tzinfo=UTC)


async def test_a_notification_opens_its_deadlines_and_is_judged_at_once(pool):
    case = uuid.uuid4()
    await _apply(pool, _event("incident.notified", mappa_notification(incident_date="2026-10-26"), case, MONDAY))
    deadlines = await _deadlines(pool, case)
    assert set(deadlines) == {("notification", 1), ("sg_forward", 1), ("sog_forward", 1), ("review_submission", 1)}
    # Incident Monday 26 Oct, notified Monday 2 Nov: day 5 is Monday 2 Nov, on time.
    assert deadlines["notification", 1]["status"] == "met"
    assert deadlines["notification", 1]["working_days_late"] == 0
    # Day 2 is Wed 4 Nov: breached as Thu 5 Nov begins.
    assert deadlines["sg_forward", 1]["due_at"] == dt.datetime(2026, 11, 5, 0, 0, tzinfo=UTC)
    assert deadlines["review_submission", 1]["due_at"] == dt.datetime(2027, 2, 3, 0, 0, tzinfo=UTC)  # end of 2 Feb
    events = await _outbox(pool, case)
    assert _kinds(events, "notification") == ["deadline.opened", "deadline.met"]
    assert _kinds(events).count("deadline.opened") == 4
    met = next(e for e in events if e["event_type"] == "deadline.met")
    assert met["data"]["met_at"].startswith("2026-11-02T10:00") and met["actor"] == {"role": "service", "id": "deadlines"}


async def test_a_late_notification_is_met_with_the_working_days_late(pool):
    case = uuid.uuid4()
    await _apply(pool, _event("incident.notified", notification(incident_date="2026-10-19"), case, MONDAY))
    # Incident Mon 19 Oct: day 5 is Mon 26 Oct; notified Mon 2 Nov = 5 working days late.
    assert (await _deadlines(pool, case))["notification", 1]["working_days_late"] == 5


async def test_forwardings_meet_sg_and_sog_forward_even_when_they_come_first(pool):
    case = uuid.uuid4()
    # The routing topic is read apart from the case events: the forwarding may come first.
    await _apply(pool, _forwarded(case, "scottish-government", MONDAY + dt.timedelta(hours=1)))
    await _apply(pool, _event("incident.notified", mappa_notification(), case, MONDAY))
    await _apply(pool, _forwarded(case, "sog:glasgow", MONDAY + dt.timedelta(days=4)))  # Friday: 2 days late
    deadlines = await _deadlines(pool, case)
    assert deadlines["sg_forward", 1]["status"] == "met" and deadlines["sg_forward", 1]["working_days_late"] == 0
    assert deadlines["sog_forward", 1]["status"] == "met" and deadlines["sog_forward", 1]["working_days_late"] == 2
    assert await pool.fetchval("SELECT count(*) FROM deadlines.early_stops WHERE case_id = $1", case) == 0


async def test_a_forwarding_and_its_notification_applied_at_once_by_two_processes(pool):
    """Two deadlines processes, one reading the routing topic's partition and the other
    the case events': the forwarding's transaction is still open when the notification
    is applied. The second waits for the first, sees its early stop, and meets sg_forward."""
    case = uuid.uuid4()
    async with pool.acquire() as first, first.transaction():
        await on_event(first, _forwarded(case, "scottish-government", MONDAY + dt.timedelta(hours=1)),
                       Delivery("test", 0, 0))
        second = asyncio.create_task(_apply(pool, _event("incident.notified", notification(), case, MONDAY)))
        await asyncio.sleep(0.3)
        assert not second.done()  # held until the forwarding commits
    await second
    assert (await _deadlines(pool, case))["sg_forward", 1]["status"] == "met"


async def test_the_review_cycle_opens_and_meets_each_rule_in_turn(pool):
    case, day = uuid.uuid4(), MONDAY
    steps = [
        ("incident.notified", notification(), "council"),
        ("review.submitted", review(), "council"),
        ("review.additional_info_requested", {}, "inspectorate"),
        ("review.additional_info_provided", {}, "council"),
        ("review.additional_info_requested", {}, "inspectorate"),
        ("review.additional_info_provided", {}, "council"),
        ("review.responded", {"outcome": "comprehensive_review_required"}, "inspectorate"),
        ("review.submitted", review(review_type="comprehensive"), "council"),
        ("review.responded", {"outcome": "concluded"}, "inspectorate"),
    ]
    for event_type, data, role in steps:
        day += dt.timedelta(days=1)
        await _apply(pool, _event(event_type, data, case, day, role=role))
    deadlines = await _deadlines(pool, case)
    assert {key: d["status"] for key, d in deadlines.items() if key[0] != "sg_forward"} == {
        ("notification", 1): "met",
        ("review_submission", 1): "met",
        ("inspectorate_response", 1): "met",
        ("additional_info", 1): "met",
        ("additional_info", 2): "met",
        ("comprehensive_review", 1): "met",
        ("inspectorate_response", 2): "met",
    }
    assert deadlines["sg_forward", 1]["status"] == "open"
    await _apply(pool, _event("case.closed", {"reason": "concluded"}, case, day + dt.timedelta(days=1), role="inspectorate"))
    assert (await _deadlines(pool, case))["sg_forward", 1]["status"] == "cancelled"
    assert _kinds(await _outbox(pool, case), "sg_forward") == ["deadline.opened", "deadline.cancelled"]


async def test_criteria_not_met_cancels_the_open_deadlines(pool):
    case = uuid.uuid4()
    await _apply(pool, _event("incident.notified", notification(), case, MONDAY))
    await _apply(pool, _event("notification.criteria_assessed", {"meets_criteria": False}, case, MONDAY, role="inspectorate"))
    statuses = {key: d["status"] for key, d in (await _deadlines(pool, case)).items()}
    assert statuses == {("notification", 1): "met", ("sg_forward", 1): "cancelled", ("review_submission", 1): "cancelled"}


async def test_imported_history_is_settled_by_timestamps(pool):
    case, long_ago = uuid.uuid4(), dt.datetime(2014, 3, 3, 10, 0, tzinfo=UTC)
    forwarded = _forwarded(case, "scottish-government", long_ago + dt.timedelta(hours=2))
    await _apply(pool, _event("incident.notified", notification(incident_date="2014-02-24"), case, long_ago), imported=True)
    await _apply(pool, forwarded, imported=True)
    # Review submitted five months later: review_submission met, late, and no breach for it.
    await _apply(pool, _event("review.submitted", review(), case, long_ago + dt.timedelta(days=150)), imported=True)
    await _apply(pool, _event("review.responded", {"outcome": "concluded"}, case, long_ago + dt.timedelta(days=160),
                              role="inspectorate"), imported=True)
    await _apply(pool, _event("case.closed", {"reason": "concluded"}, case, long_ago + dt.timedelta(days=161),
                              role="inspectorate"), imported=True)
    deadlines = await _deadlines(pool, case)
    assert deadlines["review_submission", 1]["status"] == "met"
    assert deadlines["review_submission", 1]["working_days_late"] > 20
    assert {d["status"] for d in deadlines.values()} == {"met"}
    # Far in the future nothing is warned or breached: the case's history settled every deadline.
    assert await Scheduler(FixedClock(dt.datetime(2099, 1, 1, tzinfo=UTC))).run_until_idle(pool) == 0
    assert set(_kinds(await _outbox(pool, case))) == {"deadline.opened", "deadline.met"}


async def _outbox_imported(pool, case_id) -> list[tuple[str, str, bool]]:
    """(event type, rule, carries the imported mark) of each deadline event of the case."""
    rows = await pool.fetch("SELECT value, headers FROM deadlines.emitted_events ORDER BY position")
    return [(e["event_type"], e["data"]["rule"], r["headers"].get(IMPORTED_HEADER) == "true")
            for r in rows if (e := json.loads(r["value"]))["case_id"] == str(case_id)]


async def test_an_imported_deadline_already_past_due_is_breached_once_marked_imported(pool):
    """History that leaves a case open: its review never came. Once the case's history has
    settled the overdue deadlines are breached, once, with the imported mark; a second
    scheduler, or a later round, breaches nothing more."""
    case, long_ago = uuid.uuid4(), dt.datetime(2014, 6, 2, 10, 0, tzinfo=UTC)
    await _apply(pool, _event("incident.notified", notification(incident_date="2014-05-30"), case, long_ago), imported=True)
    await _apply(pool, _forwarded(case, "scottish-government", long_ago + dt.timedelta(hours=1)), imported=True)
    review_submission = (await _deadlines(pool, case))["review_submission", 1]
    assert review_submission["watched"] and review_submission["status"] == "open"
    now = await pool.fetchval("SELECT now()")
    # While the history may still be coming, the scheduler leaves it alone.
    assert await Scheduler(FixedClock(now)).run_until_idle(pool) == 0
    later = FixedClock(now + dt.timedelta(seconds=2 * get_settings().import_settle_seconds))
    assert await Scheduler(later).run_until_idle(pool) == 1
    assert await Scheduler(later).run_until_idle(pool) == 0
    assert await Scheduler(FixedClock(now + dt.timedelta(days=4000))).run_until_idle(pool) == 0
    row = (await _deadlines(pool, case))["review_submission", 1]
    assert (row["status"], row["breached_at"]) == ("breached", row["due_at"])
    breaches = [e for e in await _outbox_imported(pool, case) if e[0] == "deadline.breached"]
    assert breaches == [("deadline.breached", "review_submission", True)]


async def test_an_imported_deadline_still_ahead_is_warned_and_breached_like_a_live_one(pool):
    case = uuid.uuid4()
    now = await pool.fetchval("SELECT now()")
    received = now - dt.timedelta(days=20)  # review_submission due in about 70 days
    incident = (received - dt.timedelta(days=1)).date().isoformat()
    await _apply(pool, _event("incident.notified", notification(incident_date=incident), case, received), imported=True)
    await _apply(pool, _forwarded(case, "scottish-government", received + dt.timedelta(hours=1)), imported=True)
    row = (await _deadlines(pool, case))["review_submission", 1]
    assert row["watched"] and row["next_fire_at"] == row["warn_at"] and row["warn_at"] > now
    clock = FixedClock(row["warn_at"])
    assert await Scheduler(clock).run_until_idle(pool) == 1
    clock.moment = row["due_at"]
    assert await Scheduler(clock).run_until_idle(pool) == 1
    assert await Scheduler(clock).run_until_idle(pool) == 0
    assert [e for e in await _outbox_imported(pool, case) if e[1] == "review_submission"] == [
        ("deadline.opened", "review_submission", True),
        ("deadline.warning", "review_submission", True),
        ("deadline.breached", "review_submission", True),
    ]


async def test_a_live_event_recorded_after_its_deadline_passed_is_not_watched(pool):
    """An event received long ago but recorded now (history through the live path)."""
    case = uuid.uuid4()
    received = dt.datetime(2020, 1, 6, 10, 0, tzinfo=UTC)
    await _apply(pool, _event("incident.notified", notification(incident_date="2020-01-06"), case, received,
                              recorded_at=dt.datetime.now(UTC)))
    assert not any(d["watched"] for d in (await _deadlines(pool, case)).values())


async def test_the_scheduler_warns_then_breaches_once(pool):
    case = uuid.uuid4()
    notice = _event("incident.notified", notification(), case, MONDAY, recorded_at=MONDAY)
    notified = notice.event_id
    await _apply(pool, notice)
    sg = (await _deadlines(pool, case))["sg_forward", 1]
    # One working day before the breach (Thu 5 Nov begins): as Wed 4 Nov, its last day, begins.
    assert sg["warn_at"] == dt.datetime(2026, 11, 4, 0, 0, tzinfo=UTC)
    clock = FixedClock(sg["warn_at"])
    scheduler = Scheduler(clock)
    await scheduler.run_until_idle(pool)
    await scheduler.run_until_idle(pool)
    assert _kinds(await _outbox(pool, case), "sg_forward") == ["deadline.opened", "deadline.warning"]
    clock.moment = sg["due_at"]
    await scheduler.run_until_idle(pool)
    clock.moment = sg["due_at"] + dt.timedelta(days=400)
    await scheduler.run_until_idle(pool)
    await Scheduler(clock).run_until_idle(pool)  # a restarted scheduler finds nothing more
    events = await _outbox(pool, case)
    assert _kinds(events, "sg_forward") == ["deadline.opened", "deadline.warning", "deadline.breached"]
    # Its warning time and due time both passed before the round: the breach alone.
    assert _kinds(events, "review_submission") == ["deadline.opened", "deadline.breached"]
    breach = next(e for e in events if e["event_type"] == "deadline.breached" and e["data"]["rule"] == "sg_forward")
    assert breach["data"]["breached_at"] == breach["data"]["due_at"] == breach["received_at"]
    # Each event names its cause: the notification opened the deadline, which caused its
    # warning and breach.
    opened = next(e for e in events if e["event_type"] == "deadline.opened" and e["data"]["rule"] == "sg_forward")
    warning = next(e for e in events if e["event_type"] == "deadline.warning" and e["data"]["rule"] == "sg_forward")
    assert opened["causation_id"] == str(notified)
    assert warning["causation_id"] == breach["causation_id"] == opened["event_id"]
    # The forwarding comes at last: met, late, after the breach.
    await _apply(pool, _forwarded(case, "scottish-government", dt.datetime(2026, 11, 9, 9, 0, tzinfo=UTC)))
    sg = (await _deadlines(pool, case))["sg_forward", 1]
    assert (sg["status"], sg["working_days_late"], sg["breached_at"]) == ("met", 3, sg["due_at"])


async def _open_many(pool, count: int, due: dt.datetime) -> list[uuid.UUID]:
    cases = [uuid.uuid4() for _ in range(count)]
    await pool.executemany(
        "INSERT INTO deadlines.deadlines (case_id, rule, sequence, local_authority, status, watched, imported,"
        " started_at, due_at, next_fire_at, opened_by) VALUES ($1, 'review_submission', 1, 'fife', 'open', true,"
        " false, $2, $3, $3, $1)",
        [(case, due - dt.timedelta(days=90), due) for case in cases],
    )
    return cases


async def _breaches_per_case(pool) -> dict[str, int]:
    counts: dict[str, int] = {}
    for event in await _outbox(pool):
        if event["event_type"] == "deadline.breached":
            counts[event["case_id"]] = counts.get(event["case_id"], 0) + 1
    return counts


async def test_two_schedulers_at_once_breach_each_deadline_once(pool):
    due = dt.datetime(2026, 1, 1, tzinfo=UTC)
    cases = await _open_many(pool, 3000, due)
    clock = FixedClock(due + dt.timedelta(seconds=1))
    first, second = Scheduler(clock, batch_size=100), Scheduler(clock, batch_size=100)
    fired = await asyncio.gather(first.run_until_idle(pool), second.run_until_idle(pool))
    assert sum(fired) == len(cases)
    assert all(fired), "both schedulers took part"
    counts = await _breaches_per_case(pool)
    assert set(counts) == {str(c) for c in cases} and set(counts.values()) == {1}


# Claims one batch, enqueues its events, says so, and waits to be killed before committing.
_HOLDING_SCRIPT = """
import asyncio, datetime as dt, sys
from services.deadlines.scheduler import fire
from shared.db import create_pool

async def main():
    pool = await create_pool(sys.argv[1], max_size=1)
    async with pool.acquire() as conn, conn.transaction():
        rows = await fire(conn, dt.datetime.fromisoformat(sys.argv[2]), int(sys.argv[3]))
        print(f"holding {len(rows)}", flush=True)
        await asyncio.sleep(3600)

asyncio.run(main())
"""


async def test_a_scheduler_killed_mid_batch_leaves_each_breach_to_be_emitted_once(database):
    dsn, pool = database
    due = dt.datetime(2026, 1, 1, tzinfo=UTC)
    cases = await _open_many(pool, 500, due)
    now = due + dt.timedelta(seconds=1)
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-c", _HOLDING_SCRIPT, dsn, now.isoformat(), "200",
        stdout=subprocess.PIPE, cwd=ROOT, env=os.environ | {"PYTHONPATH": str(ROOT)},
    )
    try:
        line = await asyncio.wait_for(process.stdout.readline(), 60)
        assert line.decode().strip() == "holding 200"
        # While it holds its batch, another scheduler takes only the rest.
        assert await Scheduler(FixedClock(now), batch_size=1000).run_once(pool) == 300
    finally:
        process.send_signal(signal.SIGKILL)
        await process.wait()
    assert process.returncode == -signal.SIGKILL
    # Its transaction died with it: those 200 are due again, and fire once.
    scheduler, fired = Scheduler(FixedClock(now)), []

    async def all_fired():
        fired.append(await scheduler.run_until_idle(pool))
        return sum(fired) >= 200

    await eventually(all_fired, timeout=30, what="the killed scheduler's batch to be released")
    assert sum(fired) == 200
    counts = await _breaches_per_case(pool)
    assert set(counts) == {str(c) for c in cases} and set(counts.values()) == {1}
