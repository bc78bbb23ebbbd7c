"""A notification checked before it is sent: what intake would refuse (422, as
`POST /v1/notifications` would) and the categorisation warnings it would answer with,
with nothing stored. The console shows the warnings before a council submits."""

from __future__ import annotations

import uuid

from fastapi import APIRouter, Request
from fastapi.exceptions import RequestValidationError
from pydantic import BaseModel, ValidationError

from services.intake import repository
from services.intake.api import Warning
from services.intake.domain import new_event
from shared import categorisation
from shared.events import IncidentNotifiedData
from shared.policy import Authorized

router = APIRouter(prefix="/v1", tags=["cases"])


class Checked(BaseModel):
    warnings: list[Warning]


@router.post("/notifications/check", response_model=Checked)
async def check_notification(body: IncidentNotifiedData, request: Request, principal: Authorized) -> dict:
    """Check a notification as `POST /v1/notifications` would, storing nothing: 422 for what
    it would refuse (dates judged against now), else the categorisation warnings its 201
    answer would carry."""
    # shared/policy.py lets only councils call this route, and a council token has its authority.
    assert principal.local_authority is not None
    async with request.app.state.pool.acquire() as conn:
        now = await repository.now(conn)
    try:
        event = new_event(
            "incident.notified", case_id=uuid.uuid4(), local_authority=principal.local_authority,
            principal=principal, data=body, now=now,
        )
    except ValidationError as refusal:  # a date after the moment received: the body's field
        raise RequestValidationError(
            [error | {"loc": ("body", *error["loc"][1:])} for error in refusal.errors(include_url=False)]
        ) from None
    return {"warnings": categorisation.warnings(event.data, event.received_at)}
