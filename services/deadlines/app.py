"""Deadlines' wiring: watches every timescale of the guidance (rules.toml)."""

from dataclasses import replace
from pathlib import Path

import asyncpg
from fastapi import FastAPI

from services.deadlines import handlers, repository
from services.deadlines.api import router
from services.deadlines.domain import RULE_NAMES
from services.deadlines.scheduler import Scheduler
from shared.metrics import DEADLINES_OPEN
from shared.service import Service, create_app
from shared.settings import Settings, get_settings


async def refresh_metrics(pool: asyncpg.Pool) -> None:
    counts = await repository.open_by_rule(pool)
    for rule in RULE_NAMES:
        DEADLINES_OPEN.labels(rule).set(counts.get(rule, 0))


SERVICE = Service(
    name="deadlines",
    migrations=Path(__file__).parent / "migrations",
    description="Deadlines of the serious incident review process: what is due, met and breached.",
    routers=[router],
    consumes=handlers.consumes(get_settings()),
    refresh_metrics=refresh_metrics,
    workers=[Scheduler().run],
)


def build(settings: Settings | None = None) -> FastAPI:
    settings = settings or get_settings()
    return create_app(replace(SERVICE, consumes=handlers.consumes(settings)), settings)
