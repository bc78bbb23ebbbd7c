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

from services.reporting import repository
from services.reporting.domain import national_report, period_state, quarter_period, quarterly_report
from services.reporting.render import filename, render
from shared.events import DeadlineRule
from shared.policy import Authorized
from shared.reference import LOCAL_AUTHORITIES, VOCABULARIES, label

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


async def compute_national(
    pool: asyncpg.Pool, period_from: dt.date, period_to: dt.date, now: dt.datetime | None = None
) -> dict:
    """The national report over the projections, read in one snapshot, as at `now` (the
    database clock unless a test or command gives one): a running period is never counted beyond it."""
    async with _one_snapshot(pool, 2) as (first, second):
        now = now or await repository.database_now(first)
        as_at, _ = period_state(period_to, now)
        notifications, reviews = await asyncio.gather(
            repository.notification_counts(first, period_from, period_to, as_at),
            repository.review_counts(second, period_from, period_to),
        )
        return national_report(period_from, period_to, now, notifications, reviews)


async def compute_quarterly(pool: asyncpg.Pool, year: int, quarter: int, now: dt.datetime | None = None) -> dict:
    period_from, period_to = quarter_period(year, quarter)
    async with _one_snapshot(pool, 3) as (first, second, third):
        now = now or await repository.database_now(first)
        as_at, _ = period_state(period_to, now)
        notifications, reviews, quarter_counts = await asyncio.gather(
            repository.notification_counts(first, period_from, period_to, as_at),
            repository.review_counts(second, period_from, period_to),
            repository.quarter_counts(third, period_from, period_to, as_at),
        )
        return quarterly_report(year, quarter, now, notifications, reviews, quarter_counts)


def _respond(report: dict, fmt: Format) -> Response:
    body, media_type = render(report, fmt)
    headers = {} if fmt == "json" else {"Content-Disposition": f'inline; filename="{filename(report, fmt)}"'}
    return Response(body, media_type=media_type, headers=headers)


_REPORT_RESPONSES = {
    200: {
        "description": "The report: JSON (docs/report.schema.json), CSV or a self-contained HTML page",
        "content": {"application/json": {}, "text/csv": {}, "text/html": {}},
    }
}


@router.get("/reports/national", response_class=Response, responses=_REPORT_RESPONSES)
async def national(
    request: Request,
    _: Authorized,
    period_from: Annotated[dt.date, Query(alias="from", description="First day of the period (received on or after)")],
    period_to: Annotated[dt.date, Query(alias="to", description="Last day of the period (received on or before)")],
    format: Annotated[Format, Query(description="json, csv or html")] = "json",
) -> Response:
    """Every figure of SPEC §6 over the notifications, reviews and responses received in
    the period (dates in Scotland, both ends included)."""
    if period_to < period_from:
        raise HTTPException(
            422, [{"loc": ["query", "to"], "msg": "the period ends before it starts", "type": "value_error"}]
        )
    return _respond(await compute_national(request.app.state.pool, period_from, period_to), format)


@router.get("/reports/quarterly/{year}/{quarter}", response_class=Response, responses=_REPORT_RESPONSES)
async def quarterly(
    request: Request,
    _: Authorized,
    year: Annotated[int, Path(ge=2000, le=2100)],
    quarter: Annotated[str, Path(pattern=r"^Q[1-4]$", description="Q1 (January to March) to Q4")],
    format: Annotated[Format, Query(description="json, csv or html")] = "json",
) -> Response:
    """The national figures for the quarter, plus open cases and overdue items at its end
    and deadlines breached within it, by local authority."""
    return _respond(await compute_quarterly(request.app.state.pool, year, int(quarter[1])), format)


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
