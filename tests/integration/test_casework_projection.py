"""The casework view against real PostgreSQL: reporting's consumers (handlers.py: the
deciders behind shared/process.py) fed events directly, and what `list_cases` reads back
from the projections (deadline statuses, overdue by the database clock, filters, order
and paging)."""

from __future__ import annotations

import datetime as dt
import uuid
from pathlib import Path

import pytest

from services.reporting import casework, handlers
from services.reporting.repository import relation
from shared.db import COMMON, create_pool, migrate
from shared.events import ANY_EVENT
from tests.factories import envelope, mappa_notification, notification, review

MIGRATIONS = Path(casework.__file__).parent / "migrations"
NOW = dt.datetime.now(dt.timezone.utc)


@pytest.fixture(scope="module")
async def pool(infra):
    pool = await create_pool(infra.new_database(), max_size=2)
    await migrate(pool, "reporting", COMMON, MIGRATIONS)
    yield pool
    await pool.close()


async def _case_event(pool, case_id, event_type, data, local_authority="glasgow-city", role="council"):
    event = ANY_EVENT.validate_python(
        envelope(event_type, data, case_id=case_id, local_authority=local_authority, role=role)
    )
    async with pool.acquire() as conn, conn.transaction():
        await handlers.CASES.apply(conn, [(event, False)])


async def _notify(pool, local_authority="glasgow-city", body=None) -> uuid.UUID:
    case_id = uuid.uuid4()
    await _case_event(pool, case_id, "incident.notified", body or notification(), local_authority)
    return case_id


async def _deadline(pool, case_id, event_type, rule, due_at, started_at=NOW - dt.timedelta(days=1),
                    local_authority="glasgow-city", **extra):
    data = {"rule": rule, "started_at": started_at.isoformat(), "due_at": due_at.isoformat()}
    data.update({k: v.isoformat() if isinstance(v, dt.datetime) else v for k, v in extra.items()})
    event = ANY_EVENT.validate_python(
        envelope(event_type, data, case_id=case_id, local_authority=local_authority, role="service")
    )
    async with pool.acquire() as conn, conn.transaction():
        await handlers.DEADLINES.apply(conn, [(event, False)])


async def _view(pool, case_id, **filters):
    rows = await casework.list_cases(pool, limit=10_000, **filters)
    found = [r for r in rows if r["case_id"] == case_id]
    return found[0] if found else None


async def test_case_events_fold_into_the_lifecycle_state(pool):
    case_id = await _notify(pool, body=mappa_notification(supervising_local_authority="inverclyde"))
    case = await _view(pool, case_id)
    assert case["state"] == "notified" and case["local_authority"] == "glasgow-city"
    # Routed by the supervising authority's region, as intake and routing derive it.
    assert case["sog_region"] == "north-strathclyde"
    assert case["notified_at"] is not None

    await _case_event(pool, case_id, "review.submitted", review())
    assert (await _view(pool, case_id))["state"] == "under_review"
    await _case_event(pool, case_id, "review.responded", {"outcome": "comprehensive_review_required"},
                      role="inspectorate")
    assert (await _view(pool, case_id))["state"] == "awaiting_review"

    await _case_event(pool, case_id, "case.closed", {"reason": "withdrawn"}, role="inspectorate")
    assert await _view(pool, case_id) is None, "closed cases are not listed by default"
    assert (await _view(pool, case_id, states=("closed",)))["state"] == "closed"


async def test_an_event_that_does_not_fit_leaves_the_state_as_it_was(pool, caplog):
    case_id = await _notify(pool)
    await _case_event(pool, case_id, "review.responded", {"outcome": "concluded"}, role="inspectorate")
    assert (await _view(pool, case_id))["state"] == "notified"
    assert "does not fit" in caplog.text


async def test_deadlines_seen_before_their_case_are_joined_when_it_arrives(pool):
    case_id = uuid.uuid4()
    await _deadline(pool, case_id, "deadline.opened", "review_submission", NOW + dt.timedelta(days=90))
    assert await _view(pool, case_id) is None
    await _case_event(pool, case_id, "incident.notified", notification())
    [deadline] = (await _view(pool, case_id))["deadlines"]
    assert deadline["rule"] == "review_submission" and deadline["status"] == "open"


async def test_overdue_is_judged_by_the_database_clock(pool):
    late, on_time = await _notify(pool), await _notify(pool)
    await _deadline(pool, late, "deadline.opened", "sg_forward", NOW - dt.timedelta(hours=1))
    await _deadline(pool, on_time, "deadline.opened", "sg_forward", NOW + dt.timedelta(days=2))
    assert (await _view(pool, late))["overdue"] is True
    assert (await _view(pool, on_time))["overdue"] is False
    assert await _view(pool, late, overdue=False) is None
    assert await _view(pool, on_time, overdue=True) is None
    assert (await _view(pool, late, overdue=True))["deadlines"][0]["overdue"] is True


async def test_owed_deadlines_only_and_their_statuses(pool):
    case_id = await _notify(pool)
    started = NOW - dt.timedelta(days=40)
    # met: no longer owed
    await _deadline(pool, case_id, "deadline.opened", "notification", NOW - dt.timedelta(days=30), started)
    await _deadline(pool, case_id, "deadline.met", "notification", NOW - dt.timedelta(days=30), started,
                    met_at=NOW - dt.timedelta(days=31))
    # breached and settled late (met_at given): history, not casework
    await _deadline(pool, case_id, "deadline.breached", "sg_forward", NOW - dt.timedelta(days=20), started,
                    breached_at=NOW - dt.timedelta(days=20), met_at=NOW - dt.timedelta(days=19), working_days_late=1)
    # cancelled: not owed
    await _deadline(pool, case_id, "deadline.opened", "additional_info", NOW + dt.timedelta(days=3), started)
    await _deadline(pool, case_id, "deadline.cancelled", "additional_info", NOW + dt.timedelta(days=3), started)
    # warned, then breached, then a stray warning: still breached, and overdue
    due = NOW - dt.timedelta(days=1)
    for event_type in ("deadline.opened", "deadline.warning", "deadline.breached", "deadline.warning"):
        await _deadline(pool, case_id, event_type, "review_submission", due, started, breached_at=due)
    # each review opens its own inspectorate_response: two deadlines of one rule
    for days in (10, 20):
        await _deadline(pool, case_id, "deadline.opened", "inspectorate_response", NOW + dt.timedelta(days=days),
                        NOW - dt.timedelta(days=days))

    case = await _view(pool, case_id)
    assert [(d["rule"], d["status"], d["overdue"]) for d in case["deadlines"]] == [
        ("review_submission", "breached", True),
        ("inspectorate_response", "open", False),
        ("inspectorate_response", "open", False),
    ]
    assert case["overdue"] is True


async def test_filters_by_authority_region_and_state(pool):
    fife = await _notify(pool, "fife", mappa_notification())
    angus = await _notify(pool, "angus")
    await _case_event(pool, angus, "review.submitted", review(), "angus")

    assert await _view(pool, fife, local_authority="fife")
    assert await _view(pool, angus, local_authority="fife") is None
    assert await _view(pool, fife, sog_region="fife")
    assert await _view(pool, fife, sog_region="tayside") is None
    assert await _view(pool, angus, sog_region="tayside") is None, "MAPPA does not apply: routed to no SOG"
    assert await _view(pool, angus, states=("under_review",))
    assert await _view(pool, fife, states=("under_review",)) is None
    assert await _view(pool, fife, states=("notified", "under_review"))


async def test_cases_come_earliest_due_first_and_page_without_gaps(pool):
    authority = "shetland-islands"  # no other test here uses it
    cases = {}
    for days in (30, -2, 5, None, 12):
        case_id = await _notify(pool, authority)
        if days is not None:
            await _deadline(pool, case_id, "deadline.opened", "review_submission",
                            NOW + dt.timedelta(days=days), local_authority=authority)
        cases[case_id] = days
    everything = await casework.list_cases(pool, local_authority=authority)
    expected = sorted(d for d in cases.values() if d is not None) + [None]
    assert [cases[r["case_id"]] for r in everything] == expected

    seen, after = [], None
    while True:
        page = await casework.list_cases(pool, local_authority=authority, limit=2, after=after)
        seen += [r["case_id"] for r in page]
        if len(page) < 2:
            break
        after = casework.decode_cursor(casework.encode_cursor(page[-1]))
    assert seen == [r["case_id"] for r in everything]


@pytest.mark.parametrize("cursor", ["", "bm9wZQ", "!!", "LXxub3QtYS11dWlk"])
def test_a_cursor_not_from_the_view_is_refused(cursor):
    with pytest.raises(ValueError):
        casework.decode_cursor(cursor)


async def test_an_upgrade_keeps_the_casework_of_the_tables_it_drops(infra, tmp_path):
    """Migration 102 moves casework_cases and casework_deadlines into the case and deadline
    rows and drops them: the view answers as before, and the rows' versions still read."""
    before_102 = tmp_path / "migrations"
    before_102.mkdir()
    for sql in sorted(MIGRATIONS.glob("*.sql")):
        if sql.name < "102":
            (before_102 / sql.name).write_text(sql.read_text())
    pool = await create_pool(infra.new_database(), max_size=2)
    try:
        await migrate(pool, "reporting", COMMON, before_102)
        case_id, unseen = uuid.uuid4(), uuid.uuid4()
        due = NOW + dt.timedelta(days=3)
        for case in (case_id, unseen):
            await pool.execute(
                "INSERT INTO reporting.notifications (case_id, local_authority, received_at, received_on, incident_date,"
                " working_days_taken, criterion, incident_type, order_type, subject_role, mappa_applies,"
                " domestic_abuse_aggravated, historical, signed_off_by, sg_forward_due_at, review_owed_since,"
                " recorded_from) VALUES ($1, 'fife', $2, $3, $3, 0, 'charged_with_serious_offence',"
                " 'serious_assault', 'parole_licence', 'perpetrator', true, false, false, 'service_manager', $2, $3,"
                " $2)", case, NOW - dt.timedelta(days=2), (NOW - dt.timedelta(days=2)).date())
        await pool.execute(
            "INSERT INTO reporting.casework_cases (case_id, local_authority, state, sog_region, responded,"
            " notified_at, imported) VALUES ($1, 'fife', 'under_review', 'fife', false, $2, true)",
            case_id, NOW - dt.timedelta(days=2))
        for table, extra in (("deadlines", ", local_authority"), ("casework_deadlines", ", status")):
            await pool.execute(
                f"INSERT INTO reporting.{table} (case_id, rule, started_at, due_at{extra})"
                f" VALUES ($1, 'review_submission', $2, $3, $4)",
                case_id, NOW - dt.timedelta(days=2), due, "fife" if table == "deadlines" else "warning")
        await pool.execute(
            "INSERT INTO reporting.deadlines_versions (case_id, rule, started_at, local_authority, due_at, recorded_to)"
            " VALUES ($1, 'review_submission', $2, 'fife', $3, $2)", case_id, NOW - dt.timedelta(days=2), due)
        await pool.execute("UPDATE reporting.deadlines SET recorded_from = $1", NOW - dt.timedelta(days=2))

        await migrate(pool, "reporting", COMMON, MIGRATIONS)
        [case] = await casework.list_cases(pool, states=("under_review",), imported=True)
        assert (case["case_id"], case["local_authority"], case["state"], case["sog_region"], case["imported"]) == (
            case_id, "fife", "under_review", "fife", True)
        assert case["notified_at"] == NOW - dt.timedelta(days=2) and case["next_due"] == due
        assert case["overdue"] is False
        assert [(d["rule"], d["status"], d["overdue"]) for d in case["deadlines"]] == [
            ("review_submission", "warning", False)]
        assert unseen not in {r["case_id"] for r in await casework.list_cases(pool, limit=10_000)}, \
            "a case the view never saw stays unlisted until a rebuild"
        assert not await pool.fetchval("SELECT to_regclass('reporting.casework_cases') IS NOT NULL")
        # The versions of migration 004 still read as of a moment.
        for days in (3, 1):
            assert await pool.fetchval(
                f"SELECT count(*) FROM {relation('deadlines', NOW - dt.timedelta(days=days))} d") == 1
    finally:
        await pool.close()
