"""Deadlines' HTTP API: what is due, met and late, by case or across cases.

Who may read what is shared/policy.py's (SPEC §1): a council only its own authority's
deadlines, a SOG only those of cases routed to its region, the inspectorate and admin
everything. A refusal is a 403 that says why; a bad filter a 422 naming it.
"""

from __future__ import annotations

import datetime as dt
import uuid
from typing import Annotated, Literal

from fastapi import APIRouter, HTTPException, Query, Request
from pydantic import BaseModel

from services.deadlines import repository
from services.deadlines.domain import RULES
from shared.events import DeadlineRule, LocalAuthoritySlug
from shared.policy import Authorized, check_may_read_case, list_scope

router = APIRouter(prefix="/v1", tags=["deadlines"])
Status = Literal["open", "met", "breached", "cancelled"]


class Deadline(BaseModel):
    case_id: uuid.UUID
    local_authority: str
    rule: DeadlineRule
    sequence: int
    owner: Literal["council", "inspectorate"]
    limit: str
    status: Status
    watched: bool  # false: history, settled by its events only, never warned or breached
    started_at: dt.datetime
    due_at: dt.datetime
    warn_at: dt.datetime | None
    warned_at: dt.datetime | None
    breached_at: dt.datetime | None
    met_at: dt.datetime | None
    cancelled_at: dt.datetime | None
    working_days_late: int | None


class CaseDeadlines(BaseModel):
    case_id: uuid.UUID
    local_authority: str
    deadlines: list[Deadline]


class DeadlinePage(BaseModel):
    deadlines: list[Deadline]
    # Pass as `offset` for the next page; null on the last one.
    next_offset: int | None


def _deadline(row) -> Deadline:
    rule = RULES[row["rule"]]
    return Deadline(**{k: row[k] for k in Deadline.model_fields if k not in ("owner", "limit")},
                    owner=rule.owner, limit=rule.limit)


@router.get("/cases/{case_id}/deadlines", response_model=CaseDeadlines)
async def case_deadlines(case_id: uuid.UUID, request: Request, principal: Authorized) -> CaseDeadlines:
    pool = request.app.state.pool
    case = await repository.case_of(pool, case_id)
    if case is None:
        raise HTTPException(404, f"no case {case_id} is known to the deadlines service")
    check_may_read_case(principal, case_id, case["local_authority"], case["sog_region"])
    rows = await repository.deadlines_of(pool, case_id)
    return CaseDeadlines(case_id=case_id, local_authority=case["local_authority"], deadlines=[_deadline(r) for r in rows])


@router.get("/deadlines", response_model=DeadlinePage)
async def search_deadlines(
    request: Request,
    principal: Authorized,
    status: Status | None = None,
    rule: DeadlineRule | None = None,
    local_authority: LocalAuthoritySlug | None = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    # Bounded: a number beyond the database's bigint is a 422, not a server error.
    offset: Annotated[int, Query(ge=0, le=1_000_000_000)] = 0,
) -> DeadlinePage:
    """Deadlines by due time, filtered. A council sees its own authority's (asking for
    another's is refused); a SOG those of the cases routed to its region."""
    local_authority, sog_region = list_scope(principal, local_authority)
    rows = await repository.search(
        request.app.state.pool, status=status, rule=rule, local_authority=local_authority,
        sog_region=sog_region, limit=limit + 1, offset=offset,
    )
    return DeadlinePage(
        deadlines=[_deadline(r) for r in rows[:limit]],
        next_offset=offset + limit if len(rows) > limit else None,
    )
