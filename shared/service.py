"""What every service has, wired one way: a FastAPI app whose lifespan opens the pool,
migrates the schemas, starts the Kafka subscribers and the outbox relay; `/healthz`
(liveness), `/readyz` (readiness, with each dependency's check), `/metrics`, and what
shared/http.py gives every answer (error shape, body limits, headers, request metrics).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import asyncpg
from fastapi import APIRouter, FastAPI, Request, Response
from faststream.kafka import KafkaBroker
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from shared.assets import serve_docs_locally
from shared.consumer import Handler, subscribe_idempotent
from shared.db import COMMON, create_pool, migrate, migrate_auth
from shared.http import ERROR_RESPONSES, Guard, install_error_handlers
from shared.messaging import all_topics, ensure_topics, new_broker
from shared.metrics import OUTBOX_BACKLOG, OUTBOX_OLDEST_AGE, OUTBOX_PARKED_WAITING, SERVICE_READY
from shared.openapi import install as install_openapi
from shared.outbox import OutboxRelay, backlog, parked_waiting
from shared.process import Process
from shared.settings import Settings

log = logging.getLogger(__name__)

Worker = Callable[[asyncpg.Pool, Settings], Coroutine[Any, Any, None]]


@dataclass
class Service:
    name: str
    migrations: Path
    description: str
    routers: list[APIRouter] = field(default_factory=list)
    # topic -> handler, each applied once per event in the service's consumer group
    consumes: dict[str, Handler | Process] = field(default_factory=dict)
    # Sets the service's gauges from its tables at each scrape of /metrics.
    refresh_metrics: Callable[[asyncpg.Pool], Awaitable[None]] | None = None
    # Long-running tasks (a scheduler, a delivery loop) started after the subscribers,
    # each given the pool and the settings, cancelled at shutdown.
    workers: list[Worker] = field(default_factory=list)
    # The outbox relay's linger under load (shared/outbox.py LINGER_FROM_ROWS); 0: none.
    relay_linger_seconds: float = 0.0

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
            linger_seconds=service.relay_linger_seconds,
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

    docs = settings.api_docs
    app = FastAPI(
        title=f"SIR {service.name}",
        description=service.description,
        version="1.0",
        lifespan=lifespan,
        docs_url="/docs" if docs else None,
        redoc_url="/redoc" if docs else None,
        openapi_url="/openapi.json" if docs else None,
    )
    serve_docs_locally(app)
    app.state.started = False
    app.state.migrated = False
    app.state.settings = settings
    app.state.broker = _broker(service, settings, pool_of=lambda: app.state.pool)
    separate_metrics = settings.metrics_port_offset is not None
    app.include_router(_operations_router(service, with_metrics=not separate_metrics))
    for router in service.routers:
        app.include_router(router, responses=ERROR_RESPONSES)
    install_error_handlers(app)
    install_openapi(app, service.name)
    app.add_middleware(Guard, service=service.name)
    if separate_metrics:
        # Served by `serve` on its own port (settings.metrics_port_of), so it need not be public.
        app.state.metrics_app = _metrics_app(service, app)
    return app


def _metrics_app(service: Service, main: FastAPI) -> FastAPI:
    metrics = FastAPI(title=f"SIR {service.name} metrics", docs_url=None, redoc_url=None, openapi_url=None)
    router = APIRouter()

    @router.get("/metrics")
    async def serve_metrics() -> Response:
        return await _scrape(service, main)

    metrics.include_router(router)
    install_error_handlers(metrics)
    metrics.add_middleware(Guard, service=service.name)
    return metrics


async def serve(service: str, app: FastAPI, settings: Settings) -> None:
    """Serve `app` (and its metrics app on the metrics port, when set) until stopped."""
    import uvicorn

    def server(asgi: FastAPI, port: int, lifespan: Literal["on", "off"]) -> uvicorn.Server:
        # log_config=None: uvicorn's lines go through the root handler (JSON by default).
        # server_header=False: no `server: uvicorn` telling a caller what to attack.
        # access_log=False: its lines are INFO, never written at "warning", yet with a
        # handler reachable uvicorn formatted each one's client and quoted path first.
        return uvicorn.Server(uvicorn.Config(
            asgi, host=settings.host, port=port, log_level="warning", log_config=None,
            server_header=False, lifespan=lifespan, access_log=False,
        ))

    servers = [server(app, settings.port_of(service), "on")]
    # The console has no /metrics app of its own to serve apart.
    if settings.metrics_port_offset is not None and hasattr(app.state, "metrics_app"):
        servers.append(server(app.state.metrics_app, settings.metrics_port_of(service), "off"))
    # Each server passes a signal on to the one started before it; and when one stops
    # for another reason (the service failed to start), the others stop too.
    running = [asyncio.create_task(s.serve()) for s in servers]
    await asyncio.wait(running, return_when=asyncio.FIRST_COMPLETED)
    for s in servers:
        s.should_exit = True
    await asyncio.gather(*running)


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


async def _readiness(service: Service, app: FastAPI) -> tuple[dict[str, bool], dict[str, bool]]:
    """(checks, reported): ready while every check holds. The checks: migrations ran,
    the database answers, the service's own tasks (outbox relay, workers) run, and the
    broker answers if the service consumes from it. A service that only emits (intake)
    reports the broker without depending on it: accepting into the outbox while the
    broker is away is its job; the outbox's backlog and age are the signal then."""
    state = app.state
    if not state.started:
        return {"migrations": state.migrated, "started": False}, {}
    database, broker = await asyncio.gather(
        _answers(state.pool.fetchval("SELECT 1")),
        _answers(state.broker.ping(timeout=2.0)),
    )
    checks = {
        "migrations": state.migrated,
        "database": database,
        "outbox_relay": state.relay.running,
        "workers": all(not task.done() for task in state.workers),
    }
    if service.consumes:
        return {**checks, "broker": broker}, {}
    return checks, {"broker": broker}


def _operations_router(service: Service, *, with_metrics: bool) -> APIRouter:
    router = APIRouter(tags=["operations"])

    @router.get("/healthz")
    async def healthz() -> dict:
        """Liveness: the process answers HTTP (restart it if not)."""
        return {"status": "ok"}

    @router.get("/readyz")
    async def readyz(request: Request, response: Response) -> dict:
        """Readiness: it can do its job now (send it traffic only then); docs/operations.md."""
        checks, reported = await _readiness(service, request.app)
        ready = all(checks.values())
        response.status_code = 200 if ready else 503
        answer = {"ready": ready, "checks": checks}
        if reported:
            answer["reported"] = reported
            if checks.get("database"):
                waiting, age = await backlog(request.app.state.pool, service.name)
                answer["outbox"] = {"backlog": waiting, "oldest_age_seconds": round(age, 3)}
        return answer

    if with_metrics:
        @router.get("/metrics")
        async def metrics(request: Request) -> Response:
            return await _scrape(service, request.app)

    return router


async def _scrape(service: Service, app: FastAPI) -> Response:
    checks, _ = await _readiness(service, app)
    SERVICE_READY.labels(service.name).set(all(checks.values()))
    if checks.get("database"):
        try:
            waiting, age = await backlog(app.state.pool, service.name)
            OUTBOX_BACKLOG.labels(service.name).set(waiting)
            OUTBOX_OLDEST_AGE.labels(service.name).set(age)
            OUTBOX_PARKED_WAITING.labels(service.name).set(await parked_waiting(app.state.pool, service.name))
            if service.refresh_metrics is not None:
                await service.refresh_metrics(app.state.pool)
        except Exception as error:
            # Serve the rest: a failed scrape would read as the service being down.
            log.warning("%s: refreshing gauges failed: %r", service.name, error)
    return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)


async def _answers(awaitable) -> bool:
    try:
        async with asyncio.timeout(2.0):
            return bool(await awaitable)
    except Exception:
        return False


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
