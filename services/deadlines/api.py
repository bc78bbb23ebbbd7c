"""Deadlines' HTTP API: what is due, met and late, by case or across cases.

Who may read what (SPEC §1): a council only its own authority's deadlines, a SOG only
those of cases routed to its region, the inspectorate and admin everything. A refusal
is a 403 that says why; a bad filter a 422 naming it.
"""

from __future__ import annotations

import datetime as dt
import uuid
from typing import Annotated, Literal

from fastapi import APIRouter, Depends, HTTPException, Query, Request
from pydantic import BaseModel

from services.deadlines import repository
from services.deadlines.domain import RULES
from shared.auth import Principal, require_role
from shared.events import DeadlineRule, LocalAuthoritySlug

router = APIRouter(prefix="/v1", tags=["deadlines"])
Reader = Annotated[Principal, Depends(require_role("council", "sog", "inspectorate", "admin"))]
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
async def case_deadlines(case_id: uuid.UUID, request: Request, principal: Reader) -> CaseDeadlines:
    pool = request.app.state.pool
    case = await repository.case_of(pool, case_id)
    if case is None:
        raise HTTPException(404, f"no case {case_id} is known to the deadlines service")
    if principal.role == "council" and case["local_authority"] != principal.local_authority:
        raise HTTPException(403, f"case {case_id} belongs to another local authority")
    if principal.role == "sog" and case["sog_region"] != principal.region:
        raise HTTPException(403, f"case {case_id} is not routed to the {principal.region} SOG")
    rows = await repository.deadlines_of(pool, case_id)
    return CaseDeadlines(case_id=case_id, local_authority=case["local_authority"], deadlines=[_deadline(r) for r in rows])


@router.get("/deadlines", response_model=DeadlinePage)
async def search_deadlines(
    request: Request,
    principal: Reader,
    status: Status | None = None,
    rule: DeadlineRule | None = None,
    local_authority: LocalAuthoritySlug | None = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    offset: Annotated[int, Query(ge=0)] = 0,
) -> DeadlinePage:
    """Deadlines by due time, filtered. A council sees its own authority's (asking for
    another's is refused); a SOG those of the cases routed to its region."""
    if principal.role == "council":
        if local_authority not in (None, principal.local_authority):
            raise HTTPException(403, f"a {principal.local_authority} token may not read {local_authority}'s deadlines")
        local_authority = principal.local_authority
    rows = await repository.search(
        request.app.state.pool, status=status, rule=rule, local_authority=local_authority,
        sog_region=principal.region if principal.role == "sog" else None, limit=limit + 1, offset=offset,
    )
    return DeadlinePage(
        deadlines=[_deadline(r) for r in rows[:limit]],
        next_offset=offset + limit if len(rows) > limit else None,
    )
