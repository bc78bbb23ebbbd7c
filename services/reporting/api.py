"""Reporting's HTTP API."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Request

from services.reporting import repository
from services.reporting.domain import counts_by_authority
from shared.auth import Principal, current_principal

router = APIRouter(prefix="/v1", tags=["reports"])


@router.get("/reports/notifications-by-authority")
async def notifications_by_authority(
    request: Request, _: Annotated[Principal, Depends(current_principal)]
) -> dict:
    """Notifications received so far, by local authority (all 32, zeros included)."""
    rows = counts_by_authority(await repository.notification_counts(request.app.state.pool))
    return {
        "total": sum(r["notifications"] for r in rows),
        "authorities_notifying": sum(1 for r in rows if r["notifications"]),
        "by_local_authority": rows,
    }
