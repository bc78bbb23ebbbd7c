"""Deadlines' wiring: watches every timescale of the guidance."""

from pathlib import Path

from fastapi import FastAPI

from services.deadlines import handlers
from services.deadlines.api import router
from shared.messaging import CASE_EVENTS
from shared.service import Service, create_app
from shared.settings import Settings, get_settings

SERVICE = Service(
    name="deadlines",
    migrations=Path(__file__).parent / "migrations",
    description="Deadlines of the serious incident review process: what is due, met and breached.",
    routers=[router],
    consumes={CASE_EVENTS: handlers.on_case_event},
)


def build(settings: Settings | None = None) -> FastAPI:
    return create_app(SERVICE, settings or get_settings())
