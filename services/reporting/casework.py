"""The casework view: open cases with the deadlines they owe, as each role may see them.

A query over reporting's one projection of each fact (no table of its own): the case
rows of `notifications` (their lifecycle state and SOG region as intake decided them,
carried by the events: services/reporting/domain.py `decide_case`) and the `deadlines`
(each one's due time and status: `decide_deadline`, `next_status`). The topics are read
by different consumers, so a case's deadlines may be seen before its notification; the
two tables are joined when read.

A deadline is *owed* while it is open, warned, or breached with no stop event yet
(a breach settled late carries `met_at` and is history, not casework). It is *overdue*
when it is owed and its due time has passed by the database's clock, or it is breached.
"""

from __future__ import annotations

import base64
import binascii
import datetime as dt
import uuid
from typing import Annotated, Literal

import asyncpg
from fastapi import APIRouter, HTTPException, Query, Request, Response
from pydantic import BaseModel

from services.reporting.repository import SCHEMA
from shared.events import LocalAuthoritySlug
from shared.lifecycle import State
from shared.policy import Authorized, list_scope

# --- reading ---------------------------------------------------------------------------

OPEN_STATES = tuple(s.value for s in State if s is not State.CLOSED)
_OWED = "(d.status IN ('open', 'warning') OR (d.status = 'breached' AND d.met_at IS NULL))"
_OVERDUE = "(d.status = 'breached' OR d.due_at < now())"
# Cases in order of their earliest owed due time (those owing nothing last), then id:
# the sort key is also the paging cursor.
_LIST_CASES = f"""
SELECT c.case_id, c.local_authority, c.state, c.received_at AS notified_at, c.sog_region, c.imported,
       owed.next_due, coalesce(owed.overdue, false) AS overdue, coalesce(owed.deadlines, '[]') AS deadlines
FROM {SCHEMA}.notifications c
LEFT JOIN LATERAL (
    SELECT min(d.due_at) AS next_due,
           bool_or({_OVERDUE}) AS overdue,
           jsonb_agg(jsonb_build_object(
               'rule', d.rule, 'started_at', d.started_at, 'due_at', d.due_at,
               'status', d.status, 'overdue', {_OVERDUE}) ORDER BY d.due_at, d.rule) AS deadlines
    FROM {SCHEMA}.deadlines d
    WHERE d.case_id = c.case_id AND {_OWED}
) owed ON true
WHERE ($1::text IS NULL OR c.local_authority = $1)
  AND ($2::text IS NULL OR c.sog_region = $2)
  AND c.state = ANY($3::text[])
  AND ($4::boolean IS NULL OR coalesce(owed.overdue, false) = $4)
  AND ($5::text IS NULL OR (coalesce(owed.next_due, 'infinity'), c.case_id) > ($5::text::timestamptz, $6::uuid))
  AND ($8::boolean IS NULL OR c.imported = $8)
ORDER BY coalesce(owed.next_due, 'infinity'), c.case_id
LIMIT $7
"""


async def list_cases(
    conn: asyncpg.Connection | asyncpg.Pool,
    *,
    local_authority: str | None = None,
    sog_region: str | None = None,
    states: tuple[str, ...] = OPEN_STATES,
    overdue: bool | None = None,
    limit: int = 100,
    after: tuple[dt.datetime | None, uuid.UUID] | None = None,
    imported: bool | None = None,
) -> list[asyncpg.Record]:
    """Cases that match every filter given, earliest owed due time first, from after the
    sort key `after` (next_due, case_id)."""
    after_due = after_id = None
    if after is not None:
        after_due = "infinity" if after[0] is None else after[0].isoformat()
        after_id = after[1]
    return await conn.fetch(
        _LIST_CASES, local_authority, sog_region, list(states), overdue, after_due, after_id, limit, imported
    )


def encode_cursor(row: asyncpg.Record) -> str:
    """An opaque `after` value: the sort key of the last case of a page."""
    due = "-" if row["next_due"] is None else row["next_due"].isoformat()
    return base64.urlsafe_b64encode(f"{due}|{row['case_id']}".encode()).decode().rstrip("=")


def decode_cursor(cursor: str) -> tuple[dt.datetime | None, uuid.UUID]:
    """The sort key in an `after` value; ValueError if it is not one this view gave."""
    try:
        text = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
        due, case_id = text.split("|")
        return (None if due == "-" else dt.datetime.fromisoformat(due)), uuid.UUID(case_id)
    except (binascii.Error, UnicodeDecodeError, ValueError) as error:
        raise ValueError("not a cursor from this view's Link header") from error


# --- HTTP ------------------------------------------------------------------------------


class DeadlineView(BaseModel):
    rule: str
    started_at: dt.datetime
    due_at: dt.datetime
    status: Literal["open", "warning", "breached"]
    overdue: bool


class CaseworkCase(BaseModel):
    case_id: uuid.UUID
    local_authority: str
    state: State
    notified_at: dt.datetime
    sog_region: str | None
    # The case came in imported history (`sir import`), not through the live API.
    imported: bool
    # Any of its deadlines overdue.
    overdue: bool
    # What it owes, earliest due first.
    deadlines: list[DeadlineView]


router = APIRouter(prefix="/v1", tags=["casework"])


@router.get("/cases", response_model=list[CaseworkCase])
async def get_cases(
    request: Request,
    response: Response,
    principal: Authorized,
    local_authority: Annotated[LocalAuthoritySlug | None, Query(description="Only this authority's cases")] = None,
    status: Annotated[
        list[State] | None,
        Query(description="Only cases in these lifecycle states (repeatable); default: every open state"),
    ] = None,
    overdue: Annotated[
        bool | None, Query(description="true: only cases with an overdue deadline; false: only those without")
    ] = None,
    source: Annotated[
        Literal["live", "imported"] | None,
        Query(description="live: only cases notified through the API; imported: only cases from imported history"),
    ] = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 100,
    after: Annotated[str | None, Query(description="The cursor of the next page, from the Link header")] = None,
) -> list[dict]:
    """Cases with their state and the deadlines they owe, earliest due first.

    Councils see their own authority's cases (asking for another's is 403), SOGs the
    cases routed to their region, the inspectorate and admins every case. When more
    cases follow, a `Link: <...>; rel="next"` header gives the next page.
    """
    scope_authority, scope_region = list_scope(principal, local_authority)
    try:
        cursor = None if after is None else decode_cursor(after)
    except ValueError as error:
        raise HTTPException(422, [{"loc": ["query", "after"], "msg": str(error), "type": "value_error"}]) from None
    rows = await list_cases(
        request.app.state.pool,
        local_authority=scope_authority,
        sog_region=scope_region,
        states=tuple(s.value for s in status) if status else OPEN_STATES,
        overdue=overdue,
        limit=limit + 1,
        after=cursor,
        imported=None if source is None else source == "imported",
    )
    if len(rows) > limit:
        rows = rows[:limit]
        following = request.url.include_query_params(after=encode_cursor(rows[-1]))
        response.headers["Link"] = f'<{following.path}?{following.query}>; rel="next"'
    return [
        {
            "case_id": r["case_id"],
            "local_authority": r["local_authority"],
            "state": r["state"],
            "notified_at": r["notified_at"],
            "sog_region": r["sog_region"],
            "imported": r["imported"],
            "overdue": r["overdue"],
            "deadlines": r["deadlines"],
        }
        for r in rows
    ]
