"""The quarterly report's breaches by the deadlines' due times, at the quarter's edges."""

from __future__ import annotations

import datetime as dt
import uuid

import pytest

from services.reporting import repository
from services.reporting.app import SERVICE
from shared.calendar import end_of_day
from shared.db import COMMON, create_pool, migrate


@pytest.fixture
async def pool(infra):
    pool = await create_pool(infra.new_database())
    await migrate(pool, "reporting", COMMON, SERVICE.migrations)
    yield pool
    await pool.close()


async def _breached_deadline(pool, last_day: dt.date) -> None:
    due = end_of_day(last_day)
    await pool.execute(
        "INSERT INTO reporting.deadlines (case_id, rule, started_at, local_authority, due_at)"
        " VALUES ($1, 'review_submission', $2, 'fife', $3)",
        uuid.uuid4(), due - dt.timedelta(days=90), due,
    )


async def test_a_deadline_counts_in_the_quarter_of_its_last_day(pool):
    # Last days: the day before Q1 2014, its first and last days (31 March is in BST's
    # shadow: due at 23:00 UTC), and the first day of Q2.
    for day in (dt.date(2013, 12, 31), dt.date(2014, 1, 1), dt.date(2014, 3, 31), dt.date(2014, 4, 1)):
        await _breached_deadline(pool, day)
    async with pool.acquire() as conn:
        q1 = await repository.quarter_counts(conn, dt.date(2014, 1, 1), dt.date(2014, 3, 31))
        q2 = await repository.quarter_counts(conn, dt.date(2014, 4, 1), dt.date(2014, 6, 30))
    assert q1.breaches["fife"] == 2 and q1.breaches_by_rule["review_submission"] == 2
    assert q2.breaches["fife"] == 1
    # At the end of Q1, the one due at the end of its last day is not yet overdue.
    assert q1.overdue_items["fife"] == 2
