"""Real parts for the integration tests: PostgreSQL and a Kafka-protocol broker.

`infra` runs every integration test twice where it can: against the machine's own
PostgreSQL and a Tansu broker started here (or the ones KAFKA_BOOTSTRAP and
DATABASE_URL name), and against containers through testcontainers where a Docker
engine answers. Without one, the containers path skips.
"""

from __future__ import annotations

import contextlib
import importlib
import os
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import httpx
import pytest

from shared import devstack
from shared.db import create_pool
from shared.settings import Settings, get_settings

DEFAULT_SERVER = "postgresql://postgres@127.0.0.1:5432/postgres"


@dataclass
class Infra:
    bootstrap: str
    server_dsn: str  # a DSN of the server's `postgres` database, to create test databases
    tansu: devstack.Tansu | None = None
    created: list[str] = field(default_factory=list)

    def new_database(self) -> str:
        """A fresh database, dropped when the session's `infra` ends (`drop_databases`)."""
        name = f"sir_test_{uuid.uuid4().hex[:12]}"
        self.created.append(name)
        dsn = _with_database(self.server_dsn, name)
        devstack.ensure_database(dsn)
        return dsn

    def drop_databases(self) -> None:
        """Drop every database `new_database` made, whatever still holds a connection
        to it (WITH FORCE: a test that failed may have left its pool open)."""

        async def drop() -> None:
            conn = await asyncpg.connect(self.server_dsn)
            try:
                while self.created:
                    await conn.execute(f'DROP DATABASE IF EXISTS "{self.created[-1]}" WITH (FORCE)')
                    self.created.pop()
            finally:
                await conn.close()

        if self.created:
            devstack._run(drop())  # in a thread of its own if an event loop is running

    def settings(self, database_url: str, **overrides) -> Settings:
        values = dict(
            database_url=database_url,
            kafka_bootstrap=self.bootstrap,
            kafka_partitions=3,
            SIR_SESSION_TIMEOUT_MS=3000,
            SIR_HEARTBEAT_INTERVAL_MS=1000,
            SIR_MAX_ATTEMPTS=3,
            SIR_OUTBOX_POLL_SECONDS=0.2,
        )
        values.update(overrides)
        return Settings(**values)


def _with_database(dsn: str, name: str) -> str:
    return urlunsplit(urlsplit(dsn)._replace(path=f"/{name}"))


def _docker_engine_answers() -> bool:
    try:
        import docker

        docker.from_env(timeout=3).ping()
        return True
    except Exception:
        return False


@contextlib.contextmanager
def _dropping_databases(infra: Infra):
    """Yields `infra`; its databases are dropped at the end, after a failure too."""
    try:
        yield infra
    finally:
        infra.drop_databases()


@contextlib.contextmanager
def _local_infra():
    server = _with_database(os.environ.get("DATABASE_URL", DEFAULT_SERVER), "postgres")
    if not devstack.postgres_reachable(server):
        pytest.fail(f"no PostgreSQL at {server}: start it (see .ci/run) or set DATABASE_URL")
    if os.environ.get("KAFKA_BOOTSTRAP"):
        with _dropping_databases(Infra(os.environ["KAFKA_BOOTSTRAP"], server)) as infra:
            yield infra
        return
    with devstack.Tansu() as tansu, _dropping_databases(Infra(tansu.bootstrap, server, tansu)) as infra:
        yield infra


@contextlib.contextmanager
def _container_infra():
    if not _docker_engine_answers():
        pytest.skip("no Docker engine answers: the testcontainers path needs one")
    from testcontainers.kafka import KafkaContainer
    from testcontainers.postgres import PostgresContainer

    with PostgresContainer("postgres:16-alpine", driver=None) as postgres, KafkaContainer().with_kraft() as kafka:
        with _dropping_databases(
            Infra(kafka.get_bootstrap_server(), _with_database(postgres.get_connection_url(), "postgres"))
        ) as infra:
            yield infra


@pytest.fixture(scope="session", params=["local", "containers"])
def infra(request) -> Infra:
    with (_local_infra() if request.param == "local" else _container_infra()) as infra:
        yield infra


@dataclass
class Platform:
    settings: Settings
    pool: asyncpg.Pool
    apps: dict
    clients: dict[str, httpx.AsyncClient]


@contextlib.asynccontextmanager
async def run_services(settings: Settings, names) -> AsyncIterator[Platform]:
    """Run services in this process, their lifespans and HTTP apps, against real parts."""
    apps = {name: importlib.import_module(f"services.{name}.app").build(settings) for name in names}
    async with contextlib.AsyncExitStack() as stack:
        clients = {}
        for name, app in apps.items():
            await stack.enter_async_context(app.router.lifespan_context(app))
            clients[name] = await stack.enter_async_context(
                httpx.AsyncClient(transport=httpx.ASGITransport(app), base_url=f"http://{name}")
            )
        pool = await create_pool(settings.database_url, max_size=4)
        stack.push_async_callback(pool.close)
        yield Platform(settings, pool, apps, clients)


@pytest.fixture(scope="session")
async def platform(infra) -> AsyncIterator[Platform]:
    """All four services, sharing one fresh database and the session's broker."""
    settings = infra.settings(infra.new_database())
    async with run_services(settings, ("intake", "routing", "deadlines", "reporting")) as platform:
        yield platform


@pytest.fixture(scope="session")
async def tokens(platform) -> dict[str, str]:
    from shared.auth import issue_token

    pool = platform.pool
    return {
        "glasgow": await issue_token(pool, "council", local_authority="glasgow-city"),
        "fife": await issue_token(pool, "council", local_authority="fife"),
        "inverclyde": await issue_token(pool, "council", local_authority="inverclyde"),
        "inspectorate": await issue_token(pool, "inspectorate"),
        "sog_north_strathclyde": await issue_token(pool, "sog", region="north-strathclyde"),
        "sog_tayside": await issue_token(pool, "sog", region="tayside"),
        "admin": await issue_token(pool, "admin"),
    }


@pytest.fixture
def cli_environment(infra, monkeypatch):
    """A fresh database and the session's broker, in the environment `sir` commands read."""
    monkeypatch.setenv("DATABASE_URL", infra.new_database())
    monkeypatch.setenv("KAFKA_BOOTSTRAP", infra.bootstrap)
    get_settings.cache_clear()
    yield
    get_settings.cache_clear()


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}
