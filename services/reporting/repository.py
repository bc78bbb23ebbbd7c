"""Reporting's SQL: the projections' rows (one at a time for the live handlers, in bulk for
`sir report rebuild`) and the aggregates a report is computed from."""

from __future__ import annotations

import dataclasses
import functools
import datetime as dt
import uuid
from collections import Counter
from typing import Iterable

import asyncpg

from services.reporting.domain import (
    RESPONSE_SUMS,
    REVIEW_SIGN_OFF_SENIOR,
    REVIEW_SUMS,
    SCOTTISH_GOVERNMENT,
    CaseRows,
    Deadline,
    Forward,
    Notification,
    NotificationCounts,
    QuarterCounts,
    Review,
    ReviewCounts,
)
from shared.calendar import end_of_day, local_date

SCHEMA = "reporting"

# The report projections, each with its row type and key; written by the handlers
# below and replaced whole by `sir report rebuild`.
PROJECTIONS: dict[str, tuple[type, tuple[str, ...]]] = {
    "notifications": (Notification, ("case_id",)),
    "reviews": (Review, ("review_id",)),
    "forwards": (Forward, ("case_id", "recipient")),
    "deadlines": (Deadline, ("case_id", "rule", "started_at")),
}


@functools.cache
def columns(row_type: type) -> tuple[str, ...]:
    return tuple(f.name for f in dataclasses.fields(row_type))


def values(row) -> tuple:
    """A row's values in column order, arrays as lists."""
    return tuple(list(v) if isinstance(v, tuple) else v for v in map(row.__dict__.__getitem__, columns(type(row))))


def _upsert_sql(table: str, schema: str = SCHEMA) -> str:
    row_type, key = PROJECTIONS[table]
    names = list(columns(row_type))
    updates = ", ".join(f"{c} = EXCLUDED.{c}" for c in names if c not in key)
    return (
        f"INSERT INTO {schema}.{table} ({', '.join(names)})"
        f" VALUES ({', '.join(f'${i}' for i in range(1, len(names) + 1))})"
        f" ON CONFLICT ({', '.join(key)}) DO UPDATE SET {updates}"
    )


def _row(row_type: type, record: asyncpg.Record):
    return row_type(**{k: tuple(v) if isinstance(v, list) else v for k, v in record.items()})


# --- live: one event at a time ----------------------------------------------------------


async def load_case(conn: asyncpg.Connection, case_id: uuid.UUID) -> CaseRows | None:
    """The case's rows, locked until the transaction ends."""
    found = await conn.fetchrow(f"SELECT * FROM {SCHEMA}.notifications WHERE case_id = $1 FOR UPDATE", case_id)
    if found is None:
        return None
    reviews = await conn.fetch(
        f"SELECT * FROM {SCHEMA}.reviews WHERE case_id = $1 ORDER BY received_at, review_id", case_id
    )
    return CaseRows(_row(Notification, found), tuple(_row(Review, r) for r in reviews))


async def save_case(conn: asyncpg.Connection, before: CaseRows | None, after: CaseRows) -> None:
    """Write what changed between `before` and `after`."""
    if before is None or before.notification != after.notification:
        await conn.execute(_upsert_sql("notifications"), *values(after.notification))
    old = set(before.reviews) if before else set()
    changed = [values(r) for r in after.reviews if r not in old]
    if changed:
        await conn.executemany(_upsert_sql("reviews"), changed)


async def load_forward(conn: asyncpg.Connection, case_id: uuid.UUID, recipient: str) -> Forward | None:
    found = await conn.fetchrow(
        f"SELECT * FROM {SCHEMA}.forwards WHERE case_id = $1 AND recipient = $2 FOR UPDATE", case_id, recipient
    )
    return None if found is None else _row(Forward, found)


async def load_deadline(conn: asyncpg.Connection, case_id: uuid.UUID, rule: str, started_at: dt.datetime) -> Deadline | None:
    found = await conn.fetchrow(
        f"SELECT * FROM {SCHEMA}.deadlines WHERE case_id = $1 AND rule = $2 AND started_at = $3 FOR UPDATE",
        case_id, rule, started_at,
    )
    return None if found is None else _row(Deadline, found)


async def save(conn: asyncpg.Connection, table: str, row) -> None:
    await conn.execute(_upsert_sql(table), *values(row))


# --- rebuild: whole tables ---------------------------------------------------------------


async def replace_all(conn: asyncpg.Connection, rows: dict[str, Iterable], schema: str = SCHEMA) -> None:
    """Empty each projection table named in `rows` and fill it from those rows (COPY),
    inside the caller's transaction."""
    for table, table_rows in rows.items():
        await conn.execute(f"TRUNCATE {schema}.{table}")
        records = [values(r) for r in table_rows]
        if records:
            names = list(columns(PROJECTIONS[table][0]))
            await conn.copy_records_to_table(table, records=records, columns=names, schema_name=schema)


async def table_contents(conn: asyncpg.Connection | asyncpg.Pool, table: str, schema: str = SCHEMA) -> list[tuple]:
    """Every row of a table, sorted: to compare a rebuild with the live projection."""
    rows = await conn.fetch(f"SELECT * FROM {schema}.{table}")
    return sorted((tuple(r.values()) for r in rows), key=repr)


# --- reports ----------------------------------------------------------------------------

_NOTIFICATION_GROUPS = ("local_authority", "incident_type", "criterion", "signed_off_by", "order_type",
                        "working_days_taken", "mappa_applies")
_NOTIFICATIONS_SQL = f"""
SELECT {', '.join(f'GROUPING(n.{g}) AS g_{g}' for g in _NOTIFICATION_GROUPS)},
       n.local_authority, n.incident_type, n.criterion, n.signed_off_by, n.order_type, n.working_days_taken,
       n.mappa_applies, n.mappa_category, n.mappa_level,
       count(*) AS notifications,
       count(*) FILTER (WHERE n.domestic_abuse_aggravated) AS domestic_abuse_aggravated,
       count(*) FILTER (WHERE n.historical) AS historical,
       count(*) FILTER (WHERE n.meets_criteria) AS meets_criteria,
       count(*) FILTER (WHERE NOT n.meets_criteria) AS criteria_not_met,
       count(f.case_id) AS sg_forwarded,
       count(*) FILTER (WHERE f.delivered_at < n.sg_forward_due_at) AS sg_forwarded_in_time,
       -- forwarded, or due by the report's moment: a forward not yet due is not yet judged
       count(*) FILTER (WHERE f.case_id IS NOT NULL OR n.sg_forward_due_at <= $3) AS sg_forward_judged
FROM {SCHEMA}.notifications n
LEFT JOIN {SCHEMA}.forwards f ON f.case_id = n.case_id AND f.recipient = '{SCOTTISH_GOVERNMENT}'
WHERE n.received_on BETWEEN $1 AND $2
GROUP BY GROUPING SETS ((n.local_authority), (n.incident_type), (n.criterion), (n.signed_off_by), (n.order_type),
                        (n.working_days_taken), (n.mappa_applies, n.mappa_category, n.mappa_level), ())
"""


async def notification_counts(
    conn, period_from: dt.date, period_to: dt.date, as_at: dt.datetime | None = None
) -> NotificationCounts:
    """Counts of the notifications received (Scottish date) from `period_from` to `period_to`,
    as at the moment `as_at` (a forward not due by then is not yet judged; None: every one is)."""
    counts = NotificationCounts()
    by_group = {
        "local_authority": counts.by_authority, "incident_type": counts.by_incident_type,
        "criterion": counts.by_criterion, "signed_off_by": counts.by_sign_off,
        "order_type": counts.by_order_type, "working_days_taken": counts.working_days,
    }
    judged_to = as_at or dt.datetime.max.replace(tzinfo=dt.timezone.utc)
    for row in await conn.fetch(_NOTIFICATIONS_SQL, period_from, period_to, judged_to):
        grouped = [g for g in _NOTIFICATION_GROUPS if row[f"g_{g}"] == 0]
        if not grouped:  # the grand total
            for name in ("domestic_abuse_aggravated", "historical", "meets_criteria", "criteria_not_met",
                         "sg_forwarded", "sg_forwarded_in_time", "sg_forward_judged"):
                setattr(counts, name, row[name])
            counts.total = row["notifications"]
        elif grouped == ["mappa_applies"]:
            if row["mappa_applies"]:
                counts.by_mappa[row["mappa_category"], row["mappa_level"]] += row["notifications"]
        else:
            by_group[grouped[0]][row[grouped[0]]] += row["notifications"]
    return counts


_REVIEWS_SQL = f"""
SELECT review_type,
       count(*) AS reviews,
       count(*) FILTER (WHERE signed_off_by = ANY($3::text[])) AS signed_off_senior,
       count(*) FILTER (WHERE reviewer_independent) AS reviewer_independent,
       count(*) FILTER (WHERE risk_assessment_completed) AS risk_assessment_completed,
       count(*) FILTER (WHERE risk_assessment_up_to_date) AS risk_assessment_up_to_date,
       count(*) FILTER (WHERE risk_management_plan_in_place) AS risk_management_plan_in_place,
       count(*) FILTER (WHERE risk_management_plan_in_place AND risk_management_plan_informed)
           AS risk_management_plan_informed,
       count(*) FILTER (WHERE order_reviews_referenced) AS order_reviews_referenced,
       count(*) FILTER (WHERE good_practice_identified) AS good_practice_identified,
       count(*) FILTER (WHERE received_on <= submission_due_on) AS in_time,
       count(*) FILTER (WHERE info_requests > 0) AS with_info_requests,
       coalesce(sum(info_requests), 0)::bigint AS info_requests
FROM {SCHEMA}.reviews WHERE received_on BETWEEN $1 AND $2
GROUP BY review_type
"""
_RESPONSES_SQL = f"""
SELECT review_type,
       count(*) AS responses,
       count(*) FILTER (WHERE responded_on <= response_due_on) AS in_time,
       count(*) FILTER (WHERE outcome = 'concluded') AS concluded,
       count(*) FILTER (WHERE outcome = 'comprehensive_review_required') AS comprehensive_required,
       count(iar_decision_appropriate) AS iar_judged,
       count(*) FILTER (WHERE iar_decision_appropriate) AS iar_appropriate,
       count(high_quality) AS quality_judged,
       count(*) FILTER (WHERE high_quality) AS high_quality
FROM {SCHEMA}.reviews WHERE responded_on BETWEEN $1 AND $2
GROUP BY review_type
"""
_REVIEW_LISTS_SQL = f"""
SELECT 'finding' AS kind, item, count(*) AS reviews  -- a review lists each finding once (domain.py)
FROM {SCHEMA}.reviews, unnest(findings) AS item WHERE received_on BETWEEN $1 AND $2 GROUP BY item
UNION ALL
SELECT 'tool', item, count(*)
FROM {SCHEMA}.reviews, unnest(risk_tools) AS item WHERE received_on BETWEEN $1 AND $2 GROUP BY item
"""


async def review_counts(conn, period_from: dt.date, period_to: dt.date) -> ReviewCounts:
    """Counts of the reviews received, and of the responses given, in the period."""
    counts = ReviewCounts()
    for row in await conn.fetch(_REVIEWS_SQL, period_from, period_to, sorted(REVIEW_SIGN_OFF_SENIOR)):
        counts.by_type[row["review_type"]] = Counter({k: row[k] for k in REVIEW_SUMS})
    for row in await conn.fetch(_RESPONSES_SQL, period_from, period_to):
        counts.responses_by_type[row["review_type"]] = Counter({k: row[k] for k in RESPONSE_SUMS})
    for row in await conn.fetch(_REVIEW_LISTS_SQL, period_from, period_to):
        (counts.findings if row["kind"] == "finding" else counts.risk_tools)[row["item"]] = row["reviews"]
    return counts


async def quarter_counts(
    conn, period_from: dt.date, period_to: dt.date, as_at: dt.datetime | None = None
) -> QuarterCounts:
    """Open cases and overdue deadlines at the end of the period, and deadlines breached
    within it, by local authority; for a period still running, at `as_at` (nothing counts
    as breached or overdue before its due moment has passed)."""
    # A deadline falls due at its breach moment (shared.calendar.judge): one that falls due
    # in the period has it in (end of the day before, end of the period's last day].
    start, end = end_of_day(period_from - dt.timedelta(days=1)), end_of_day(period_to)
    cutoff = end if as_at is None else min(end, as_at)
    counts = QuarterCounts()
    for row in await conn.fetch(
        f"SELECT local_authority, count(*) AS n FROM {SCHEMA}.notifications"
        " WHERE received_at < $1 AND (closed_on IS NULL OR closed_on > $2) GROUP BY 1",
        cutoff, min(period_to, local_date(cutoff)),
    ):
        counts.open_cases[row["local_authority"]] = row["n"]
    for row in await conn.fetch(
        f"SELECT local_authority, count(*) AS n FROM {SCHEMA}.deadlines"
        " WHERE started_at < $1 AND due_at < $1 AND (met_at IS NULL OR met_at >= $1)"
        " AND (cancelled_at IS NULL OR cancelled_at >= $1) GROUP BY 1",
        cutoff,
    ):
        counts.overdue_items[row["local_authority"]] = row["n"]
    # Breached in the period: fell due in it (by `as_at`) with its stop not come before the
    # due moment (met later or never) and not cancelled first. History's late stops come as
    # `deadline.met` with the days late, so the due moment decides, not a breach event.
    for row in await conn.fetch(
        f"SELECT local_authority, rule, count(*) AS n FROM {SCHEMA}.deadlines"
        " WHERE due_at > $1 AND due_at <= $2 AND (met_at IS NULL OR met_at >= due_at)"
        " AND (cancelled_at IS NULL OR cancelled_at > due_at) GROUP BY 1, 2",
        start, cutoff,
    ):
        counts.breaches[row["local_authority"]] += row["n"]
        counts.breaches_by_rule[row["rule"]] += row["n"]
    return counts


async def database_now(conn) -> dt.datetime:
    return await conn.fetchval("SELECT now()")
