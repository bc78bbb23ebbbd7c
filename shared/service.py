"""What every service has, wired one way: a FastAPI app whose lifespan opens the pool,
migrates the schemas, starts the Kafka subscribers and the outbox relay; `/healthz`,
`/readyz`, `/metrics` and HTTP metrics.
"""

from __future__ import annotations

import asyncio
import logging
import time
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import AsyncIterator, Awaitable, Callable

import asyncpg
from fastapi import APIRouter, FastAPI, Request, Response
from faststream.kafka import KafkaBroker
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from shared.assets import serve_docs_locally
from shared.consumer import Handler, subscribe_idempotent
from shared.db import COMMON, create_pool, migrate, migrate_auth
from shared.messaging import all_topics, ensure_topics, new_broker
from shared.metrics import HTTP_REQUESTS, HTTP_SECONDS, OUTBOX_BACKLOG, OUTBOX_OLDEST_AGE, SERVICE_READY
from shared.outbox import OutboxRelay, backlog
from shared.settings import Settings

log = logging.getLogger(__name__)

Worker = Callable[[asyncpg.Pool, Settings], Awaitable[None]]


@dataclass
class Service:
    name: str
    migrations: Path
    description: str
    routers: list[APIRouter] = field(default_factory=list)
    # topic -> handler, each applied once per event in the service's consumer group
    consumes: dict[str, Handler] = field(default_factory=dict)
    # Sets the service's gauges from its tables at each scrape of /metrics.
    refresh_metrics: Callable[[asyncpg.Pool], Awaitable[None]] | None = None
    # Long-running tasks (a scheduler, a delivery loop) started after the subscribers,
    # each given the pool and the settings, cancelled at shutdown.
    workers: list[Worker] = field(default_factory=list)

    @property
    def group_id(self) -> str:
        return f"sir-{self.name}"


def create_app(service: Service, settings: Settings) -> FastAPI:
    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        pool = await create_pool(settings.database_url)
        app.state.pool = pool
        await migrate_auth(pool)
        await migrate(pool, service.name, COMMON, service.migrations)
        app.state.migrated = True
        broker = app.state.broker
        await _wait_for_broker(settings)
        await broker.start()
        relay = OutboxRelay(
            pool,
            service.name,
            settings.kafka_bootstrap,
            poll_seconds=settings.outbox_poll_seconds,
            partitions=settings.kafka_partitions,
        )
        await relay.start()
        app.state.relay = relay
        app.state.workers = [_start_worker(service.name, work, pool, settings) for work in service.workers]
        app.state.started = True
        log.info("%s started", service.name)
        try:
            yield
        finally:
            app.state.started = False
            for task in app.state.workers:
                task.cancel()
            await asyncio.gather(*app.state.workers, return_exceptions=True)
            await relay.stop()
            await broker.stop()
            await pool.close()

    app = FastAPI(
        title=f"SIR {service.name}",
        description=service.description,
        version="1.0",
        lifespan=lifespan,
    )
    serve_docs_locally(app)
    app.state.started = False
    app.state.migrated = False
    app.state.broker = _broker(service, settings, pool_of=lambda: app.state.pool)
    app.include_router(_operations_router(service))
    for router in service.routers:
        app.include_router(router)
    app.middleware("http")(_http_metrics(service.name))
    return app


def _broker(service: Service, settings: Settings, pool_of: Callable[[], asyncpg.Pool]) -> KafkaBroker:
    # Every service has one, subscribers or not: it is also how /readyz asks whether
    # the broker answers.
    broker = new_broker(settings.kafka_bootstrap, service.name)
    if service.consumes:
        subscribe_idempotent(
            broker, settings, pool_of=pool_of, schema=service.name,
            group_id=service.group_id, handlers=service.consumes,
        )
    return broker


def _start_worker(service: str, work: Worker, pool: asyncpg.Pool, settings: Settings) -> asyncio.Task:
    task = asyncio.create_task(work(pool, settings), name=f"{service}-{work.__name__}")

    def report(done: asyncio.Task) -> None:
        # A worker that ends takes the service out of readiness (see _readiness); say why.
        if not done.cancelled():
            log.error("%s: worker %s stopped: %r", service, work.__name__, done.exception())

    task.add_done_callback(report)
    return task


async def _readiness(app: FastAPI) -> dict[str, bool]:
    """Ready once migrations ran and while the database and the broker answer and the
    service's own tasks (outbox relay, workers) are running."""
    state = app.state
    if not state.started:
        return {"migrations": state.migrated, "started": False}
    database, broker = await asyncio.gather(
        _answers(state.pool.fetchval("SELECT 1")),
        _answers(state.broker.ping(timeout=2.0)),
    )
    return {
        "migrations": state.migrated,
        "database": database,
        "broker": broker,
        "outbox_relay": state.relay.running,
        "workers": all(not task.done() for task in state.workers),
    }


def _operations_router(service: Service) -> APIRouter:
    schema = service.name
    router = APIRouter(tags=["operations"])

    @router.get("/healthz")
    async def healthz() -> dict:
        return {"status": "ok"}

    @router.get("/readyz")
    async def readyz(request: Request, response: Response) -> dict:
        checks = await _readiness(request.app)
        ready = all(checks.values())
        response.status_code = 200 if ready else 503
        return {"ready": ready, "checks": checks}

    @router.get("/metrics")
    async def metrics(request: Request) -> Response:
        checks = await _readiness(request.app)
        SERVICE_READY.labels(service.name).set(all(checks.values()))
        if checks.get("database"):
            try:
                waiting, age = await backlog(request.app.state.pool, schema)
                OUTBOX_BACKLOG.labels(schema).set(waiting)
                OUTBOX_OLDEST_AGE.labels(schema).set(age)
                if service.refresh_metrics is not None:
                    await service.refresh_metrics(request.app.state.pool)
            except Exception as error:
                # Serve the rest: a failed scrape would read as the service being down.
                log.warning("%s: refreshing gauges failed: %r", service.name, error)
        return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)

    return router


async def _answers(awaitable) -> bool:
    try:
        async with asyncio.timeout(2.0):
            return bool(await awaitable)
    except Exception:
        return False


def _http_metrics(service: str):
    async def middleware(request: Request, call_next):
        started = time.perf_counter()
        response = await call_next(request)
        route = getattr(request.scope.get("route"), "path", "unmatched")
        HTTP_REQUESTS.labels(service, route, request.method, str(response.status_code)).inc()
        HTTP_SECONDS.labels(service, route).observe(time.perf_counter() - started)
        return response

    return middleware


async def _wait_for_broker(settings: Settings, timeout: float = 60.0) -> None:
    """Create the platform's topics, waiting for the broker to come up (compose starts
    everything at once)."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            await ensure_topics(settings.kafka_bootstrap, all_topics(), settings.kafka_partitions)
            return
        except Exception as error:
            if time.monotonic() > deadline:
                raise
            log.warning("broker at %s not ready (%s); waiting", settings.kafka_bootstrap, error)
            await asyncio.sleep(1.0)
