"""Routing's HTTP API for operators and the Inspectorate."""

from __future__ import annotations

import uuid
from typing import Annotated, Literal

from fastapi import APIRouter, Depends, Request

from services.routing import repository
from shared.auth import Principal, require_role

router = APIRouter(prefix="/v1", tags=["deliveries"])


@router.get("/deliveries")
async def list_deliveries(
    request: Request,
    _: Annotated[Principal, Depends(require_role("admin", "inspectorate"))],
    case_id: uuid.UUID | None = None,
    status: Literal["owed"] | None = None,
) -> list[dict]:
    return [dict(r) for r in await repository.deliveries(request.app.state.pool, case_id, status)]
