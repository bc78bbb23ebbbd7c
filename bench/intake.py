"""Benchmark: intake's `POST /v1/notifications` under wrk, beside its ceiling.

Starts its own Tansu, a fresh database on the local server and intake as a process (as
`sir up` does, bench/pipeline.py's bench_platform), issues a council token, and loads
`POST /v1/notifications` with wrk (32 connections by default; Debian's `wrk`). In the same
run it serves the ceiling, bench/ceilings.py's `bare_intake_app` (FastAPI + pydantic + one
asyncpg transaction inserting an event row and an outbox row, under the same uvicorn), loads
it the same way, and prints both figures and their ratio (target ≥ 0.8 in throughput).
Rounds alternate intake and ceiling; the median round of each is reported.

    .venv/bin/python bench/intake.py                          # 2 rounds of 15 s each
    .venv/bin/python bench/intake.py --seconds 10 --rounds 1
    .venv/bin/python bench/intake.py --profile /tmp/intake.svg   # py-spy of intake and of the ceiling
                                                                 # (/tmp/intake.ceiling.svg; pip install py-spy)
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import asyncpg
import httpx
from pipeline import NOTIFICATION, bench_platform

from shared import devstack
from shared.auth import issue_token

BENCH = Path(__file__).parent
TARGET = 0.8


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of a process so far (/proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


@dataclass(frozen=True)
class Load:
    requests_per_second: float
    p50_ms: float
    p99_ms: float
    requests: int
    failed: int  # answers that were not 2xx, and socket errors
    cpu_ms: float = 0.0  # the server process's CPU per request: steadier than req/s on a busy machine
    # The CPU per request of the processes serving it: the database's backends for the
    # bench's database (both sides), and the broker (intake's relay publishes to it).
    database_cpu_ms: float = 0.0
    broker_cpu_ms: float = 0.0

    def __str__(self) -> str:
        return (f"{self.requests_per_second:,.0f} req/s, p50 {self.p50_ms:.1f} ms, p99 {self.p99_ms:.1f} ms,"
                f" {self.cpu_ms:.2f} ms CPU a request (+ database {self.database_cpu_ms:.2f} ms,"
                f" broker {self.broker_cpu_ms:.2f} ms)")


def wrk(url: str, headers: dict[str, str], body: str, *, connections: int, threads: int, seconds: int,
        pid: int | None = None, database: Sequence[int] = (), broker: Sequence[int] = ()) -> Load:
    """One wrk run of POSTs of `body` to `url` (served by process `pid`, whose CPU is
    counted, and by the `database`'s and `broker`'s processes, each counted apart)."""
    if shutil.which("wrk") is None:
        raise SystemExit("wrk is not installed: apt-get install -y wrk")
    script = "wrk.method = 'POST'\n" + f"wrk.body = {json.dumps(body)}\n" + "".join(
        f"wrk.headers[{json.dumps(k)}] = {json.dumps(v)}\n" for k, v in headers.items()
    )
    with tempfile.NamedTemporaryFile("w", suffix=".lua") as file:
        file.write(script)
        file.flush()
        cpu_before = cpu_seconds(pid) if pid else 0.0
        database_before, broker_before = _cpu_of(database), _cpu_of(broker)
        done = subprocess.run(
            ["wrk", f"-t{threads}", f"-c{connections}", f"-d{seconds}s", "--latency", "-s", file.name, url],
            capture_output=True, text=True, check=True,
        )
    cpu = cpu_seconds(pid) - cpu_before if pid else 0.0
    database_cpu, broker_cpu = _cpu_of(database) - database_before, _cpu_of(broker) - broker_before
    try:
        load = parse_wrk(done.stdout)
    except (AttributeError, ValueError):
        raise SystemExit(f"could not read wrk's output:\n{done.stdout}\n{done.stderr}") from None
    per_request = 1000 / max(load.requests, 1)
    return replace(load, cpu_ms=cpu * per_request, database_cpu_ms=database_cpu * per_request,
                   broker_cpu_ms=broker_cpu * per_request)


def _cpu_of(pids: Sequence[int]) -> float:
    total = 0.0
    for pid in pids:
        try:
            total += cpu_seconds(pid)
        except (FileNotFoundError, ProcessLookupError):  # a backend gone since: its CPU is lost to both readings
            pass
    return total


async def _backends(database_url: str) -> list[int]:
    """The pids of the database server's backends connected to the bench's database."""
    conn = await asyncpg.connect(database_url)
    try:
        return [r["pid"] for r in await conn.fetch(
            "SELECT pid FROM pg_stat_activity WHERE datname = current_database() AND pid <> pg_backend_pid()"
        )]
    finally:
        await conn.close()


def parse_wrk(output: str) -> Load:
    def duration_ms(text: str) -> float:
        value, unit = re.fullmatch(r"([\d.]+)(us|ms|s|m|h)", text.strip()).groups()  # type: ignore[union-attr]
        return float(value) * {"us": 0.001, "ms": 1.0, "s": 1000.0, "m": 60_000.0, "h": 3_600_000.0}[unit]

    rate = float(re.search(r"Requests/sec:\s+([\d.]+)", output).group(1))  # type: ignore[union-attr]
    p50 = duration_ms(re.search(r"^\s*50%\s+(\S+)", output, re.MULTILINE).group(1))  # type: ignore[union-attr]
    p99 = duration_ms(re.search(r"^\s*99%\s+(\S+)", output, re.MULTILINE).group(1))  # type: ignore[union-attr]
    requests = int(re.search(r"(\d+) requests in", output).group(1))  # type: ignore[union-attr]
    non_2xx = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", output)
    errors = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", output)
    failed = (int(non_2xx.group(1)) if non_2xx else 0) + (sum(int(g) for g in errors.groups()) if errors else 0)
    return Load(rate, p50, p99, requests, failed)


def wait_ready(url: str, seconds: float = 60) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            if httpx.get(url, timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    raise SystemExit(f"{url} never answered 200")


async def council_token(database_url: str) -> str:
    conn = await asyncpg.connect(database_url)
    try:
        return await issue_token(conn, "council", local_authority="glasgow-city")
    finally:
        await conn.close()


async def _outbox_waiting(database_url: str) -> int:
    try:
        conn = await asyncpg.connect(database_url)
    except (OSError, asyncpg.PostgresError):  # a busy shared server: the figure is a by-the-way
        return -1
    try:
        return await conn.fetchval("SELECT count(*) FROM intake.outbox")
    finally:
        await conn.close()


def start_ceiling(database_url: str, port: int) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "uvicorn", "ceilings:bare_intake_app", "--factory", "--app-dir", str(BENCH),
         "--host", "127.0.0.1", "--port", str(port), "--log-level", "warning", "--no-server-header"],
        env=dict(os.environ, BENCH_DATABASE_URL=database_url),
    )


def listening_pid(port: int) -> int:
    """The pid of the process listening on `port` (intake started by bench_platform; the broker)."""
    found = subprocess.run(["ss", "-Hltnp", f"sport = :{port}"], capture_output=True, text=True).stdout
    return int(re.search(r"pid=(\d+)", found).group(1))  # type: ignore[union-attr]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--seconds", type=int, default=15)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--profile", help="record intake under load with py-spy (first round): an SVG flame graph,"
                        " or collapsed stacks for a name ending .txt")
    args = parser.parse_args()
    body = json.dumps(NOTIFICATION)
    load = dict(connections=args.connections, threads=args.threads, seconds=args.seconds)

    with bench_platform({"intake": "intake"}) as (database_url, broker, ports):
        intake = f"http://127.0.0.1:{ports['intake']}"
        wait_ready(f"{intake}/readyz")
        headers = {"Content-Type": "application/json",
                   "Authorization": f"Bearer {asyncio.run(council_token(database_url))}"}
        ceiling_port = devstack.free_port()
        ceiling_process = start_ceiling(database_url, ceiling_port)
        try:
            ceiling = f"http://127.0.0.1:{ceiling_port}"
            # Warm both (connections in the pools, code paths).
            wait_ready_post(ceiling)
            wrk(f"{intake}/v1/notifications", headers, body, **load | {"seconds": 2})
            wrk(f"{ceiling}/v1/notifications", headers, body, **load | {"seconds": 2})
            intake_runs, ceiling_runs = [], []
            intake_process = listening_pid(ports["intake"])
            broker_process = listening_pid(int(broker.rsplit(":", 1)[1]))
            for round_ in range(args.rounds):
                # Each side's database backends (and intake's broker), read after the warm-up
                # filled the pools: the work each request causes outside the server process.
                backends = asyncio.run(_backends(database_url))
                profile = args.profile if args.profile and round_ == 0 else None
                with _profiled(profile, intake_process, args.seconds):
                    intake_runs.append(wrk(f"{intake}/v1/notifications", headers, body, **load, pid=intake_process,
                                           database=backends, broker=[broker_process]))
                with _profiled(profile and _beside(profile, "ceiling"), ceiling_process.pid, args.seconds):
                    ceiling_runs.append(wrk(f"{ceiling}/v1/notifications", headers, body, **load,
                                            pid=ceiling_process.pid, database=backends))
                waiting = asyncio.run(_outbox_waiting(database_url))
                print(f"round {round_ + 1}: intake {intake_runs[-1]} (outbox still to publish after it and the"
                      f" ceiling's run: {waiting}); ceiling {ceiling_runs[-1]}", flush=True)
        finally:
            ceiling_process.terminate()
            ceiling_process.wait(timeout=20)

    project, bare = _median(intake_runs), _median(ceiling_runs)
    for name, runs in (("intake", intake_runs), ("ceiling", ceiling_runs)):
        if failed := sum(r.failed for r in runs):
            print(f"WARNING: {name}: {failed} requests failed (non-2xx or socket errors)")
    rate = project.requests_per_second / bare.requests_per_second
    print(f"intake POST /v1/notifications, wrk {args.connections} connections, intake + Tansu + PostgreSQL: {project}")
    print(f"ceiling bare FastAPI + pydantic + one asyncpg transaction (event row + outbox row): {bare}")
    print(f"ratio intake/ceiling {rate:.2f} in throughput (target ≥ {TARGET}); p99 {project.p99_ms:.0f} ms"
          f" against {bare.p99_ms:.0f} ms; CPU a request, ceiling/intake {bare.cpu_ms / max(project.cpu_ms, 1e-9):.2f}"
          f" ({bare.cpu_ms:.2f} against {project.cpu_ms:.2f} ms, intake's relay publishing included)")
    print(" | ".join([
        "intake POST /v1/notifications (wrk 32 connections)", f"{project.requests_per_second:,.0f} req/s,"
        f" p99 {project.p99_ms:.0f} ms", f"{bare.requests_per_second:,.0f} req/s, p99 {bare.p99_ms:.0f} ms",
        f"{rate:.2f}", f"≥ {TARGET}",
    ]))


@contextlib.contextmanager
def _profiled(output: str | None, pid: int, seconds: int) -> Iterator[None]:
    """py-spy records process `pid` for `seconds` into `output` (None: no profile): an SVG
    flame graph, or collapsed stacks for a name ending .txt."""
    if output is None:
        yield
        return
    profiler = subprocess.Popen(
        [str(Path(sys.executable).parent / "py-spy"), "record", "-o", output, "-d", str(seconds), "-p", str(pid),
         "-r", "200", "-f", "raw" if output.endswith(".txt") else "flamegraph"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    try:
        yield
    finally:
        profiler.wait(timeout=60)


def _beside(path: str, name: str) -> str:
    """`/tmp/intake.svg` -> `/tmp/intake.ceiling.svg`."""
    stem, dot, suffix = path.rpartition(".")
    return f"{stem}.{name}.{suffix}" if dot else f"{path}.{name}"


def wait_ready_post(url: str, seconds: float = 60) -> None:
    """The ceiling has no /readyz: wait until it answers at all."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            httpx.get(f"{url}/", timeout=1)
            return
        except httpx.HTTPError:
            time.sleep(0.1)
    raise SystemExit(f"{url} never answered")


def _median(runs: list[Load]) -> Load:
    """The round of median throughput (the mean of the two middle ones for an even count)."""
    ordered = sorted(runs, key=lambda r: r.requests_per_second)
    middle = ordered[(len(ordered) - 1) // 2: len(ordered) // 2 + 1]
    return Load(
        statistics.mean(r.requests_per_second for r in middle), statistics.mean(r.p50_ms for r in middle),
        statistics.mean(r.p99_ms for r in middle), sum(r.requests for r in runs), sum(r.failed for r in runs),
        *(statistics.mean(getattr(r, f) for r in middle) for f in ("cpu_ms", "database_cpu_ms", "broker_cpu_ms")),
    )


if __name__ == "__main__":
    main()
