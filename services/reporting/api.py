"""Reporting's HTTP API: the national report for any period, the quarterly report, as
JSON, CSV or HTML (docs/reports.md)."""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import typing
from typing import Annotated, AsyncIterator, Literal

import asyncpg
from fastapi import APIRouter, HTTPException, Path, Query, Request, Response

from services.reporting import patterns, repository
from services.reporting.domain import (
    categorisation_table,
    follow_up_table,
    learning_theme_tables,
    national_report,
    patterns_table,
)
from services.reporting.domain import period_state, quarter_period, quarterly_report
from services.reporting.render import case_anchor, filename, render
from shared.events import DeadlineRule
from shared.auth import Principal
from shared.policy import CASE_LIST_ROLES, Authorized, case_list_scope
from shared.reference import LOCAL_AUTHORITIES, VOCABULARIES, label
from shared.settings import get_settings

router = APIRouter(prefix="/v1", tags=["reports"])

Format = Literal["json", "csv", "html"]


_acquiring = asyncio.Lock()


@contextlib.asynccontextmanager
async def _one_snapshot(pool: asyncpg.Pool, connections: int) -> AsyncIterator[list[asyncpg.Connection]]:
    """Connections reading the same snapshot (the first one's, exported to the others),
    so a report's queries run side by side and still see one state of the projections."""
    async with contextlib.AsyncExitStack() as stack:
        # One report at a time takes its connections: several each holding some and
        # waiting for the rest would empty the pool for good (the consumers' too).
        async with _acquiring:
            held = [await stack.enter_async_context(pool.acquire()) for _ in range(connections)]
        await stack.enter_async_context(held[0].transaction(isolation="repeatable_read", readonly=True))
        snapshot = await held[0].fetchval("SELECT pg_export_snapshot()")
        for conn in held[1:]:
            await stack.enter_async_context(conn.transaction(isolation="repeatable_read", readonly=True))
            await conn.execute(f"SET TRANSACTION SNAPSHOT '{snapshot}'")
        yield held


def _moment(now: dt.datetime, as_of: dt.datetime | None) -> dt.datetime:
    """The moment a report is made at: now, or the earlier moment it is asked as known at."""
    return now if as_of is None or as_of > now else as_of


async def compute_national(
    pool: asyncpg.Pool, period_from: dt.date, period_to: dt.date, now: dt.datetime | None = None,
    as_of: dt.datetime | None = None, basis: repository.Basis = "received", threshold: float | None = None,
) -> dict:
    """The national report over the projections, read in one snapshot, as at `now` (the
    database clock unless a test or command gives one): a running period is never counted
    beyond it. `as_of`: only what the platform had recorded by then counts, and the report
    is made as it would have been made then; `basis`: the reviews and responses received in
    the period, or those of the period's notifications (cohort)."""
    async with _one_snapshot(pool, 3) as (first, second, third):
        now = now or await repository.database_now(first)
        scope = report_scope(period_from, period_to, now, as_of, basis)
        notifications, reviews = await asyncio.gather(
            repository.notification_counts(first, scope, third),
            repository.review_counts(second, scope),
        )
        report = national_report(
            period_from, period_to, _moment(now, as_of), notifications, reviews,
            extra_tables=_signals(scope, notifications, reviews, threshold),
        )
        return report | known(now, as_of, basis)


def _signals(scope: repository.Scope, n, r, threshold: float | None) -> dict[str, dict]:
    """The tables beyond the published report: reporting patterns, categorisation quality,
    learning themes over time (from the same scans as the figures)."""
    national, found = patterns_of(scope, n.by_quarter, threshold)
    return {
        "reporting_patterns": patterns_table(national, found),
        "categorisation_by_authority": categorisation_table(n.categorisation),
        **learning_theme_tables(r.findings_over_time),
    }


def patterns_of(scope: repository.Scope, by_quarter, threshold: float | None):
    """The under-reporting signal over the scope (services/reporting/patterns.py)."""
    return patterns.reporting_patterns(
        scope.period_from, scope.period_to, by_quarter, LOCAL_AUTHORITIES, patterns.load_caseload(),
        threshold if threshold is not None else get_settings().under_reporting_p_value,
    )


def report_scope(period_from, period_to, now, as_of, basis) -> repository.Scope:
    as_at, _ = period_state(period_to, _moment(now, as_of))
    return repository.Scope(period_from, period_to, as_of, basis, as_at)


def known(now: dt.datetime, as_of: dt.datetime | None, basis: str) -> dict:
    """What a report says about its knowledge: as of when, on which basis, and when it was made."""
    return {"generated_at": now.isoformat(), "as_of": (as_of or now).isoformat(), "basis": basis}


async def compute_quarterly(
    pool: asyncpg.Pool, year: int, quarter: int, now: dt.datetime | None = None,
    as_of: dt.datetime | None = None, basis: repository.Basis = "received", threshold: float | None = None,
) -> dict:
    period_from, period_to = quarter_period(year, quarter)
    async with _one_snapshot(pool, 3) as (first, second, third):
        now = now or await repository.database_now(first)
        scope = report_scope(period_from, period_to, now, as_of, basis)
        notifications, reviews, quarter_counts = await asyncio.gather(
            repository.notification_counts(first, scope),
            repository.review_counts(second, scope),
            repository.quarter_counts(third, period_from, period_to, scope.as_at, as_of),
        )
        extra = _signals(scope, notifications, reviews, threshold)
        extra["categorisation_follow_up"] = follow_up_table(await repository.categorisation_follow_up(first, scope))
        report = quarterly_report(year, quarter, _moment(now, as_of), notifications, reviews, quarter_counts, extra)
        return report | known(now, as_of, basis)


async def compute_cases(
    pool: asyncpg.Pool, period_from: dt.date, period_to: dt.date, figure: str, value: str | None = None,
    local_authority: str | None = None, now: dt.datetime | None = None, as_of: dt.datetime | None = None,
    basis: repository.Basis = "received", limit: int | None = None,
) -> dict:
    """The cases behind one figure (or table row) of the national report of the same
    period, as of the same moment, on the same basis."""
    async with pool.acquire() as conn:
        now = now or await repository.database_now(conn)
        scope = report_scope(period_from, period_to, now, as_of, basis)
        count, listed = await repository.cases(conn, scope, figure, value, local_authority, limit)
    return {
        "figure": figure, "value": value, "local_authority": local_authority,
        "period": {"from": period_from.isoformat(), "to": period_to.isoformat()},
        **known(now, as_of, basis), "count": count, "cases": listed,
    }


async def compute_all_cases(
    pool: asyncpg.Pool, report: dict, local_authority: str | None, limit: int
) -> dict[str, dict]:
    """Every figure's and table row's cases for the HTML page's drill-down section, keyed
    as render.case_anchor keys them; each list cut at `limit` cases (the count says all)."""
    period = report["period"]
    period_from, period_to = dt.date.fromisoformat(period["from"]), dt.date.fromisoformat(period["to"])
    now = dt.datetime.fromisoformat(report["generated_at"])
    as_of = dt.datetime.fromisoformat(report["as_of"]) if report["as_of"] != report["generated_at"] else None
    wanted = [(f, None) for f in report["figures"] if f in repository.FIGURE_CASES]
    for name, table in report["tables"].items():
        if name in repository.TABLE_CASES:
            wanted += [(name, key) for key, row in zip(table.get("keys") or (), table["rows"]) if key is not None]
    listed = {}
    for figure, value in wanted:
        listed[case_anchor(figure, value)] = await compute_cases(
            pool, period_from, period_to, figure, value, local_authority, now, as_of, report["basis"], limit
        )
    return listed


def _respond(report: dict, fmt: Format, cases: dict | None = None) -> Response:
    body, media_type = render(report, fmt, cases)
    headers = {} if fmt == "json" else {"Content-Disposition": f'inline; filename="{filename(report, fmt)}"'}
    return Response(body, media_type=media_type, headers=headers)


_REPORT_RESPONSES = {
    200: {
        "description": "The report: JSON (docs/report.schema.json), CSV or a self-contained HTML page",
        "content": {"application/json": {}, "text/csv": {}, "text/html": {}},
    }
}
AsOf = Annotated[
    dt.datetime | None,
    Query(description="Only events the platform had recorded by this moment count (RFC 3339 with an offset;"
                      " default now): the report as known then"),
]
BasisQuery = Annotated[
    repository.Basis,
    Query(description="received: reviews and responses received in the period; cohort: those of the"
                      " notifications received in the period, whenever they came"),
]
# The HTML page lists at most this many cases under each figure (the API lists all).
HTML_CASES_PER_FIGURE = 200


def _aware(as_of: dt.datetime | None) -> dt.datetime | None:
    def refuse(reason: str):
        return HTTPException(422, [{"loc": ["query", "as_of"], "msg": reason, "type": "value_error"}])

    if as_of is None:
        return None
    if as_of.tzinfo is None:
        raise refuse("give the moment with its offset (e.g. Z)")
    # Nothing was recorded before the earliest date the platform takes (SPEC §4); a moment
    # centuries back is a mistake, and some are beyond what the calendar arithmetic handles.
    if as_of.date() < get_settings().earliest_date:
        raise refuse(f"as_of is before {get_settings().earliest_date}, the earliest date accepted")
    return as_of


def _period(period_from: dt.date, period_to: dt.date) -> None:
    if period_to < period_from:
        raise HTTPException(
            422, [{"loc": ["query", "to"], "msg": "the period ends before it starts", "type": "value_error"}]
        )


async def _with_cases(request: Request, principal: Principal, report: dict, fmt: Format) -> Response:
    """The report; an HTML page carries the cases behind each figure for a reader who may
    see them (the Inspectorate and admin every case, a council its own authority's)."""
    cases = None
    if fmt == "html" and principal.role in CASE_LIST_ROLES:
        scope = case_list_scope(principal, None)
        cases = await compute_all_cases(request.app.state.pool, report, scope, HTML_CASES_PER_FIGURE)
    return _respond(report, fmt, cases)


@router.get("/reports/national", response_class=Response, responses=_REPORT_RESPONSES)
async def national(
    request: Request,
    principal: Authorized,
    period_from: Annotated[dt.date, Query(alias="from", description="First day of the period (received on or after)")],
    period_to: Annotated[dt.date, Query(alias="to", description="Last day of the period (received on or before)")],
    format: Annotated[Format, Query(description="json, csv or html")] = "json",
    as_of: AsOf = None,
    basis: BasisQuery = "received",
) -> Response:
    """Every figure of SPEC §6 over the notifications, reviews and responses received in
    the period (dates in Scotland, both ends included)."""
    _period(period_from, period_to)
    report = await compute_national(request.app.state.pool, period_from, period_to, as_of=_aware(as_of), basis=basis,
                                    threshold=request.app.state.settings.under_reporting_p_value)
    return await _with_cases(request, principal, report, format)


@router.get("/reports/national/cases")
async def national_cases(
    request: Request,
    principal: Authorized,
    period_from: Annotated[dt.date, Query(alias="from", description="First day of the report's period")],
    period_to: Annotated[dt.date, Query(alias="to", description="Last day of the report's period")],
    figure: Annotated[str, Query(max_length=100, description="A figure's id, or a table's (then `value` names the row)")],
    value: Annotated[str | None, Query(max_length=100, description="A table row: the vocabulary value or authority slug")] = None,
    local_authority: Annotated[str | None, Query(max_length=100, description="Only this authority's cases")] = None,
    as_of: AsOf = None,
    basis: BasisQuery = "received",
) -> dict:
    """The cases behind one figure of the national report for the same period, as of and
    basis (its drill-down: case id, council reference, authority, dates and the value that
    put each case in the figure). The Inspectorate and admin; a council its own cases."""
    _period(period_from, period_to)
    scope = case_list_scope(principal, local_authority)
    try:
        return await compute_cases(
            request.app.state.pool, period_from, period_to, figure, value, scope, as_of=_aware(as_of), basis=basis
        )
    except repository.UnknownFigure as error:
        raise HTTPException(
            422, [{"loc": ["query", "value" if "value" in str(error).split(":")[0] else "figure"],
                   "msg": str(error), "type": "value_error"}]
        ) from None


@router.get("/reports/quarterly/{year}/{quarter}", response_class=Response, responses=_REPORT_RESPONSES)
async def quarterly(
    request: Request,
    principal: Authorized,
    year: Annotated[int, Path(ge=2000, le=2100)],
    quarter: Annotated[str, Path(pattern=r"^Q[1-4]$", description="Q1 (January to March) to Q4")],
    format: Annotated[Format, Query(description="json, csv or html")] = "json",
    as_of: AsOf = None,
    basis: BasisQuery = "received",
) -> Response:
    """The national figures for the quarter, plus open cases and overdue items at its end
    and deadlines breached within it, by local authority."""
    report = await compute_quarterly(request.app.state.pool, year, int(quarter[1]), as_of=_aware(as_of), basis=basis,
                                     threshold=request.app.state.settings.under_reporting_p_value)
    return await _with_cases(request, principal, report, format)


@router.get("/reports/reporting-patterns")
async def reporting_patterns(
    request: Request,
    _: Authorized,
    period_from: Annotated[dt.date, Query(alias="from", description="First day of the period")],
    period_to: Annotated[dt.date, Query(alias="to", description="Last day of the period")],
    as_of: AsOf = None,
) -> dict:
    """The under-reporting signal per local authority: notifications, calendar quarters
    of the period with none and the longest run of them, and where the caseload file
    (shared/reference/supervised_caseload.csv) gives the people under supervision, the rate
    per 1,000 supervised and a one-sided Poisson test against the national rate."""
    _period(period_from, period_to)
    pool = request.app.state.pool
    async with pool.acquire() as conn:
        now = await repository.database_now(conn)
        scope = report_scope(period_from, period_to, now, _aware(as_of), "received")
        by_quarter = await repository.notifications_by_quarter(conn, scope)
        national, found = patterns_of(scope, by_quarter, request.app.state.settings.under_reporting_p_value)
    return {
        "period": {"from": period_from.isoformat(), "to": period_to.isoformat()},
        **known(now, as_of, "received"),
        "test": "one-sided Poisson: P(X <= notifications) with X ~ Poisson(national rate x supervised person-years)",
        "national": national,
        "authorities": [
            p.__dict__ | {"name": LOCAL_AUTHORITIES[p.local_authority].name} for p in found
        ],
    }


@router.get("/reports/notifications-by-authority")
async def notifications_by_authority(
    request: Request, _: Authorized
) -> dict:
    """Notifications received so far, by local authority (all 32, zeros included)."""
    rows = await request.app.state.pool.fetch(
        f"SELECT local_authority, notifications FROM {repository.SCHEMA}.notifications_by_authority"
    )
    counted = {r["local_authority"]: r["notifications"] for r in rows}
    listed = [
        {"local_authority": slug, "name": la.name, "notifications": counted.get(slug, 0)}
        for slug, la in LOCAL_AUTHORITIES.items()
    ]
    return {
        "total": sum(r["notifications"] for r in listed),
        "authorities_notifying": sum(1 for r in listed if r["notifications"]),
        "by_local_authority": listed,
    }


@router.get("/vocabularies", tags=["reference"])
async def vocabularies(_: Authorized) -> dict:
    """Every vocabulary's values (and the deadline rules) with the labels the reports use
    (shared/reference/labels.json), in the vocabularies' order."""
    kinds = {**VOCABULARIES, "rule": typing.get_args(DeadlineRule)}
    return {kind: [{"value": v, "label": label(kind, v)} for v in values] for kind, values in kinds.items()}
