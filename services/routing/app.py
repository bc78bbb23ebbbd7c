"""Routing's wiring: every notification to the Scottish Government, and to the SOG where MAPPA applies."""

from pathlib import Path

from fastapi import FastAPI

from services.routing import handlers
from services.routing.api import router
from shared.messaging import CASE_EVENTS
from shared.service import Service, create_app
from shared.settings import Settings, get_settings

SERVICE = Service(
    name="routing",
    migrations=Path(__file__).parent / "migrations",
    description="Forwards every notification to the Scottish Government and, where MAPPA applies, the SOG.",
    routers=[router],
    consumes={CASE_EVENTS: handlers.on_case_event},
)


def build(settings: Settings | None = None) -> FastAPI:
    return create_app(SERVICE, settings or get_settings())
