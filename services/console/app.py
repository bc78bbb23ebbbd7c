"""The console's wiring: pages, local assets, sessions, and the API client.

Unlike the other four services it has no database schema, no topics and no outbox: it
holds no case data, only sessions, and calls the APIs with each user's token.
"""

from __future__ import annotations

import datetime as dt
import logging
from contextlib import asynccontextmanager
from pathlib import Path

import httpx
from fastapi import FastAPI
from fastapi.staticfiles import StaticFiles

from services.console import pages
from services.console.client import Api
from services.console.sessions import Sessions
from shared.assets import DESIGN_SYSTEM
from shared.settings import Settings, get_settings

log = logging.getLogger(__name__)
HERE = Path(__file__).parent


def build(settings: Settings | None = None, transports: dict[str, httpx.AsyncBaseTransport] | None = None) -> FastAPI:
    """The console app. `transports` (tests) reaches services running in-process."""
    settings = settings or get_settings()

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        if not (DESIGN_SYSTEM / "css").is_dir():
            log.warning("the design system is not installed at %s: run `npm ci`", DESIGN_SYSTEM)
        try:
            yield
        finally:
            await app.state.api.close()

    app = FastAPI(title="SIR console", docs_url=None, redoc_url=None, openapi_url=None, lifespan=lifespan)
    app.state.settings = settings
    app.state.api = Api(settings, transports)
    app.state.sessions = Sessions(
        idle=dt.timedelta(minutes=settings.console_idle_minutes),
        lifetime=dt.timedelta(hours=settings.console_session_hours),
    )
    app.mount("/assets/ds", StaticFiles(directory=DESIGN_SYSTEM, check_dir=False), name="design-system")
    app.mount("/assets/console", StaticFiles(directory=HERE / "static"), name="console-assets")
    pages.install(app)
    return app
