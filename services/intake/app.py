"""Intake's wiring: the HTTP API, the event store and its outbox relay."""

from pathlib import Path

from fastapi import FastAPI

from services.intake import whoami
from services.intake.api import router
from shared.service import Service, create_app
from shared.settings import Settings, get_settings

SERVICE = Service(
    name="intake",
    migrations=Path(__file__).parent / "migrations",
    description="Councils, the Care Inspectorate and MAPPA SOGs post serious incident review events.",
    routers=[router, whoami.router],
    # Under load, one relay batch every 0.2 s rather than one every few tens of ms: a
    # batch's cost per row falls by half and more (shared/outbox.py LINGER_FROM_ROWS), and
    # a notification after a quiet spell is published at once (issue 15).
    relay_linger_seconds=0.2,
)


def build(settings: Settings | None = None) -> FastAPI:
    return create_app(SERVICE, settings or get_settings())
