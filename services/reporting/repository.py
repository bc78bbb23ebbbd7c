"""Reporting's SQL: the projections' rows (loaded and saved a batch of cases at a time for
the live consumers, in bulk for `sir report rebuild`) and the aggregates a report is
computed from."""

from __future__ import annotations

import asyncio
import calendar
import dataclasses
import datetime as dt
import functools
import operator
import uuid
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import asyncpg

from services.reporting.domain import (
    NO_DEADLINES,
    NO_FORWARDS,
    NOTIFICATION_SIGN_OFF_SENIOR,
    NOTIFICATION_WORKING_DAYS,
    RESPONSE_SUMS,
    REVIEW_SIGN_OFF_SENIOR,
    REVIEW_SUMS,
    SCOTTISH_GOVERNMENT,
    CaseDeadlines,
    CaseForwards,
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
from shared.categorisation import GAPS
from shared.lifecycle import Case, State

SCHEMA = "reporting"

# The report projections, each with its row type and key; written by the live consumers'
# savers below and replaced whole by `sir report rebuild`. One table per fact: the case
# (`notifications`, with its lifecycle), its reviews, forwards and deadlines.
PROJECTIONS: dict[str, tuple[type, tuple[str, ...]]] = {
    "notifications": (Notification, ("case_id",)),
    "reviews": (Review, ("review_id",)),
    "forwards": (Forward, ("case_id", "recipient")),
    "deadlines": (Deadline, ("case_id", "rule", "started_at")),
}


@functools.cache
def columns(row_type: type) -> tuple[str, ...]:
    return tuple(f.name for f in dataclasses.fields(row_type))


@functools.cache
def _getter(row_type: type) -> operator.attrgetter:
    return operator.attrgetter(*columns(row_type))


def values(row) -> tuple:
    """A row's values in column order (arrays as tuples, which asyncpg takes)."""
    return _getter(row.__class__)(row)


# The case's current lifecycle (the casework view), in `notifications` beside the report's
# columns: current only, never versioned (a report as of a moment does not read them).
CASE_COLUMNS = ("state", "sog_region", "responded", "imported")


def table_columns(table: str) -> tuple[str, ...]:
    """The columns a projection table is written with (its row type's, and for
    `notifications` the lifecycle's too)."""
    names = columns(PROJECTIONS[table][0])
    return names + CASE_COLUMNS if table == "notifications" else names


def case_values(case: CaseRows) -> tuple:
    """The `notifications` row of a case: the report's columns, then CASE_COLUMNS."""
    lifecycle = case.case
    return (
        *values(case.notification),
        None if lifecycle is None else lifecycle.state.value,
        None if lifecycle is None else lifecycle.sog_region,
        False if lifecycle is None else lifecycle.responded,
        case.imported,
    )


def _upsert_sql(table: str, schema: str = SCHEMA) -> str:
    _, key = PROJECTIONS[table]
    names = list(table_columns(table))
    updates = ", ".join(f"{c} = EXCLUDED.{c}" for c in names if c not in key)
    return (
        f"INSERT INTO {schema}.{table} ({', '.join(names)})"
        f" VALUES ({', '.join(f'${i}' for i in range(1, len(names) + 1))})"
        f" ON CONFLICT ({', '.join(key)}) DO UPDATE SET {updates}"
    )


def _row(row_type: type, record: asyncpg.Record):
    return row_type(**{k: tuple(v) if isinstance(v, list) else v for k in columns(row_type) for v in (record[k],)})


def _version_sql(table: str, schema: str = SCHEMA) -> str:
    names = [*columns(PROJECTIONS[table][0]), "recorded_to"]
    return (
        f"INSERT INTO {schema}.{table}_versions ({', '.join(names)})"
        f" VALUES ({', '.join(f'${i}' for i in range(1, len(names) + 1))})"
    )


_FOREVER = dt.datetime.min.replace(tzinfo=dt.timezone.utc)


async def save_versions(conn: asyncpg.Connection, table: str, replaced: Iterable[tuple[Any, dt.datetime | None]]) -> None:
    """Keep replaced versions of rows, each current until its `recorded_to` (docs/reports.md, as of)."""
    rows = [(*values(row), recorded_to or _FOREVER) for row, recorded_to in replaced]
    if rows:
        await conn.executemany(_version_sql(table), rows)


# --- the live consumers' states (shared/process.py): load a batch's cases, save what changed


async def load_cases(conn: asyncpg.Connection, case_ids: list[uuid.UUID]) -> dict[uuid.UUID, CaseRows | None]:
    """The cases' rows (None: no notification seen), locked until the transaction ends."""
    states: dict[uuid.UUID, CaseRows | None] = dict.fromkeys(case_ids)
    found = await conn.fetch(
        f"SELECT * FROM {SCHEMA}.notifications WHERE case_id = ANY($1::uuid[]) FOR UPDATE", case_ids
    )
    if not found:
        return states
    reviews: dict[uuid.UUID, list[Review]] = {}
    for r in await conn.fetch(
        f"SELECT * FROM {SCHEMA}.reviews WHERE case_id = ANY($1::uuid[]) ORDER BY received_at, review_id", case_ids
    ):
        reviews.setdefault(r["case_id"], []).append(_row(Review, r))
    for row in found:
        lifecycle = None if row["state"] is None else Case(
            row["local_authority"], State(row["state"]), row["sog_region"], row["responded"], row["closed_reason"]
        )
        states[row["case_id"]] = CaseRows(
            _row(Notification, row), tuple(reviews.get(row["case_id"], ())), lifecycle, row["imported"]
        )
    return states


async def save_cases(
    conn: asyncpg.Connection, before: Mapping[uuid.UUID, CaseRows | None], after: Mapping[uuid.UUID, CaseRows | None],
) -> None:
    """Write what changed between `before` and `after` (the row, the new or changed reviews),
    keeping the versions replaced."""
    notifications: list[tuple] = []
    reviews: list[tuple] = []
    versions: dict[str, list[tuple[Any, dt.datetime | None]]] = {"notifications": [], "reviews": []}
    for case_id, case in after.items():
        if case is None:
            continue
        old = before.get(case_id)
        for table, row, recorded_to in case.replaced:
            versions[table].append((row, recorded_to))
        if old is None or case_values(old) != case_values(case):
            notifications.append(case_values(case))
        known = {id(r) for r in old.reviews} if old is not None else set()  # unchanged: the same object
        reviews += [values(r) for r in case.reviews if id(r) not in known]
    for table, replaced in versions.items():
        await save_versions(conn, table, replaced)
    if notifications:
        await conn.executemany(_upsert_sql("notifications"), notifications)
    if reviews:
        await conn.executemany(_upsert_sql("reviews"), reviews)
    await mark_stale(conn, stale_dates(before, after))


async def load_forwards(conn: asyncpg.Connection, case_ids: list[uuid.UUID]) -> dict[uuid.UUID, CaseForwards]:
    found: dict[uuid.UUID, dict[str, Forward]] = {}
    for r in await conn.fetch(f"SELECT * FROM {SCHEMA}.forwards WHERE case_id = ANY($1::uuid[]) FOR UPDATE", case_ids):
        found.setdefault(r["case_id"], {})[r["recipient"]] = _row(Forward, r)
    return {case_id: CaseForwards(found[case_id]) if case_id in found else NO_FORWARDS for case_id in case_ids}


async def save_forwards(
    conn: asyncpg.Connection, before: Mapping[uuid.UUID, CaseForwards], after: Mapping[uuid.UUID, CaseForwards],
) -> None:
    await _save_rows(conn, "forwards", before, after)
    await mark_stale(conn, cases=[
        case_id for case_id, state in after.items()
        if state.rows.get(SCOTTISH_GOVERNMENT) != before[case_id].rows.get(SCOTTISH_GOVERNMENT)
    ])


async def load_deadlines(conn: asyncpg.Connection, case_ids: list[uuid.UUID]) -> dict[uuid.UUID, CaseDeadlines]:
    found: dict[uuid.UUID, dict[tuple[str, dt.datetime], Deadline]] = {}
    for r in await conn.fetch(f"SELECT * FROM {SCHEMA}.deadlines WHERE case_id = ANY($1::uuid[]) FOR UPDATE", case_ids):
        found.setdefault(r["case_id"], {})[r["rule"], r["started_at"]] = _row(Deadline, r)
    return {case_id: CaseDeadlines(found[case_id]) if case_id in found else NO_DEADLINES for case_id in case_ids}


async def save_deadlines(
    conn: asyncpg.Connection, before: Mapping[uuid.UUID, CaseDeadlines], after: Mapping[uuid.UUID, CaseDeadlines],
) -> None:
    await _save_rows(conn, "deadlines", before, after)


async def _save_rows(conn: asyncpg.Connection, table: str, before: Mapping, after: Mapping) -> None:
    """Forwards or deadlines: the rows new or changed since loaded, and the versions replaced."""
    rows, replaced = [], []
    for case_id, state in after.items():
        old = before[case_id].rows
        rows += [values(row) for key, row in state.rows.items() if old.get(key) != row]
        replaced += state.replaced
    await save_versions(conn, table, replaced)
    if rows:
        await conn.executemany(_upsert_sql(table), rows)


# --- rebuild: whole tables ---------------------------------------------------------------


async def replace_all(
    conn: asyncpg.Connection, rows: dict[str, list[tuple]], schema: str = SCHEMA,
    versions: dict[str, list[tuple]] | None = None,
) -> None:
    """Empty each projection table named in `rows` (and its versions) and fill it from those
    records (each in `table_columns` order), inside the caller's transaction; `versions`:
    per table, the replaced versions as (row, recorded_to). The tables are filled bare
    (COPY, their indexes and keys dropped) and indexed again once full, which is faster
    than keeping every index through a million inserts; then every month is summarised
    anew (the summaries by month, below)."""
    versions = versions or {}
    tables = [name for table in rows for name in (table, f"{table}_versions")]
    await lock_for_rebuild(conn, tables)
    with_indexes = await drop_indexes(conn, schema, tables)
    for table, records in rows.items():
        await conn.execute(f"TRUNCATE {schema}.{table}, {schema}.{table}_versions")
        if records:
            await conn.copy_records_to_table(table, records=records, columns=table_columns(table), schema_name=schema)
        replaced = [(*values(r), until or _FOREVER) for r, until in versions.get(table, ())]
        if replaced:
            await conn.copy_records_to_table(
                f"{table}_versions", records=replaced, columns=[*columns(PROJECTIONS[table][0]), "recorded_to"],
                schema_name=schema,
            )
    await conn.execute("SET LOCAL maintenance_work_mem = '256MB'")
    for statement in with_indexes:
        await conn.execute(statement)
    # Fresh statistics for the tables just filled: without them the planner takes the
    # versions (read by a report as of a moment) for empty and joins them row by row.
    await conn.execute(f"ANALYZE {', '.join(f'{schema}.{t}' for t in tables)}")
    await summarise(conn)  # every month's summaries, from the rows just written
    await conn.execute(f"ANALYZE {', '.join(f'{schema}.{t}' for t in (*SUMMARY_TABLES, 'report_months'))}")


# The gate between the reports and the rebuild (migration 104_rebuild_gate.sql): a table
# with no rows, only its lock. The rebuild empties the projections with TRUNCATE, which is
# not MVCC-safe: a report whose snapshot was taken before the rebuild committed would find
# them empty once it touched them after (beside the old summaries, emptied with DELETE: a
# mix no state of the platform ever had). A report locks the gate before its snapshot and
# holds it to its end, the rebuild before it empties anything: a report's snapshot is taken
# before the rebuild begins (the rebuild waits for it) or after it commits, never between.
# Not the projections themselves: a report reads them on several connections, which would
# queue behind a rebuild waiting for the report's first connection, and neither would move
# until the rebuild gave up.
REBUILD_GATE = f"{SCHEMA}.rebuild_gate"


async def hold_off_rebuild(conn: asyncpg.Connection) -> None:
    """First in a report's transaction, before anything takes its snapshot (LOCK TABLE
    takes none): wait for a rebuild under way to commit, and keep the next from emptying
    the projections until this transaction ends."""
    await conn.execute(f"LOCK TABLE {REBUILD_GATE} IN ACCESS SHARE MODE")


async def shut_out_reports(conn: asyncpg.Connection) -> None:
    """In the rebuild's transaction, before it empties any projection: wait for the reports
    under way to end (as long as the transaction's lock_timeout lets it); the next ones wait
    until this transaction ends, then read what it wrote."""
    await conn.execute(f"LOCK TABLE {REBUILD_GATE} IN ACCESS EXCLUSIVE MODE")


async def lock_for_rebuild(conn: asyncpg.Connection, tables: Sequence[str], schema: str = SCHEMA) -> None:
    """Every lock replace_all needs, in one order: the gate (`sir report rebuild` holds it
    already), the summaries' (before the tables: a report's summarising holds it while it
    reads them), then the tables, in one statement, before any of them is changed."""
    await shut_out_reports(conn)
    await lock_summaries(conn)
    await conn.execute(f"LOCK TABLE {', '.join(f'{schema}.{t}' for t in tables)} IN ACCESS EXCLUSIVE MODE")


async def drop_indexes(conn: asyncpg.Connection, schema: str, tables: list[str]) -> list[str]:
    """Drop the tables' indexes and primary keys; returns the statements that make them again."""
    again = []
    for row in await conn.fetch(
        "SELECT c.conname, t.relname, pg_get_constraintdef(c.oid) AS definition FROM pg_constraint c"
        " JOIN pg_class t ON t.oid = c.conrelid JOIN pg_namespace n ON n.oid = t.relnamespace"
        " WHERE n.nspname = $1 AND t.relname = ANY($2::text[]) AND c.contype = 'p'", schema, tables,
    ):
        await conn.execute(f"ALTER TABLE {schema}.{row['relname']} DROP CONSTRAINT {row['conname']}")
        again.append(f"ALTER TABLE {schema}.{row['relname']} ADD CONSTRAINT {row['conname']} {row['definition']}")
    for row in await conn.fetch(
        "SELECT indexname, indexdef FROM pg_indexes WHERE schemaname = $1 AND tablename = ANY($2::text[])",
        schema, tables,
    ):
        await conn.execute(f"DROP INDEX {schema}.{row['indexname']}")
        again.append(row["indexdef"])
    return again


async def table_contents(conn: asyncpg.Connection | asyncpg.Pool, table: str, schema: str = SCHEMA) -> list[tuple]:
    """Every row of a table, sorted: to compare a rebuild with the live projection."""
    rows = await conn.fetch(f"SELECT * FROM {schema}.{table}")
    return sorted((tuple(r.values()) for r in rows), key=repr)


# --- reports ----------------------------------------------------------------------------
#
# One definition per figure: each count a report gives is a named SQL predicate below; the
# aggregate queries count `FILTER (WHERE <predicate>)` over a period's rows, and the
# drill-down (`cases`) lists the rows `WHERE <predicate>` over the very same rows, so a
# figure and its list of cases cannot disagree.

Basis = Literal["received", "cohort"]


def _moment(value: dt.datetime) -> str:
    """A timestamp as an SQL literal (made from a datetime, never from the caller's text)."""
    if not isinstance(value, dt.datetime) or value.tzinfo is None:
        raise TypeError("an aware datetime")
    # In UTC: PostgreSQL takes offsets up to 15:59, Python's go to 23:59 (a fuzzed +19:34
    # was a 500).
    return f"'{value.astimezone(dt.timezone.utc).isoformat()}'::timestamptz"


def relation(table: str, as_of: dt.datetime | None = None) -> str:
    """A projection's rows as the platform knew them at `as_of` (None: now): the current
    rows recorded by then, and the replaced versions that were current then."""
    if as_of is None:
        return f"{SCHEMA}.{table}"
    names = ", ".join(columns(PROJECTIONS[table][0]))
    at = _moment(as_of)
    known = f"(recorded_from IS NULL OR recorded_from <= {at})"
    return (
        f"(SELECT {names} FROM {SCHEMA}.{table} WHERE {known}"
        f" UNION ALL SELECT {names} FROM {SCHEMA}.{table}_versions WHERE {known} AND recorded_to > {at})"
    )


@dataclass(frozen=True)
class Scope:
    """What a report counts: the period (Scottish dates, both ends included), as known at
    `as_of` (None: now), the basis of its reviews and responses, and the moment the figures
    run to (`as_at`: a forward to the Scottish Government not yet due then is not judged)."""

    period_from: dt.date
    period_to: dt.date
    as_of: dt.datetime | None = None
    basis: Basis = "received"
    as_at: dt.datetime | None = None


def in_period(column: str) -> str:
    """The rows whose date `column` lies in the period ($1, $2)."""
    return f"{column} BETWEEN $1 AND $2"


def _source(kind: str, scope: Scope, with_notification: bool = True,
            days: Callable[[str], str] = in_period) -> tuple[str, str]:
    """(FROM, WHERE): the rows of the period a figure of this kind counts ($1, $2: the period;
    `days`: the condition on the date that places a row in it, for other spans of days).

    notifications: received in the period, with the first forward to the Scottish Government.
    reviews: received in the period (basis `received`) or of the period's notifications
    (basis `cohort`, whenever they came); responses: given in the period, or to the reviews of
    the period's notifications (cohort). Reviews carry their notification (`n`) when asked."""
    notifications = relation("notifications", scope.as_of)
    if kind == "open_cases":  # at the period's end, whenever notified: no period ($1, $2 unused)
        return f"{notifications} n", "TRUE"
    if kind == "deadlines":
        joined = f" LEFT JOIN {notifications} n ON n.case_id = d.case_id" if with_notification else ""
        return f"{relation('deadlines', scope.as_of)} d{joined}", "TRUE"
    if kind == "notifications":
        forwards = relation("forwards", scope.as_of)
        return (
            f"{notifications} n LEFT JOIN {forwards} f ON f.case_id = n.case_id"
            f" AND f.recipient = '{SCOTTISH_GOVERNMENT}'",
            days("n.received_on"),
        )
    reviews = relation("reviews", scope.as_of)
    if scope.basis == "cohort":
        where = days("n.received_on") + (" AND r.responded_on IS NOT NULL" if kind == "responses" else "")
        return f"{reviews} r JOIN {notifications} n ON n.case_id = r.case_id", where
    joined = f" JOIN {notifications} n ON n.case_id = r.case_id" if with_notification else ""
    return f"{reviews} r{joined}", days(DATE_COLUMNS[kind])


# The date that places a row of each kind in a period (basis `received`), and so in a month
# (the summaries by month below).
DATE_COLUMNS = {"notifications": "n.received_on", "reviews": "r.received_on", "responses": "r.responded_on"}


def _roles(roles) -> str:
    return ", ".join(f"'{role}'" for role in sorted(roles))


# The counts over notifications; {as_at}: the report's moment (a forward not yet due then is
# not yet judged).
NOTIFICATION_COUNTS = {
    "notifications": "TRUE",
    "in_time": f"n.working_days_taken <= {NOTIFICATION_WORKING_DAYS}",
    "late": f"n.working_days_taken > {NOTIFICATION_WORKING_DAYS}",
    "meets_criteria": "n.meets_criteria",
    "criteria_not_met": "NOT n.meets_criteria",
    "signed_off_senior": f"n.signed_off_by IN ({_roles(NOTIFICATION_SIGN_OFF_SENIOR)})",
    "domestic_abuse_aggravated": "n.domestic_abuse_aggravated",
    "mappa": "n.mappa_applies",
    "historical": "n.historical",
    "categorisation_incomplete": "cardinality(n.categorisation_gaps) > 0",
    "sg_forwarded": "f.case_id IS NOT NULL",
    "sg_forwarded_in_time": "f.delivered_at < n.sg_forward_due_at",
    "sg_forward_judged": "(f.case_id IS NOT NULL OR n.sg_forward_due_at <= {as_at})",
}
# Over reviews (REVIEW_SUMS but the sum of requests).
REVIEW_COUNTS = {
    "reviews": "TRUE",
    "signed_off_senior": f"r.signed_off_by IN ({_roles(REVIEW_SIGN_OFF_SENIOR)})",
    "reviewer_independent": "r.reviewer_independent",
    "risk_assessment_completed": "r.risk_assessment_completed",
    "risk_assessment_up_to_date": "r.risk_assessment_up_to_date",
    "risk_management_plan_in_place": "r.risk_management_plan_in_place",
    "risk_management_plan_not_in_place": "NOT r.risk_management_plan_in_place",
    "risk_management_plan_informed": "r.risk_management_plan_in_place AND r.risk_management_plan_informed",
    "order_reviews_referenced": "r.order_reviews_referenced",
    "good_practice_identified": "r.good_practice_identified",
    "in_time": "r.received_on <= r.submission_due_on",
    "with_info_requests": "r.info_requests > 0",
}
RESPONSE_COUNTS = {
    "responses": "TRUE",
    "in_time": "r.responded_on <= r.response_due_on",
    "concluded": "r.outcome = 'concluded'",
    "comprehensive_required": "r.outcome = 'comprehensive_review_required'",
    "iar_judged": "r.iar_decision_appropriate IS NOT NULL",
    "iar_appropriate": "r.iar_decision_appropriate",
    "quality_judged": "r.high_quality IS NOT NULL",
    "high_quality": "r.high_quality",
}
assert set(REVIEW_COUNTS) | {"info_requests"} == set(REVIEW_SUMS) and set(RESPONSE_COUNTS) == set(RESPONSE_SUMS)
# The quarterly report's own counts, at the end of the period (or as_at while it runs):
# {cutoff} that moment, {cutoff_day} its date (at most the period's last day), {start} the
# end of the day before the period. A deadline falls due at its breach moment
# (shared.calendar.judge): one that falls due in the period has it in (start, cutoff].
OPEN_CASE_COUNTS = {
    # notified by then and not closed by then
    "open_cases": "n.received_at < {cutoff} AND (n.closed_on IS NULL OR n.closed_on > {cutoff_day})",
}
DEADLINE_COUNTS = {
    # started and due before then, neither met nor cancelled before then
    "overdue_items": "d.started_at < {cutoff} AND d.due_at < {cutoff} AND (d.met_at IS NULL OR d.met_at >= {cutoff})"
                     " AND (d.cancelled_at IS NULL OR d.cancelled_at >= {cutoff})",
    # fell due in the period (by then), its stop not come before the due moment (met later or
    # never), not cancelled first. History's late stops come as `deadline.met` with the days
    # late, so the due moment decides, not a breach event.
    "breaches": "d.due_at > {start} AND d.due_at <= {cutoff} AND (d.met_at IS NULL OR d.met_at >= d.due_at)"
                " AND (d.cancelled_at IS NULL OR d.cancelled_at > d.due_at)",
}
COUNTS = {"notifications": NOTIFICATION_COUNTS, "reviews": REVIEW_COUNTS, "responses": RESPONSE_COUNTS,
          "open_cases": OPEN_CASE_COUNTS, "deadlines": DEADLINE_COUNTS}


def _bounds(scope: Scope) -> dict[str, str]:
    far = dt.datetime.max.replace(tzinfo=dt.timezone.utc)
    start, end = end_of_day(scope.period_from - dt.timedelta(days=1)), end_of_day(scope.period_to)
    cutoff = end if scope.as_at is None else min(end, scope.as_at)
    return {
        "{as_at}": _moment(scope.as_at or far), "{start}": _moment(start), "{cutoff}": _moment(cutoff),
        "{cutoff_day}": f"'{min(scope.period_to, local_date(cutoff)).isoformat()}'::date",
    }


def predicate(kind: str, name: str, scope: Scope) -> str:
    text = COUNTS[kind][name]
    for placeholder, value in _bounds(scope).items():
        text = text.replace(placeholder, value)
    return text


def _filters(kind: str, scope: Scope, names: Iterable[str] | None = None) -> str:
    return ", ".join(
        f"count(*) FILTER (WHERE {predicate(kind, name, scope)}) AS {name}" for name in (names or COUNTS[kind])
    )


# Set in each report's read-only transaction. A report's queries each read a period's rows
# once, aggregating as they go: compiling their expressions to machine code (JIT, which the
# planner chooses when it overestimates a join, as it does for a report as of a moment)
# took 0.4-1.5 s a query over 125,000 notifications, far longer than the query, and the
# joins and sorts of a long period spilled to disk at the default work_mem. Parallel
# workers are left off: a report already runs its queries side by side on its connections.
# The projections are read from memory, not disk: at the default random_page_cost (4) the
# planner read every forward to join a month's few hundred notifications (25-70 ms against
# 4 ms by their key).
REPORT_SETTINGS = {"jit": "off", "work_mem": "64MB", "max_parallel_workers_per_gather": "0",
                   "random_page_cost": "1.1", "DateStyle": "ISO"}  # a date as text: date.isoformat()


async def report_settings(conn: asyncpg.Connection) -> None:
    """REPORT_SETTINGS, for the rest of the transaction."""
    await conn.execute("; ".join(f"SET LOCAL {name} = '{value}'" for name, value in REPORT_SETTINGS.items()))


class Readers:
    """Connections reading one snapshot (queries.py opens them), shared by a report's
    queries: each query takes a free connection and gives it back, so a report's queries
    run side by side, as many at once as there are connections. A plain connection runs
    them one after the other."""

    def __init__(self, connections: Iterable[asyncpg.Connection], now: dt.datetime | None = None) -> None:
        # The moment the snapshot was taken (database_now), not now(): the first
        # connection's transaction began before it waited at the rebuild's gate.
        self.now = now
        self._free: asyncio.Queue[asyncpg.Connection] = asyncio.Queue()
        for conn in connections:
            self._free.put_nowait(conn)

    async def fetch(self, sql: str, *args) -> list[asyncpg.Record]:
        conn = await self._free.get()
        try:
            return await conn.fetch(sql, *args)
        finally:
            self._free.put_nowait(conn)

    async def fetchval(self, sql: str, *args):
        rows = await self.fetch(sql, *args)
        return rows[0][0] if rows else None


async def _fetch_all(reader, *queries: tuple) -> list[list]:
    """Each (sql, *args)'s rows: side by side on Readers, in turn on a connection."""
    if isinstance(reader, Readers):
        return list(await asyncio.gather(*(reader.fetch(*q) for q in queries)))
    return [await reader.fetch(*q) for q in queries]


# The notifications' breakdowns the report's tables need, each over one column (or MAPPA's
# three): counts only, so the grouping sets stay cheap. By authority and quarter comes with
# the totals (_notification_totals_sql).
_NOTIFICATION_GROUPS = ("incident_type", "criterion", "signed_off_by", "order_type", "working_days_taken",
                        "mappa_applies")
# Per authority, besides the counts: each categorisation gap (shared/categorisation.py).
_GAP_COLUMNS = tuple((gap, f"gap_{gap}") for gap in GAPS)
_GAP_COUNTS = ", ".join(f"count(*) FILTER (WHERE '{gap}' = ANY(n.categorisation_gaps)) AS {column}"
                        for gap, column in _GAP_COLUMNS)
# The counts that need the notification's first forward to the Scottish Government (the
# join); the others are counted over the notifications alone.
_FORWARD_COUNTS = tuple(name for name, text in NOTIFICATION_COUNTS.items() if "f." in text)
_OWN_COUNTS = tuple(name for name in NOTIFICATION_COUNTS if name not in _FORWARD_COUNTS)
# Of the counts kept by month, only the forwards' depend on the report (its moment, as_at),
# so only their summary of a month waits until all its forwards have fallen due (Summaries.usable).
assert all("{" not in text for kind in ("reviews", "responses") for text in COUNTS[kind].values())
assert all("{" not in NOTIFICATION_COUNTS[name] for name in _OWN_COUNTS)
assert all(NOTIFICATION_COUNTS[name].replace("{as_at}", "").count("{") == 0 for name in _FORWARD_COUNTS)


def month_of(column: str) -> str:
    """The first day of the month of a date column: the key of the summaries by month."""
    return f"date_trunc('month', {column}::timestamp)::date"


def _month(column: str, by_month: bool) -> tuple[str, str]:
    """For a statement grouped by month too: the month as an output column, and as a key."""
    return (f", {month_of(column)} AS month", month_of(column)) if by_month else ("", "")


def _notifications_sql(scope: Scope, days: Callable[[str], str] = in_period, by_month: bool = False) -> str:
    """The period's notifications grouped every way the report's tables need."""
    notifications = relation("notifications", scope.as_of)
    month, key = _month("n.received_on", by_month)
    return f"""
SELECT {', '.join(f'GROUPING(n.{g}) AS g_{g}' for g in _NOTIFICATION_GROUPS)},
       n.incident_type, n.criterion, n.signed_off_by, n.order_type, n.working_days_taken,
       n.mappa_applies, n.mappa_category, n.mappa_level, count(*) AS notifications{month}
FROM {notifications} n WHERE {days('n.received_on')}
GROUP BY {key + ', ' if key else ''}GROUPING SETS ((n.incident_type), (n.criterion), (n.signed_off_by),
    (n.order_type), (n.working_days_taken), (n.mappa_applies, n.mappa_category, n.mappa_level))
"""


def _notification_totals_sql(scope: Scope, days: Callable[[str], str] = in_period, by_month: bool = False) -> str:
    """The counts of NOTIFICATION_COUNTS that need no forward and the categorisation gaps,
    by authority and calendar quarter (the report adds them up: by authority, in all)."""
    notifications = relation("notifications", scope.as_of)
    month, key = _month("n.received_on", by_month)
    return (
        f"SELECT n.local_authority, date_trunc('quarter', n.received_on)::date AS quarter,"
        f" {_filters('notifications', scope, _OWN_COUNTS)}, {_GAP_COUNTS}{month}"
        f" FROM {notifications} n WHERE {days('n.received_on')} GROUP BY 1, 2{', ' + key if key else ''}"
    )


def _forward_totals_sql(scope: Scope, days: Callable[[str], str] = in_period, by_month: bool = False) -> str:
    """The counts of NOTIFICATION_COUNTS over the notifications and their first forward to
    the Scottish Government."""
    source, within = _source("notifications", scope, days=days)
    month, key = _month("n.received_on", by_month)
    return (f"SELECT {_filters('notifications', scope, _FORWARD_COUNTS)}{month} FROM {source} WHERE {within}"
            f"{' GROUP BY ' + key if key else ''}")


def _review_totals_sql(scope: Scope, days: Callable[[str], str] = in_period, by_month: bool = False) -> str:
    """The counts of REVIEW_COUNTS and the requests for information, by review type."""
    reviews, within = _source("reviews", scope, with_notification=False, days=days)
    month, key = _month(DATE_COLUMNS["reviews"], by_month)
    return (
        f"SELECT r.review_type, {_filters('reviews', scope)}, coalesce(sum(r.info_requests), 0)::bigint AS info_requests"
        f"{month} FROM {reviews} WHERE {within} GROUP BY r.review_type{', ' + key if key else ''}"
    )


def _response_totals_sql(scope: Scope, days: Callable[[str], str] = in_period, by_month: bool = False) -> str:
    """The counts of RESPONSE_COUNTS, by the type of the review answered."""
    responses, within = _source("responses", scope, with_notification=False, days=days)
    month, key = _month(DATE_COLUMNS["responses"], by_month)
    return (f"SELECT r.review_type, {_filters('responses', scope)}{month} FROM {responses} WHERE {within}"
            f" GROUP BY r.review_type{', ' + key if key else ''}")


def _review_lists_sql(scope: Scope, days: Callable[[str], str] = in_period, by_month: bool = False) -> str:
    """A review lists each finding and each tool once (domain.py): findings by authority and
    year (the learning themes over time), their sums the findings table; tools in all.

    One scan for both lists: unnest(findings, risk_tools) pairs them up, the shorter list
    padded with NULLs, which each grouping leaves out. (Not flattened, OFFSET 0: the year
    is worked out once a review, not once a finding.)"""
    reviews, within = _source("reviews", scope, with_notification=False, days=days)
    month, _ = _month(DATE_COLUMNS["reviews"], by_month)
    return (
        f"SELECT GROUPING(u.tool) AS g_tool, u.finding, u.tool, r.local_authority, r.year, count(*) AS reviews"
        f"{', r.month' if by_month else ''}"
        f" FROM (SELECT r.local_authority, extract(year FROM r.received_on)::int AS year, r.findings, r.risk_tools"
        f"{month} FROM {reviews} WHERE {within} OFFSET 0) r"
        " CROSS JOIN LATERAL unnest(r.findings, r.risk_tools) AS u(finding, tool)"
        f" GROUP BY {'r.month, ' if by_month else ''}GROUPING SETS ((u.finding, r.local_authority, r.year), (u.tool))"
    )


@dataclass(frozen=True)
class Aggregate:
    """One of the statements a report's counts come from: `sql(scope, days, by_month)` counts
    the rows of `kind` whose date (DATE_COLUMNS) `days` takes, its output `keys` then `sums`;
    `by_month`: grouped by that date's month too, as its summary (`report_<name>`) keeps
    it. Each sum adds up over disjoint sets of rows, so a period's figure is the sum of its
    months' and its other days'. `settles`: its counts depend on the report's moment."""

    name: str
    kind: str
    keys: tuple[str, ...]
    sums: tuple[str, ...]
    sql: Callable[..., str]
    settles: bool = False


AGGREGATES = {
    a.name: a for a in (
        Aggregate("notification_totals", "notifications", ("local_authority", "quarter"),
                  (*_OWN_COUNTS, *(column for _, column in _GAP_COLUMNS)), _notification_totals_sql),
        Aggregate("notification_groups", "notifications",
                  (*(f"g_{g}" for g in _NOTIFICATION_GROUPS), "incident_type", "criterion", "signed_off_by",
                   "order_type", "working_days_taken", "mappa_applies", "mappa_category", "mappa_level"),
                  ("notifications",), _notifications_sql),
        Aggregate("forward_totals", "notifications", (), _FORWARD_COUNTS, _forward_totals_sql, settles=True),
        Aggregate("review_totals", "reviews", ("review_type",), (*REVIEW_COUNTS, "info_requests"), _review_totals_sql),
        Aggregate("response_totals", "responses", ("review_type",), tuple(RESPONSE_COUNTS), _response_totals_sql),
        Aggregate("review_lists", "reviews", ("g_tool", "finding", "tool", "local_authority", "year"), ("reviews",),
                  _review_lists_sql),
    )
}


def _month_end(month: dt.date) -> dt.date:
    return month.replace(day=calendar.monthrange(month.year, month.month)[1])


@dataclass(frozen=True)
class Summaries:
    """The months a report may read from the summaries by month, as its snapshot has them:
    summarised and not changed since (`report_stale`), each with the moment the last forward
    of its notifications falls due (`settled_at`, None: no notification)."""

    months: Mapping[dt.date, dt.datetime | None]

    def usable(self, aggregate: Aggregate, scope: Scope) -> list[dt.date]:
        """The whole months of the scope's period this aggregate reads from its summary: none
        as of a moment past (the rows of then), nor on the cohort basis for reviews and
        responses; a month of forwards only once all of them have fallen due by the
        report's moment (as_at; the summary judges every one of them)."""
        if scope.as_of is not None or (aggregate.kind != "notifications" and scope.basis != "received"):
            return []
        return [
            month for month, settled_at in sorted(self.months.items())
            if month >= scope.period_from and _month_end(month) <= scope.period_to
            and not (aggregate.settles and scope.as_at is not None and settled_at is not None
                     and settled_at > scope.as_at)
        ]


def _left_over(period_from: dt.date, period_to: dt.date, months: list[dt.date]) -> list[tuple[dt.date, dt.date]]:
    """The spans of the period (first and last day) not in `months` (whole months in it, in order)."""
    spans, day = [], period_from
    for month in months:
        if month > day:
            spans.append((day, month - dt.timedelta(days=1)))
        end = _month_end(month)
        if end >= period_to:
            return spans
        day = end + dt.timedelta(days=1)
    return [*spans, (day, period_to)]


def aggregate_query(aggregate: Aggregate, scope: Scope, summaries: Summaries | None) -> tuple:
    """(sql, *args) of an aggregate over the scope: its summaries of the whole months it may
    read (Summaries.usable) added to the same statement over the rest of the period's days;
    over the period's rows alone when there are none."""
    months = [] if summaries is None else summaries.usable(aggregate, scope)
    if not months:
        return aggregate.sql(scope), scope.period_from, scope.period_to
    args: list = [months]
    spans = []
    for first, last in _left_over(scope.period_from, scope.period_to, months):
        args += [first, last]
        spans.append((len(args) - 1, len(args)))
    columns = ", ".join((*aggregate.keys, *aggregate.sums))
    parts = [f"SELECT {columns} FROM {SCHEMA}.report_{aggregate.name} WHERE month = ANY($1::date[])"]
    if spans:
        def days(column: str) -> str:
            return "(" + " OR ".join(f"{column} BETWEEN ${a} AND ${b}" for a, b in spans) + ")"
        parts.append(f"SELECT {columns} FROM ({aggregate.sql(scope, days)}) raw")
    keys = ", ".join(aggregate.keys)
    sums = ", ".join(f"coalesce(sum({name}), 0)::bigint AS {name}" for name in aggregate.sums)
    return (
        f"SELECT {keys + ', ' if keys else ''}{sums} FROM ({' UNION ALL '.join(parts)}) summed"
        f"{' GROUP BY ' + keys if keys else ''}",
        *args,
    )


async def notification_counts(reader, scope: Scope, summaries: Summaries | None = None) -> NotificationCounts:
    """Counts of the notifications received (Scottish date) in the scope's period, as known
    at its `as_of`, as at its `as_at` (a forward not due by then is not yet judged); the
    queries side by side when `reader` is Readers (connections of one snapshot); from the
    summaries of whole months where `summaries` allows."""
    counts = NotificationCounts()
    counts.totals.update(dict.fromkeys(NOTIFICATION_COUNTS, 0))
    by_group = {
        "incident_type": counts.by_incident_type, "criterion": counts.by_criterion,
        "signed_off_by": counts.by_sign_off, "order_type": counts.by_order_type,
        "working_days_taken": counts.working_days,
    }
    total_rows, grouped_rows, forward_rows = await _fetch_all(reader, *(
        aggregate_query(AGGREGATES[name], scope, summaries)
        for name in ("notification_totals", "notification_groups", "forward_totals")
    ))
    for row in grouped_rows:
        grouped = [g for g in _NOTIFICATION_GROUPS if row[f"g_{g}"] == 0]
        if grouped == ["mappa_applies"]:
            if row["mappa_applies"]:
                counts.by_mappa[row["mappa_category"], row["mappa_level"]] += row["notifications"]
        else:
            by_group[grouped[0]][row[grouped[0]]] += row["notifications"]
    by_authority: dict[str, Counter] = {}
    totals = counts.totals
    for row in total_rows:  # a row an authority and quarter: thousands over years (plain additions)
        authority, notified = row["local_authority"], row["notifications"]
        counts.by_quarter[authority, row["quarter"]] = notified
        counts.by_authority[authority] += notified
        for name in _OWN_COUNTS:
            totals[name] += row[name]
        summed = by_authority.get(authority)
        if summed is None:
            summed = by_authority[authority] = Counter()
        summed["notifications"] += notified
        summed["incomplete"] += row["categorisation_incomplete"]
        for gap, column in _GAP_COLUMNS:
            summed[gap] += row[column]
    for row in forward_rows:
        for name in _FORWARD_COUNTS:
            counts.totals[name] += row[name]
    counts.total = counts.totals["notifications"]
    counts.categorisation = by_authority
    return counts


async def review_counts(reader, scope: Scope, summaries: Summaries | None = None) -> ReviewCounts:
    """Counts of the reviews, and of the responses, the scope's period holds (its basis);
    the queries side by side when `reader` is Readers; from the summaries of whole months
    where `summaries` allows."""
    counts = ReviewCounts()
    list_rows, review_rows, response_rows = await _fetch_all(reader, *(
        aggregate_query(AGGREGATES[name], scope, summaries)
        for name in ("review_lists", "review_totals", "response_totals")
    ))
    for row in review_rows:
        counts.by_type[row["review_type"]] = Counter({k: row[k] for k in REVIEW_SUMS})
    for row in response_rows:
        counts.responses_by_type[row["review_type"]] = Counter({k: row[k] for k in RESPONSE_SUMS})
    for row in list_rows:
        if row["g_tool"] and row["finding"] is not None:
            counts.findings[row["finding"]] += row["reviews"]
            counts.findings_over_time.append((row["local_authority"], row["year"], row["finding"], row["reviews"]))
        elif not row["g_tool"] and row["tool"] is not None:
            counts.risk_tools[row["tool"]] = row["reviews"]
    return counts


# --- the summaries by month -------------------------------------------------------------
#
# Each aggregate above is kept by month (`report_<name>`: its statement grouped by month
# too), so a report over years adds up a few hundred rows instead of reading every one; the
# statements, and so the figures' rules, are the same. A transaction that changes what they
# count notes it in `report_stale` (mark_stale: the live consumers' savers); a report reads
# a month so noted from its rows until `refresh_summaries` has summarised it again (a
# report does that first, in a transaction of its own); `sir report rebuild` summarises
# every month anew (replace_all). `report_months`: the months summarised.

SUMMARY_TABLES = tuple(f"report_{name}" for name in AGGREGATES)
# Who (re)writes the summaries: one at a time (pg_advisory_xact_lock of hashtext(this)).
_SUMMARIES_LOCK = f"{SCHEMA}.report_months"
# The months the rows noted in report_stale are counted under: those noted, and the month
# of each noted case's notification (a forward changed: it is counted with its notification).
_STALE_MONTHS = (
    "SELECT m AS month FROM {stale} s, unnest(s.months) m"
    f" UNION SELECT {month_of('n.received_on')} FROM {SCHEMA}.notifications n"
    " WHERE n.case_id IN (SELECT unnest(s.cases) FROM {stale} s)"
)


async def mark_stale(conn: asyncpg.Connection, dates: Iterable[dt.date] = (), cases: Iterable[uuid.UUID] = ()) -> None:
    """In a writer's transaction: its changes to what the summaries count, the dates of the
    rows changed (DATE_COLUMNS: their months) and the cases whose first forward to the
    Scottish Government changed. One row a transaction, never updated: no writer waits."""
    months, changed = sorted({d.replace(day=1) for d in dates}), sorted(set(cases))
    if months or changed:
        await conn.execute(f"INSERT INTO {SCHEMA}.report_stale (months, cases) VALUES ($1, $2)", months, changed)


def stale_dates(before: Mapping[uuid.UUID, CaseRows | None], after: Mapping[uuid.UUID, CaseRows | None]) -> set[dt.date]:
    """The dates (DATE_COLUMNS) of the notification and review rows a batch of cases changed."""
    dates = set()
    for case_id, case in after.items():
        if case is None:
            continue
        old = before.get(case_id)
        if old is None or old.notification is not case.notification:
            dates.add(case.notification.received_on)
        known = {id(r) for r in old.reviews} if old is not None else set()  # unchanged: the same object
        for row in (*(r for r in case.reviews if id(r) not in known), *(row for _, row, _ in case.replaced)):
            dates.add(row.received_on)
            if getattr(row, "responded_on", None) is not None:
                dates.add(row.responded_on)
    return dates


async def lock_summaries(conn: asyncpg.Connection, wait: bool = True) -> bool:
    """Take the summaries' lock until the transaction ends (or, not waiting, say it is taken)."""
    if wait:
        await conn.execute("SELECT pg_advisory_xact_lock(hashtext($1))", _SUMMARIES_LOCK)
        return True
    return bool(await conn.fetchval("SELECT pg_try_advisory_xact_lock(hashtext($1))", _SUMMARIES_LOCK))


async def refresh_summaries(pool: asyncpg.Pool) -> None:
    """Summarise again the months noted stale, in a transaction of its own; skipped while
    another does it (a report then reads those months from their rows)."""
    if not await pool.fetchval(f"SELECT EXISTS (SELECT 1 FROM {SCHEMA}.report_stale)"):
        return
    async with pool.acquire() as conn, conn.transaction():
        if not await lock_summaries(conn, wait=False):
            return
        # What is noted by now; a writer not yet committed keeps its note for the next time.
        months = await conn.fetch(
            f"WITH gone AS (DELETE FROM {SCHEMA}.report_stale RETURNING months, cases)"
            f" {_STALE_MONTHS.format(stale='gone')}"
        )
        await summarise(conn, sorted(r["month"] for r in months))


def _literal(day: dt.date) -> str:
    return f"'{day.isoformat()}'::date"


async def summarise(conn: asyncpg.Connection, months: Sequence[dt.date] | None = None) -> None:
    """Inside the caller's transaction, holding the summaries' lock: summarise these months
    (None: every month, anew) from the rows, as the aggregates count them as at no moment
    (every forward judged: report_months keeps when each month's last one falls due).

    Each statement reads the rows as committed when it starts: a writer that commits in
    between noted its months after the notes this refresh took, so they stay stale."""
    # `days` picks the rows; the scope's period is not read by these statements.
    scope = Scope(dt.date(2000, 1, 1), dt.date(2000, 1, 1))
    tables = [f"{SCHEMA}.{table}" for table in SUMMARY_TABLES]
    # As a report's statements (REPORT_SETTINGS), for the rest of the caller's transaction:
    # compiled (JIT) and grouped on disk, every month's summaries took three times as long
    # (125,000 notifications: 0.9-1.2 s for the learning themes alone, 0.34 s without).
    await report_settings(conn)
    if months is None:
        # DELETE, not TRUNCATE: a report reading during a rebuild holds a read lock on these
        # tables while it waits for the rebuild's projections; TRUNCATE would wait for it in
        # turn, and PostgreSQL would end the rebuild as a deadlock. They are small.
        for table in [*tables, f"{SCHEMA}.report_months", f"{SCHEMA}.report_stale"]:
            await conn.execute(f"DELETE FROM {table}")
        ends = " UNION ALL ".join(  # each by its index
            f"SELECT {end}({column}) FROM {SCHEMA}.{table}" for end in ("min", "max")
            for table, column in (("notifications", "received_on"), ("reviews", "received_on"),
                                  ("reviews", "responded_on"))
        )
        first, last = await conn.fetchrow(f"SELECT min(d), max(d) FROM ({ends}) AS ends(d)")
        months = []
        while first is not None and first <= last:
            months.append(first.replace(day=1))
            first = _month_end(first) + dt.timedelta(days=1)
        statements = []
    else:
        listed = f"ARRAY[{', '.join(map(_literal, months))}]::date[]"
        statements = [f"DELETE FROM {table} WHERE month = ANY({listed})" for table in tables]
    if not months:
        return
    spans: list[list[dt.date]] = []
    for month in sorted(months):
        if spans and spans[-1][1] + dt.timedelta(days=1) == month:
            spans[-1][1] = _month_end(month)
        else:
            spans.append([month, _month_end(month)])

    def days(column: str) -> str:
        return "(" + " OR ".join(f"{column} BETWEEN {_literal(a)} AND {_literal(b)}" for a, b in spans) + ")"

    for name, aggregate in AGGREGATES.items():
        columns = ", ".join((*aggregate.keys, *aggregate.sums, "month"))
        statements.append(f"INSERT INTO {SCHEMA}.report_{name} ({columns})"
                          f" SELECT {columns} FROM ({aggregate.sql(scope, days, by_month=True)}) summary")
    statements.append(
        f"INSERT INTO {SCHEMA}.report_months (month, settled_at)"
        f" SELECT m.month, s.settled_at FROM unnest(ARRAY[{', '.join(map(_literal, months))}]::date[]) AS m(month)"
        f" LEFT JOIN (SELECT {month_of('n.received_on')} AS month, max(n.sg_forward_due_at) AS settled_at"
        f" FROM {SCHEMA}.notifications n WHERE {days('n.received_on')} GROUP BY 1) s USING (month)"
        " ON CONFLICT (month) DO UPDATE SET settled_at = EXCLUDED.settled_at"
    )
    await conn.execute(";\n".join(statements))


async def summaries(reader, scope: Scope) -> Summaries | None:
    """The months of the scope's period a report may read from the summaries, in its
    snapshot (None: as of a moment past, which reads the rows of then)."""
    if scope.as_of is not None:
        return None
    rows = await reader.fetch(
        f"WITH stale AS ({_STALE_MONTHS.format(stale=f'{SCHEMA}.report_stale')})"
        f" SELECT month, settled_at FROM {SCHEMA}.report_months WHERE month BETWEEN $1 AND $2"
        " AND month NOT IN (SELECT month FROM stale)",
        scope.period_from, scope.period_to,
    )
    return Summaries({r["month"]: r["settled_at"] for r in rows})


async def quarter_counts(
    reader, period_from: dt.date, period_to: dt.date, as_at: dt.datetime | None = None,
    as_of: dt.datetime | None = None,
) -> QuarterCounts:
    """Open cases and overdue deadlines at the end of the period, and deadlines breached
    within it, by local authority; for a period still running, at `as_at` (nothing counts
    as breached or overdue before its due moment has passed). The predicates are
    OPEN_CASE_COUNTS and DEADLINE_COUNTS, which the drill-down lists too."""
    scope = Scope(period_from, period_to, as_of, "received", as_at)
    counts = QuarterCounts()
    cases, _ = _source("open_cases", scope)
    deadlines, _ = _source("deadlines", scope, with_notification=False)
    open_rows, overdue_rows, breach_rows = await _fetch_all(
        reader,
        (f"SELECT n.local_authority, count(*) AS n FROM {cases}"
         f" WHERE {predicate('open_cases', 'open_cases', scope)} GROUP BY 1",),
        (f"SELECT d.local_authority, count(*) AS n FROM {deadlines}"
         f" WHERE {predicate('deadlines', 'overdue_items', scope)} GROUP BY 1",),
        (f"SELECT d.local_authority, d.rule, count(*) AS n FROM {deadlines}"
         f" WHERE {predicate('deadlines', 'breaches', scope)} GROUP BY 1, 2",),
    )
    for row in open_rows:
        counts.open_cases[row["local_authority"]] = row["n"]
    for row in overdue_rows:
        counts.overdue_items[row["local_authority"]] = row["n"]
    for row in breach_rows:
        counts.breaches[row["local_authority"]] += row["n"]
        counts.breaches_by_rule[row["rule"]] += row["n"]
    return counts


async def notifications_by_quarter(conn, scope: Scope) -> dict[tuple[str, dt.date], int]:
    """The period's notifications by (authority, first day of the calendar quarter)."""
    rows = await conn.fetch(
        f"SELECT n.local_authority, date_trunc('quarter', n.received_on)::date AS quarter, count(*) AS n"
        f" FROM {relation('notifications', scope.as_of)} n WHERE n.received_on BETWEEN $1 AND $2 GROUP BY 1, 2",
        scope.period_from, scope.period_to,
    )
    return {(r["local_authority"], r["quarter"]): r["n"] for r in rows}


async def categorisation_follow_up(conn, scope: Scope) -> list[tuple]:
    """The period's notifications with incomplete categorisation (authority, reference, date, gaps)."""
    source, within = _source("notifications", scope)
    rows = await conn.fetch(
        f"SELECT n.local_authority, n.council_reference, n.received_on, n.categorisation_gaps FROM {source}"
        f" WHERE {within} AND {predicate('notifications', 'categorisation_incomplete', scope)}"
        " ORDER BY n.local_authority, n.received_on, n.council_reference",
        scope.period_from, scope.period_to,
    )
    return [(r[0], r[1], r[2], tuple(r[3])) for r in rows]


# --- drill-down: the cases behind a figure ------------------------------------------------

@dataclass(frozen=True)
class FigureCases:
    """How a figure's cases are listed: the rows of `kind` its count counts (a predicate of
    COUNTS, the same SQL the figure is counted with), of one review type where the figure
    says so, and the value shown for each case (what put it in the figure)."""

    kind: str
    count: str
    value: str
    review_type: str | None = None


_IAR, _COMPREHENSIVE = "initial_analysis", "comprehensive"
FIGURE_CASES: dict[str, FigureCases] = {
    "notifications": FigureCases("notifications", "notifications", "n.received_on"),
    "authorities_notifying": FigureCases("notifications", "notifications", "n.local_authority"),
    "notifications_meeting_criteria": FigureCases("notifications", "meets_criteria", "n.meets_criteria"),
    "notifications_not_meeting_criteria": FigureCases("notifications", "criteria_not_met", "n.meets_criteria"),
    "notified_within_5_working_days": FigureCases("notifications", "in_time", "n.working_days_taken"),
    "notified_late": FigureCases("notifications", "late", "n.working_days_taken"),
    "late_notification_working_days": FigureCases("notifications", "late", "n.working_days_taken"),
    "forwarded_to_sg_within_2_working_days": FigureCases("notifications", "sg_forwarded_in_time", "f.delivered_at"),
    "forwarded_to_sg": FigureCases("notifications", "sg_forwarded", "f.delivered_at"),
    "notifications_signed_off_by_service_manager_or_above": FigureCases(
        "notifications", "signed_off_senior", "n.signed_off_by"),
    "notifications_domestic_abuse_aggravated": FigureCases(
        "notifications", "domestic_abuse_aggravated", "n.domestic_abuse_aggravated"),
    "notifications_mappa": FigureCases("notifications", "mappa", "concat(n.mappa_category, '-', n.mappa_level)"),
    "notifications_historical": FigureCases("notifications", "historical", "n.historical"),
    "notifications_with_incomplete_categorisation": FigureCases(
        "notifications", "categorisation_incomplete", "array_to_string(n.categorisation_gaps, ', ')"),
    "reviews": FigureCases("reviews", "reviews", "r.review_type"),
    **{
        f"{t}_reviews": FigureCases("reviews", "reviews", "r.review_type", t)
        for t in ("initial_analysis", "comprehensive", "reflective_learning")
    },
    "reviews_within_3_months": FigureCases("reviews", "in_time", "r.submission_due_on"),
    "reviews_signed_off_by_head_of_service_or_cswo": FigureCases("reviews", "signed_off_senior", "r.signed_off_by"),
    "reviews_risk_assessment_completed": FigureCases("reviews", "risk_assessment_completed", "true"),
    "reviews_risk_assessment_up_to_date": FigureCases("reviews", "risk_assessment_up_to_date", "true"),
    "reviews_risk_management_plan_in_place": FigureCases("reviews", "risk_management_plan_in_place", "true"),
    "reviews_risk_management_plan_not_referenced": FigureCases(
        "reviews", "risk_management_plan_not_in_place", "false"),
    "risk_management_plans_informed_by_assessment": FigureCases("reviews", "risk_management_plan_informed", "true"),
    "reviews_order_reviews_referenced": FigureCases("reviews", "order_reviews_referenced", "true"),
    "reviews_reviewer_independent": FigureCases("reviews", "reviewer_independent", "true"),
    "reviews_good_practice_identified": FigureCases("reviews", "good_practice_identified", "true"),
    # A sum, not a count: the values (requests per review) add up to the figure.
    "additional_info_requests": FigureCases("reviews", "with_info_requests", "r.info_requests"),
    "reviews_with_additional_info_requested": FigureCases("reviews", "with_info_requests", "r.info_requests"),
    "initial_analysis_reviews_with_additional_info_requested": FigureCases(
        "reviews", "with_info_requests", "r.info_requests", _IAR),
    "comprehensive_reviews_with_additional_info_requested": FigureCases(
        "reviews", "with_info_requests", "r.info_requests", _COMPREHENSIVE),
    "inspectorate_responses": FigureCases("responses", "responses", "r.outcome"),
    "inspectorate_responses_within_1_month": FigureCases("responses", "in_time", "r.response_due_on"),
    "initial_analysis_decisions_appropriate": FigureCases(
        "responses", "iar_appropriate", "r.iar_decision_appropriate", _IAR),
    "initial_analysis_comprehensive_review_required": FigureCases(
        "responses", "comprehensive_required", "r.outcome", _IAR),
    "comprehensive_reviews_high_quality": FigureCases("responses", "high_quality", "r.high_quality", _COMPREHENSIVE),
    # the quarterly report's own (any period: at its end); deadlines are listed one a row
    "open_cases_at_quarter_end": FigureCases("open_cases", "open_cases", "coalesce(n.closed_reason, 'open')"),
    "overdue_items_at_quarter_end": FigureCases("deadlines", "overdue_items", "d.rule"),
    "deadlines_breached": FigureCases("deadlines", "breaches", "d.rule"),
}
# Tables: a row's cases are those whose column has the row's value ($3), the column the
# table is grouped by.
TABLE_CASES: dict[str, tuple[str, str]] = {
    "notifications_by_authority": ("notifications", "n.local_authority = $3"),
    "reporting_patterns": ("notifications", "n.local_authority = $3"),
    "categorisation_by_authority": (
        "notifications", f"n.local_authority = $3 AND {NOTIFICATION_COUNTS['categorisation_incomplete']}"),
    "notifications_by_incident_type": ("notifications", "n.incident_type = $3"),
    "notifications_by_criterion": ("notifications", "n.criterion = $3"),
    "notifications_by_order_type": ("notifications", "n.order_type = $3"),
    "notifications_by_sign_off": ("notifications", "n.signed_off_by = $3"),
    "notifications_by_mappa": ("notifications", "n.mappa_applies AND concat(n.mappa_category, '-', n.mappa_level) = $3"),
    "reviews_by_type": ("reviews", "r.review_type = $3"),
    "review_findings": ("reviews", "$3 = ANY(r.findings)"),
    "risk_tools": ("reviews", "$3 = ANY(r.risk_tools)"),
}
class UnknownFigure(ValueError):
    """Not a figure or table the drill-down lists (the message says which there are)."""


@dataclass(frozen=True)
class _CaseQuery:
    """A figure's (or table row's) cases as SQL: FROM `source` WHERE `within` AND
    (`condition`), `shown` the value listed; `params` are those `within` uses ($1...), and
    `{value}` in `condition` and `shown` stands for the table row's value (`value`)."""

    kind: str
    source: str
    within: str
    condition: str
    shown: str
    params: tuple
    value: str | None


def _case_query(scope: Scope, figure: str, value: str | None, local_authority: str | None) -> _CaseQuery:
    if figure in FIGURE_CASES:
        if value is not None:
            raise UnknownFigure(f"{figure} is a figure, not a table: it takes no value")
        spec = FIGURE_CASES[figure]
        kind, condition, shown = spec.kind, predicate(spec.kind, spec.count, scope), spec.value
        if spec.review_type is not None:
            condition += f" AND r.review_type = '{spec.review_type}'"
    elif figure in TABLE_CASES:
        if value is None:
            raise UnknownFigure(f"{figure} is a table: value names its row")
        kind, condition = TABLE_CASES[figure]
        condition, shown = condition.replace("$3", "{value}"), "{value}::text"
    else:
        raise UnknownFigure(f"no figure or table {figure!r}; figures: {', '.join(sorted(FIGURE_CASES))};"
                            f" tables: {', '.join(sorted(TABLE_CASES))}")
    source, within = _source(kind, scope)
    subject = "d" if kind == "deadlines" else "n"  # whose case id and authority
    # open cases and deadlines have no period of receipt: $1, $2 are not used
    params: list = [] if kind in ("open_cases", "deadlines") else [scope.period_from, scope.period_to]
    if local_authority is not None:
        params.append(local_authority)
        within += f" AND {subject}.local_authority = ${len(params)}"
    return _CaseQuery(kind, source, within, condition, shown, tuple(params), value)


# A listed case's fields, in the order the SELECT reads them and the list shows them
# (_case_list_sql, _listed); the case id, review id and dates come as text (the list's
# strings: PostgreSQL's ISO date is date.isoformat()), the value and deadline moments
# as their types (_iso).
_LISTED = {
    "notifications": ("case_id", "council_reference", "local_authority", "incident_date", "notified_on", "value"),
    "deadlines": ("case_id", "council_reference", "local_authority", "incident_date", "notified_on",
                  "rule", "due_at", "met_at", "value"),
    "reviews": ("case_id", "council_reference", "local_authority", "incident_date", "notified_on",
                "review_id", "review_received_on", "responded_on", "value"),
}
_LISTED["open_cases"], _LISTED["responses"] = _LISTED["notifications"], _LISTED["reviews"]


def _case_list_sql(q: _CaseQuery, value_param: str, limit: int | None, with_total: bool) -> str:
    """The cases' list (with the total `count(*) OVER ()` if `with_total` and there is a
    `limit`: without one the total is the rows read). Text for the strings listed: an
    88,698-row list converted each uuid and date in Python in 0.27 s, in SQL in 0.03 s."""
    subject = "d" if q.kind == "deadlines" else "n"
    extra = {
        "notifications": "",
        "open_cases": "",
        "deadlines": ", d.rule, d.due_at, d.met_at",
    }.get(q.kind, ", r.review_id::text, r.received_on::text AS review_received_on, r.responded_on::text")
    order = {
        "deadlines": "d.due_at, d.case_id, d.rule",
    }.get(q.kind, "n.received_on, n.case_id" + (", r.received_on, r.review_id" if q.kind in ("reviews", "responses") else ""))
    select = (
        f"SELECT {subject}.case_id::text, n.council_reference, {subject}.local_authority, n.incident_date::text,"
        f" n.received_on::text AS notified_on{extra}, ({q.shown.replace('{value}', value_param)}) AS value"
        f"{', count(*) OVER () AS total' if with_total and limit is not None else ''}"
        f" FROM {q.source} WHERE {q.within} AND ({q.condition.replace('{value}', value_param)})"
    )
    if limit is None:
        return f"{select} ORDER BY {order}"
    if q.kind in ("reviews", "responses") and q.within.startswith("r."):
        # Reviews or responses of the period (received basis), listed in their notifications'
        # order: read in that order, the first few could lie anywhere in it (the planner
        # walks every notification from the first). The period's rows first, then the order.
        # (The dates and ids are text here: ISO dates and lowercase hex, byte by byte ("C"),
        # sort as the dates and uuids do.)
        return (f"WITH m AS MATERIALIZED ({select}) SELECT * FROM m"
                f' ORDER BY m.notified_on COLLATE "C", m.case_id COLLATE "C", m.review_received_on COLLATE "C",'
                f' m.review_id COLLATE "C" LIMIT {int(limit)}')
    return f"{select} ORDER BY {order} LIMIT {int(limit)}"


async def cases(
    conn, scope: Scope, figure: str, value: str | None = None, local_authority: str | None = None,
    limit: int | None = None,
) -> tuple[int, list[dict]]:
    """The cases behind a figure (or a table's row, `value`), in the scope the report was
    counted in, narrowed to one authority for a council: how many, and (the first `limit`
    of) them with case id, council reference, authority, dates and the value that put each
    case in the figure."""
    q = _case_query(scope, figure, value, local_authority)
    params = [*q.params, *([] if q.value is None else [q.value])]
    rows = await conn.fetch(_case_list_sql(q, f"${len(params)}", limit, with_total=True), *params)
    total = len(rows) if limit is None or not rows else rows[0]["total"]
    return total, _listed(q.kind, rows)


async def many_cases(
    reader, scope: Scope, wanted: Sequence[tuple[str, str | None]], local_authority: str | None, limit: int,
) -> list[tuple[int, list[dict]]]:
    """`cases` of each (figure, value), the first `limit` of each (the HTML page's
    drill-down section): every count of a kind in one scan (FILTER), then each list on its
    own, without the count, so it can stop at `limit` rows read in order; none for a figure
    that counts no case."""
    queries = [_case_query(scope, figure, value, local_authority) for figure, value in wanted]
    by_kind: dict[tuple, list[int]] = {}
    for index, q in enumerate(queries):
        by_kind.setdefault((q.source, q.within, q.params), []).append(index)
    statements = []
    for (source, within, params), indexes in by_kind.items():
        values = [queries[i].value for i in indexes if queries[i].value is not None]
        numbered, filters = len(params), []
        for i in indexes:
            value_param = "NULL"
            if queries[i].value is not None:
                numbered += 1
                value_param = f"${numbered}"
            filters.append(f"count(*) FILTER (WHERE {queries[i].condition.replace('{value}', value_param)})")
        statements.append((f"SELECT {', '.join(filters)} FROM {source} WHERE {within}", *params, *values))
    counts = [0] * len(queries)
    for (_, indexes), rows in zip(by_kind.items(), await _fetch_all(reader, *statements), strict=True):
        for position, i in enumerate(indexes):
            counts[i] = rows[0][position]
    listed: list[list[dict]] = [[] for _ in queries]
    lists = [i for i, count in enumerate(counts) if count]
    params_of = [[*queries[i].params, *([] if queries[i].value is None else [queries[i].value])] for i in lists]
    for i, rows in zip(lists, await _fetch_all(reader, *(
        (_case_list_sql(queries[i], f"${len(p)}", limit, with_total=False), *p) for i, p in zip(lists, params_of, strict=True)
    )), strict=True):
        listed[i] = _listed(queries[i].kind, rows)
    return list(zip(counts, listed, strict=True))


def _iso(value):
    return value.isoformat() if isinstance(value, (dt.date, dt.datetime)) else value


def _listed(kind: str, rows) -> list[dict]:
    """The rows of _case_list_sql as the list shows them: its fields (_LISTED) by name
    (a total after them left out), the value and deadline moments in ISO form."""
    fields = _LISTED[kind]
    listed = [dict(zip(fields, r, strict=False)) for r in rows]  # a total after the fields: not listed
    for moment in ("value", "due_at", "met_at") if kind == "deadlines" else ("value",):
        for row in listed:
            row[moment] = _iso(row[moment])
    return listed


async def database_now(conn) -> dt.datetime:
    if isinstance(conn, Readers) and conn.now is not None:
        return conn.now
    return await conn.fetchval("SELECT now()")


async def notifications_by_authority(conn) -> dict[str, int]:
    """Notifications received so far, by the authorities that have any."""
    rows = await conn.fetch(f"SELECT local_authority, notifications FROM {SCHEMA}.notifications_by_authority")
    return {r["local_authority"]: r["notifications"] for r in rows}
