"""Routing's wiring: every notification to the Scottish Government, and to the SOG where MAPPA applies."""

from pathlib import Path

import asyncpg
from fastapi import FastAPI

from services.routing import handlers, repository
from services.routing.api import router
from services.routing.delivery import delivery_loop
from services.routing.domain import ALL_RECIPIENTS
from shared.messaging import CASE_EVENTS
from shared.metrics import DELIVERIES_PENDING
from shared.service import Service, create_app
from shared.settings import Settings, get_settings


async def refresh_metrics(pool: asyncpg.Pool) -> None:
    pending = await repository.pending_by_recipient(pool)
    for recipient in ALL_RECIPIENTS:
        DELIVERIES_PENDING.labels(recipient).set(pending.get(recipient, 0))


SERVICE = Service(
    name="routing",
    migrations=Path(__file__).parent / "migrations",
    description="Forwards every notification to the Scottish Government and, where MAPPA applies, the SOG: "
    "on an outbound topic or to a signed webhook, retried, recorded once on sir.routing.v1.",
    routers=[router],
    consumes={CASE_EVENTS: handlers.PROCESS},
    refresh_metrics=refresh_metrics,
    workers=[delivery_loop],
)


def build(settings: Settings | None = None) -> FastAPI:
    settings = settings or get_settings()
    app = create_app(SERVICE, settings)
    app.state.settings = settings  # the API checks webhook URLs against routing_allow_http
    return app
