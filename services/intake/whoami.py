"""Who a token is: the console signs a person in by asking this once."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends
from pydantic import BaseModel

from shared.auth import Principal, current_principal

router = APIRouter(prefix="/v1", tags=["identity"])


class Identity(BaseModel):
    token_id: str
    role: str
    local_authority: str | None
    region: str | None


@router.get("/whoami", response_model=Identity)
async def whoami(principal: Annotated[Principal, Depends(current_principal)]) -> Identity:
    """The role and scope of the bearer token (401 when it is unknown or revoked)."""
    return Identity(
        token_id=principal.token_id, role=principal.role,
        local_authority=principal.local_authority, region=principal.region,
    )
