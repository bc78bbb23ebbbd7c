"""The casework view: open cases with the deadlines they owe, as each role may see them.

Its projection is fed from two topics. Case events are folded with `shared.lifecycle`
(the state machine intake runs), which also derives the SOG region a MAPPA case is
routed to. Deadline events (`sir.deadlines.v1`) keep each deadline's due time and
status. The topics are read by different consumers, so a case's deadlines may be seen
before its notification; the two tables are joined when read.

A deadline is *owed* while it is open, warned, or breached with no stop event yet
(a breach settled late carries `met_at` and is history, not casework). It is *overdue*
when it is owed and its due time has passed by the database's clock, or it is breached.
"""

from __future__ import annotations

import base64
import binascii
import datetime as dt
import logging
import uuid
from collections.abc import Mapping
from typing import Annotated, Any, Literal

import asyncpg
from fastapi import APIRouter, HTTPException, Query, Request, Response
from pydantic import BaseModel

from services.reporting.repository import SCHEMA
from shared.events import Envelope, LocalAuthoritySlug
from shared.lifecycle import POSTED_BY, Case, Refused, State, apply
from shared.policy import Authorized, list_scope

log = logging.getLogger(__name__)

# --- the projection --------------------------------------------------------------------

DEADLINE_STATUS = {
    "deadline.opened": "open",
    "deadline.warning": "warning",
    "deadline.breached": "breached",
    "deadline.met": "met",
    "deadline.cancelled": "cancelled",
}
# Events of one case arrive in order (one partition), but a later status never gives way
# to an earlier one: a warning after a breach, or anything after met or cancelled.
_STATUS_RANK = {"open": 0, "warning": 1, "breached": 2, "met": 3, "cancelled": 3}


def next_status(current: str | None, event_type: str) -> str:
    """The deadline's status after `event_type`, given its status so far (None: unseen)."""
    new = DEADLINE_STATUS[event_type]
    if current is None or _STATUS_RANK[new] > _STATUS_RANK[current]:
        return new
    return current


async def on_case_event(conn: asyncpg.Connection, event: Envelope, imported: bool = False) -> None:
    """Fold one case event into the case's row; `imported`: the notification came in
    imported history (the case is marked so for good)."""
    if event.event_type not in POSTED_BY:
        return
    row = await conn.fetchrow(
        f"SELECT local_authority, state, sog_region, responded, closed_reason"
        f" FROM {SCHEMA}.casework_cases WHERE case_id = $1 FOR UPDATE",
        event.case_id,
    )
    case = None if row is None else Case(
        row["local_authority"], State(row["state"]), row["sog_region"], row["responded"], row["closed_reason"]
    )
    try:
        case = apply(case, event.event_type, event.local_authority, event.data.model_dump(mode="json"))
    except Refused as refusal:
        # Intake applied the same rules before storing the event, so this means the two
        # disagree (a rule changed since). The view keeps the state it had, and the
        # other projections fed by the same handler are not held up.
        log.warning("casework: event %s (%s) of case %s does not fit: %s",
                    event.event_id, event.event_type, event.case_id, refusal)
        return
    if row is None:
        await conn.execute(
            f"INSERT INTO {SCHEMA}.casework_cases"
            " (case_id, local_authority, state, sog_region, responded, closed_reason, notified_at, imported)"
            " VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
            event.case_id, case.local_authority, case.state.value, case.sog_region,
            case.responded, case.closed_reason, event.received_at, imported,
        )
    else:
        await conn.execute(
            f"UPDATE {SCHEMA}.casework_cases SET state = $2, responded = $3, closed_reason = $4 WHERE case_id = $1",
            event.case_id, case.state.value, case.responded, case.closed_reason,
        )


DEADLINE_COLUMNS = ("case_id", "rule", "started_at", "due_at", "status", "met_at", "breached_at", "working_days_late")


def deadline_row(current: Mapping[str, Any] | None, event: Envelope) -> dict[str, Any]:
    """The `casework_deadlines` row after a deadline event, given the row so far (None:
    unseen); `sir report rebuild` folds the same function."""
    data, old = event.data, current or {}
    return {
        "case_id": event.case_id, "rule": data.rule, "started_at": data.started_at, "due_at": data.due_at,
        "status": next_status(old.get("status"), event.event_type),
        "met_at": data.met_at or old.get("met_at"),
        "breached_at": data.breached_at or old.get("breached_at"),
        "working_days_late": data.working_days_late if data.working_days_late is not None
        else old.get("working_days_late"),
    }


async def on_deadline_event(conn: asyncpg.Connection, event: Envelope) -> None:
    """Record one deadline event against the deadline it names (case, rule, started_at)."""
    if event.event_type not in DEADLINE_STATUS:
        return
    current = await conn.fetchrow(
        f"SELECT * FROM {SCHEMA}.casework_deadlines WHERE case_id = $1 AND rule = $2 AND started_at = $3 FOR UPDATE",
        event.case_id, event.data.rule, event.data.started_at,
    )
    row = deadline_row(current, event)
    await conn.execute(
        f"INSERT INTO {SCHEMA}.casework_deadlines ({', '.join(DEADLINE_COLUMNS)})"
        " VALUES ($1, $2, $3, $4, $5, $6, $7, $8)"
        " ON CONFLICT (case_id, rule, started_at) DO UPDATE SET due_at = EXCLUDED.due_at, status = EXCLUDED.status,"
        " met_at = EXCLUDED.met_at, breached_at = EXCLUDED.breached_at, working_days_late = EXCLUDED.working_days_late",
        *(row[column] for column in DEADLINE_COLUMNS),
    )


# --- reading ---------------------------------------------------------------------------

OPEN_STATES = tuple(s.value for s in State if s is not State.CLOSED)
_OWED = "(d.status IN ('open', 'warning') OR (d.status = 'breached' AND d.met_at IS NULL))"
_OVERDUE = "(d.status = 'breached' OR d.due_at < now())"
# Cases in order of their earliest owed due time (those owing nothing last), then id:
# the sort key is also the paging cursor.
_LIST_CASES = f"""
SELECT c.case_id, c.local_authority, c.state, c.notified_at, c.sog_region, c.imported,
       owed.next_due, coalesce(owed.overdue, false) AS overdue, coalesce(owed.deadlines, '[]') AS deadlines
FROM {SCHEMA}.casework_cases c
LEFT JOIN LATERAL (
    SELECT min(d.due_at) AS next_due,
           bool_or({_OVERDUE}) AS overdue,
           jsonb_agg(jsonb_build_object(
               'rule', d.rule, 'started_at', d.started_at, 'due_at', d.due_at,
               'status', d.status, 'overdue', {_OVERDUE}) ORDER BY d.due_at, d.rule) AS deadlines
    FROM {SCHEMA}.casework_deadlines d
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
