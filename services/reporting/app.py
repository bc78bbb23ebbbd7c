"""Reporting's wiring: projections rebuilt from the topics, and the reports over them."""

from pathlib import Path

from fastapi import FastAPI

from services.reporting import casework, handlers
from services.reporting.api import router
from shared.messaging import CASE_EVENTS, DEADLINE_EVENTS, ROUTING_EVENTS
from shared.service import Service, create_app
from shared.settings import Settings, get_settings

SERVICE = Service(
    name="reporting",
    migrations=Path(__file__).parent / "migrations",
    description="National and quarterly figures of the serious incident review process, from the events.",
    routers=[router, casework.router],
    consumes={
        CASE_EVENTS: handlers.CASES,
        ROUTING_EVENTS: handlers.FORWARDS,
        DEADLINE_EVENTS: handlers.DEADLINES,
    },
)


def build(settings: Settings | None = None) -> FastAPI:
    return create_app(SERVICE, settings or get_settings())
