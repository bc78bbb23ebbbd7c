"""Routing's HTTP API for operators and the Inspectorate: deliveries and recipients."""

from __future__ import annotations

import datetime as dt
import os
import uuid
from typing import Literal

from fastapi import APIRouter, HTTPException, Request
from fastapi.exceptions import RequestValidationError
from pydantic import BaseModel

from services.routing import repository
from services.routing.domain import ALL_RECIPIENTS, RecipientConfig
from shared.policy import Authorized

router = APIRouter(prefix="/v1", tags=["deliveries"])

Status = Literal["pending", "delivered", "failed"]


class DeliveryView(BaseModel):
    id: uuid.UUID
    case_id: uuid.UUID
    recipient: str
    local_authority: str
    received_at: dt.datetime
    status: Status
    channel: str | None
    attempts: int
    next_attempt_at: dt.datetime | None
    last_error: str | None
    delivered_at: dt.datetime | None
    failed_at: dt.datetime | None
    created_at: dt.datetime


class RecipientView(RecipientConfig):
    recipient: str
    # Whether this process finds the webhook's secret in its environment (never the secret).
    secret_set: bool
    updated_at: dt.datetime
    updated_by: str


@router.get("/deliveries")
async def list_deliveries(
    request: Request,
    _: Authorized,
    case_id: uuid.UUID | None = None,
    status: Status | None = None,
) -> list[DeliveryView]:
    rows = await repository.deliveries(request.app.state.pool, case_id, status)
    return [DeliveryView(**dict(r)) for r in rows]


@router.post("/deliveries/{delivery_id}/retry")
async def retry_delivery(
    request: Request,
    delivery_id: uuid.UUID,
    _: Authorized,
) -> DeliveryView:
    """Try a failed (or waiting) delivery again now, with a new retry budget."""
    async with request.app.state.pool.acquire() as conn, conn.transaction():
        row = await repository.retry(conn, delivery_id)
        if row is None:
            existing = await repository.delivery(conn, delivery_id)
            if existing is None:
                raise HTTPException(404, f"no delivery {delivery_id}")
            raise HTTPException(409, f"delivery {delivery_id} is {existing['status']}: nothing to retry")
        await repository.wake_delivery_loop(conn)
    return DeliveryView(**dict(row))


@router.get("/recipients", tags=["recipients"])
async def list_recipients(
    request: Request,
    _: Authorized,
) -> list[RecipientView]:
    return [_view(row) for row in await repository.recipients(request.app.state.pool)]


@router.put("/recipients/{recipient}", tags=["recipients"])
async def set_recipient(
    request: Request,
    recipient: str,
    config: RecipientConfig,
    principal: Authorized,
) -> RecipientView:
    """Change a recipient's channel (and webhook settings); pending deliveries use it at
    their next attempt. Fields left out take their defaults."""
    if recipient not in ALL_RECIPIENTS:
        raise HTTPException(404, f"unknown recipient {recipient!r}; known: {', '.join(ALL_RECIPIENTS)}")
    try:
        config.check_transport(request.app.state.settings.routing_allow_http)
    except ValueError as error:
        raise RequestValidationError([{"loc": ("body", "url"), "msg": str(error), "type": "value_error"}]) from None
    row = await repository.set_recipient(request.app.state.pool, recipient, config, by=f"token:{principal.token_id}")
    return _view(row)


def _view(row) -> RecipientView:
    values = dict(row)
    return RecipientView(**values, secret_set=bool(values["secret_env"] and os.environ.get(values["secret_env"])))
