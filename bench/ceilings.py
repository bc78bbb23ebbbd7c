"""Ceilings: the simplest code doing each hot path's I/O, measured in the same run as the
platform's own figure (issue 15). Absolute figures drift between days on a shared
machine; the ratio of a path's figure to its ceiling measured minutes apart does not.

- `bare_intake_app`  intake's HTTP ceiling: FastAPI + pydantic (the notification's own
                     body model) + one asyncpg transaction inserting an event row and an
                     outbox row, served by the same uvicorn as intake (bench/intake.py).
"""

from __future__ import annotations

import json
import os
import uuid
from contextlib import asynccontextmanager

import asyncpg
from fastapi import FastAPI, Request

from shared.events import IncidentNotifiedData

# The tables of the bare intake: an event row (like intake.events) and an outbox row.
BARE_INTAKE_SCHEMA = (
    "CREATE TABLE IF NOT EXISTS bench_bare_events (position bigserial PRIMARY KEY, event_id uuid NOT NULL UNIQUE,"
    " case_id uuid NOT NULL, event_type text NOT NULL, local_authority text NOT NULL,"
    " received_at timestamptz NOT NULL DEFAULT now(), envelope jsonb NOT NULL);"
    " CREATE TABLE IF NOT EXISTS bench_bare_outbox (position bigserial PRIMARY KEY, event_id uuid NOT NULL,"
    " topic text NOT NULL, value bytea NOT NULL)"
)


def bare_intake_app() -> FastAPI:
    """The ceiling of `POST /v1/notifications` (a uvicorn factory: `BENCH_DATABASE_URL`
    names the database; a pool of 10 connections, as a service's)."""
    database_url = os.environ["BENCH_DATABASE_URL"]

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        app.state.pool = await asyncpg.create_pool(database_url, min_size=1, max_size=10)
        await app.state.pool.execute(BARE_INTAKE_SCHEMA)
        try:
            yield
        finally:
            await app.state.pool.close()

    app = FastAPI(lifespan=lifespan, docs_url=None, redoc_url=None, openapi_url=None)

    @app.post("/v1/notifications", status_code=201)
    async def notify(body: IncidentNotifiedData, request: Request) -> dict:
        case_id, event_id = uuid.uuid4(), uuid.uuid4()
        envelope = json.dumps({"event_id": str(event_id), "case_id": str(case_id), "data": body.model_dump(mode="json")})
        async with request.app.state.pool.acquire() as conn, conn.transaction():
            await conn.execute(
                "INSERT INTO bench_bare_events (event_id, case_id, event_type, local_authority, envelope)"
                " VALUES ($1, $2, 'incident.notified', 'glasgow-city', $3::jsonb)",
                event_id, case_id, envelope,
            )
            await conn.execute(
                "INSERT INTO bench_bare_outbox (event_id, topic, value) VALUES ($1, 'sir.case-events.v1', $2)",
                event_id, envelope.encode(),
            )
        return {"case_id": str(case_id), "event_id": str(event_id)}

    return app
