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
)


def build(settings: Settings | None = None) -> FastAPI:
    return create_app(SERVICE, settings or get_settings())
