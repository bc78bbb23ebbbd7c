"""Real processes for the fault tests: a private PostgreSQL cluster, a Tansu, and the four
services as `sir serve` processes, each on a free port, which a test may kill -9,
restart, or cut off from its database.

The cluster is the test's own (initdb in a temporary folder, the Debian PostgreSQL 15
binaries, a free port, run as `postgres` when we are root), because one test restarts
it: the machine's server, which others' tests use, is never touched.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest

from shared import devstack
from shared.settings import SERVICES
from tests.integration.helpers import Service


def _postgres_bin() -> Path:
    """SIR_TEST_POSTGRES_BIN, else Debian's newest installed PostgreSQL (15 here)."""
    if "SIR_TEST_POSTGRES_BIN" in os.environ:
        return Path(os.environ["SIR_TEST_POSTGRES_BIN"])
    installed = sorted(Path("/usr/lib/postgresql").glob("*/bin/initdb"), key=lambda p: int(p.parts[-3]))
    return installed[-1].parent if installed else Path("/usr/lib/postgresql/15/bin")


POSTGRES_BIN = _postgres_bin()
SIR = [sys.executable, "-m", "services.cli"]
COUNCIL = "glasgow-city"


class PrivatePostgres(devstack.EmbeddedPostgres):
    """A PostgreSQL cluster of our own from the system's binaries (EmbeddedPostgres's
    start and stop, which run the server as an unprivileged user when we are root)."""

    def _bin(self, name: str) -> str:
        return str(POSTGRES_BIN / name)

    def restart(self) -> None:
        self.stop()
        self.start()


@dataclass
class FaultPlatform:
    database_url: str
    bootstrap: str
    env: dict[str, str]
    services: dict[str, Service]
    postgres: PrivatePostgres
    tokens: dict[str, str] = field(default_factory=dict)

    def start(self, name: str) -> None:
        service = self.services[name]
        with service.log.open("ab") as log:
            service.process = subprocess.Popen(
                [*SIR, "serve", name], env=self.env | {f"{name.upper()}_PORT": str(service.port)},
                stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            )

    def kill(self, name: str) -> None:
        """kill -9: no shutdown, no flush, no commit of anything in flight."""
        process = self.services[name].process
        assert process is not None and process.poll() is None, f"{name} is not running"
        process.send_signal(signal.SIGKILL)
        process.wait(timeout=10)

    def stop(self, name: str) -> None:
        process = self.services[name].process
        if process is not None and process.poll() is None:
            process.terminate()
            try:
                process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()

    async def wait_ready(self, *names: str, timeout: float = 90.0) -> None:
        deadline = time.monotonic() + timeout
        async with httpx.AsyncClient(timeout=2) as client:
            for name in names or tuple(self.services):
                service = self.services[name]
                while True:
                    with contextlib.suppress(httpx.HTTPError):
                        if (await client.get(f"{service.url}/readyz")).status_code == 200:
                            break
                    if service.process is not None and service.process.poll() is not None:
                        raise AssertionError(f"{name} exited ({service.process.returncode}):\n{_tail(service.log)}")
                    if time.monotonic() > deadline:
                        raise AssertionError(f"{name} not ready in {timeout}s:\n{_tail(service.log)}")
                    await asyncio.sleep(0.1)


def _tail(path: Path, lines: int = 40) -> str:
    with contextlib.suppress(OSError):
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    return ""


@pytest.fixture(scope="session")
def private_postgres():
    if not (POSTGRES_BIN / "initdb").exists():
        pytest.skip(f"no PostgreSQL binaries in {POSTGRES_BIN} (SIR_TEST_POSTGRES_BIN)")
    folder = Path(tempfile.mkdtemp(prefix="sir-faults-pg-"))
    folder.chmod(0o755)  # the server's user must be able to enter it
    server = PrivatePostgres(folder / "data", port=devstack.free_port())
    try:
        server_dsn = server.start()
        yield server, server_dsn
    finally:
        with contextlib.suppress(Exception):
            server.stop()
        shutil.rmtree(folder, ignore_errors=True)


@contextlib.asynccontextmanager
async def running_platform(postgres: PrivatePostgres, server_dsn: str, logs: Path):
    """The four services as processes on a fresh database of the private cluster and a
    Tansu of their own, with a token of each role."""
    from shared.auth import issue_token
    from shared.db import create_pool

    database_url = server_dsn.rsplit("/", 1)[0] + f"/sir_faults_{uuid.uuid4().hex[:8]}"
    devstack.ensure_database(database_url)
    with devstack.Tansu(log_path=logs / "tansu.log") as tansu:
        env = dict(
            os.environ, DATABASE_URL=database_url, KAFKA_BOOTSTRAP=tansu.bootstrap, KAFKA_PARTITIONS="3",
            SIR_SESSION_TIMEOUT_MS="3000", SIR_HEARTBEAT_INTERVAL_MS="1000", SIR_OUTBOX_POLL_SECONDS="0.2",
            SIR_ROUTING_POLL_SECONDS="0.2", SIR_LOG_LEVEL="WARNING",
        )
        services = {name: Service(name, devstack.free_port(), logs / f"{name}.log") for name in SERVICES}
        platform = FaultPlatform(database_url, tansu.bootstrap, env, services, postgres)
        # Migrations once, before four processes race to apply them.
        await asyncio.to_thread(subprocess.run, [*SIR, "migrate"], env=env, check=True, capture_output=True, timeout=120)
        try:
            for name in SERVICES:
                platform.start(name)
            await platform.wait_ready()
            pool = await create_pool(database_url, max_size=2)
            try:
                platform.tokens = {
                    "council": await issue_token(pool, "council", local_authority=COUNCIL),
                    "inspectorate": await issue_token(pool, "inspectorate"),
                    "sog": await issue_token(pool, "sog", region="north-strathclyde"),
                    "admin": await issue_token(pool, "admin"),
                }
            finally:
                await pool.close()
            yield platform
        finally:
            for name in SERVICES:
                platform.stop(name)


@pytest.fixture(scope="session")
async def fault_platform(private_postgres, tmp_path_factory):
    """The platform the kill and restart tests strike."""
    async with running_platform(*private_postgres, tmp_path_factory.mktemp("fault-logs")) as platform:
        yield platform


@pytest.fixture(scope="session")
async def fuzz_platform(private_postgres, tmp_path_factory):
    """A platform of its own for the fuzz run (it may change recipients' channels)."""
    async with running_platform(*private_postgres, tmp_path_factory.mktemp("fuzz-logs")) as platform:
        yield platform
