"""Deadlines' HTTP API."""

from __future__ import annotations

import uuid
from typing import Annotated

from fastapi import APIRouter, Depends, HTTPException, Request

from services.deadlines import repository
from shared.auth import Principal, require_role

router = APIRouter(prefix="/v1", tags=["deadlines"])


@router.get("/cases/{case_id}/deadlines")
async def case_deadlines(
    case_id: uuid.UUID,
    request: Request,
    principal: Annotated[Principal, Depends(require_role("inspectorate", "council"))],
) -> list[dict]:
    rows = await repository.deadlines_of(request.app.state.pool, case_id)
    if principal.role == "council" and any(r["local_authority"] != principal.local_authority for r in rows):
        raise HTTPException(403, f"case {case_id} belongs to another local authority")
    return [dict(r) for r in rows]
