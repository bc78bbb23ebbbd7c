"""Reporting's HTTP API: the national report for any period, the quarterly report, as
JSON, CSV or HTML (docs/reports.md)."""

from __future__ import annotations

import datetime as dt
import typing
from typing import Annotated, Any, Literal

from fastapi import APIRouter, HTTPException, Path, Query, Request, Response

from services.reporting import repository
from services.reporting.queries import (
    compute_all_cases,
    compute_cases,
    compute_national,
    compute_notifications_by_authority,
    compute_quarterly,
    compute_reporting_patterns,
)
from services.reporting.render import filename, render
from shared.auth import Principal
from shared.events import DeadlineRule
from shared.policy import CASE_LIST_ROLES, Authorized, case_list_scope
from shared.reference import VOCABULARIES, label
from shared.settings import get_settings

router = APIRouter(prefix="/v1", tags=["reports"])

Format = Literal["json", "csv", "html"]


def _respond(report: dict, fmt: Format, cases: dict | None = None) -> Response:
    body, media_type = render(report, fmt, cases)
    headers = {} if fmt == "json" else {"Content-Disposition": f'inline; filename="{filename(report, fmt)}"'}
    return Response(body, media_type=media_type, headers=headers)


_REPORT_RESPONSES: dict[int | str, dict[str, Any]] = {
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
    return await compute_reporting_patterns(
        request.app.state.pool, period_from, period_to, _aware(as_of), request.app.state.settings.under_reporting_p_value
    )


@router.get("/reports/notifications-by-authority")
async def notifications_by_authority(
    request: Request, _: Authorized
) -> dict:
    """Notifications received so far, by local authority (all 32, zeros included)."""
    return await compute_notifications_by_authority(request.app.state.pool)


@router.get("/vocabularies", tags=["reference"])
async def vocabularies(_: Authorized) -> dict:
    """Every vocabulary's values (and the deadline rules) with the labels the reports use
    (shared/reference/labels.json), in the vocabularies' order."""
    kinds = {**VOCABULARIES, "rule": typing.get_args(DeadlineRule)}
    return {kind: [{"value": v, "label": label(kind, v)} for v in values] for kind, values in kinds.items()}
