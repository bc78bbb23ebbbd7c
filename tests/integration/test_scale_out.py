"""Scale out: two processes of each consumer service (routing, deadlines, reporting) share
the work through the consumer group and SKIP LOCKED, with the same exactly-once results as
one process of each (issue 15, item 3; docs/performance.md).

Each run is its own: a fresh database on the machine's server, a Tansu of its own (so no
other test's group or topic is shared), migrations once, then intake and the consumer
services as `sir serve` processes. The same notifications and assessments are posted to a
run with one process per consumer service and to one with two, and every figure is
compared: events processed per consumer and topic, events emitted by type, deliveries,
deadlines, and the national report.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import importlib
import os
import subprocess
import sys
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path

import asyncpg
import httpx
from prometheus_client.parser import text_string_to_metric_families

from shared import devstack
from shared.messaging import CASE_EVENTS
from shared.settings import SERVICES
from tests.faults.load import Load, assert_nothing_lost_nothing_twice
from tests.integration.helpers import Service, eventually

SIR = [sys.executable, "-m", "services.cli"]
CONSUMERS = tuple(s for s in SERVICES if s != "intake")
PARTITIONS = 3
NOTIFICATIONS = 60
ASSESSED = 15
# A group join takes about half the session timeout on Tansu (3 s here), and a second
# member's arrival makes the first rejoin: a few rounds, on a loaded machine.
GROUP_SHARED_SECONDS = 60.0
SETTLED_SECONDS = 120.0


@dataclass
class Run:
    database_url: str
    bootstrap: str
    members: dict[str, list[Service]] = field(default_factory=dict)  # service -> its processes


def _tail(path: Path, lines: int = 30) -> str:
    with contextlib.suppress(OSError):
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    return ""


@contextlib.asynccontextmanager
async def consumer_processes(infra, logs: Path, processes: int) -> AsyncIterator[Run]:
    """Intake and `processes` processes of each consumer service on a fresh database and a
    Tansu of their own; every process stopped at the end."""
    database_url = infra.new_database()
    with devstack.Tansu(log_path=_log_folder(logs) / "tansu.log") as tansu:
        env = dict(
            os.environ, DATABASE_URL=database_url, KAFKA_BOOTSTRAP=tansu.bootstrap, KAFKA_PARTITIONS=str(PARTITIONS),
            SIR_SESSION_TIMEOUT_MS="3000", SIR_HEARTBEAT_INTERVAL_MS="1000", SIR_OUTBOX_POLL_SECONDS="0.2",
            SIR_ROUTING_POLL_SECONDS="0.2", SIR_LOG_LEVEL="WARNING",
        )
        # Migrations once, before the processes race to apply them.
        await asyncio.to_thread(subprocess.run, [*SIR, "migrate"], env=env, check=True, capture_output=True, timeout=120)
        run = Run(database_url, tansu.bootstrap)
        for service in SERVICES:
            count = 1 if service == "intake" else processes
            run.members[service] = [
                Service(service, devstack.free_port(), logs / f"{service}-{i}.log") for i in range(count)
            ]
        try:
            for members in run.members.values():
                for member in members:
                    _spawn(member, env)
            await _ready(run)
            yield run
        finally:
            for members in run.members.values():
                for member in members:
                    if member.process is not None and member.process.poll() is None:
                        member.process.terminate()
            for members in run.members.values():
                for member in members:
                    if member.process is not None:
                        try:
                            member.process.wait(timeout=20)
                        except subprocess.TimeoutExpired:
                            member.process.kill()
                            member.process.wait()


def _log_folder(folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def _spawn(member: Service, env: dict[str, str]) -> None:
    member.log.parent.mkdir(parents=True, exist_ok=True)
    with member.log.open("ab") as log:
        member.process = subprocess.Popen(
            [*SIR, "serve", member.name], env=env | {f"{member.name.upper()}_PORT": str(member.port)},
            stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
        )


async def _ready(run: Run) -> None:
    async with httpx.AsyncClient(timeout=2) as client:
        for members in run.members.values():
            for member in members:
                async def ready(member=member) -> bool:
                    assert member.process is not None
                    if member.process.poll() is not None:
                        raise AssertionError(f"{member.name} exited:\n{_tail(member.log)}")
                    with contextlib.suppress(httpx.HTTPError):
                        return (await client.get(f"{member.url}/readyz")).status_code == 200
                    return False

                await eventually(ready, timeout=90, what=f"{member.name} on {member.port} ready")


async def _metrics(client: httpx.AsyncClient, member: Service) -> list:
    answer = await client.get(f"{member.url}/metrics")
    answer.raise_for_status()
    return [sample for family in text_string_to_metric_families(answer.text) for sample in family.samples]


async def _owned_case_partitions(client: httpx.AsyncClient, member: Service) -> set[int]:
    """The case topic's partitions this process owns now (its applied-offset series: set on
    assignment, removed on revocation)."""
    return {
        int(sample.labels["partition"]) for sample in await _metrics(client, member)
        if sample.name == "sir_consumer_applied_offset" and sample.labels.get("topic") == CASE_EVENTS
    }


async def _consumed(client: httpx.AsyncClient, member: Service) -> float:
    return sum(s.value for s in await _metrics(client, member) if s.name == "sir_events_consumed_total")


async def _group_shared(run: Run) -> bool:
    """Every consumer service's processes own disjoint shares of the case topic that
    together cover it, each process a share."""
    async with httpx.AsyncClient(timeout=5) as client:
        for service in CONSUMERS:
            shares = [await _owned_case_partitions(client, member) for member in run.members[service]]
            if not all(shares) or sum(map(len, shares)) != PARTITIONS or set().union(*shares) != set(range(PARTITIONS)):
                return False
    return True


def _consumed_topics() -> dict[str, tuple[str, ...]]:
    return {s: tuple(importlib.import_module(f"services.{s}.app").SERVICE.consumes) for s in CONSUMERS}


async def _settled(conn: asyncpg.Connection) -> bool:
    """Every event emitted on a topic has been processed by every service consuming it
    (so nothing more is on its way)."""
    emitted = {
        row["topic"]: row["n"] for row in await conn.fetch(
            " UNION ALL ".join(f"SELECT topic FROM {s}.emitted_events" for s in SERVICES).join(
                ("SELECT topic, count(*) AS n FROM (", ") e GROUP BY topic")))
    }
    for service, topics in _consumed_topics().items():
        processed = {row["topic"]: row["n"] for row in await conn.fetch(
            f"SELECT topic, count(*) AS n FROM {service}.processed_events GROUP BY topic")}
        if any(processed.get(topic, 0) != emitted.get(topic, 0) for topic in topics):
            return False
    return True


async def _figures(conn: asyncpg.Connection, reporting: Service, admin_token: str) -> dict:
    today = dt.date.today()
    async with httpx.AsyncClient(timeout=30) as client:
        national = (await client.get(
            f"{reporting.url}/v1/reports/national", headers={"Authorization": f"Bearer {admin_token}"},
            params={"from": (today - dt.timedelta(days=2)).isoformat(), "to": (today + dt.timedelta(days=2)).isoformat()},
        )).json()["figures"]

    async def grouped(sql: str) -> dict:
        return {tuple(row)[:-1]: row[-1] for row in await conn.fetch(sql)}

    return {
        "processed": {s: await grouped(f"SELECT topic, count(*) FROM {s}.processed_events GROUP BY 1") for s in CONSUMERS},
        "emitted": {s: await grouped(f"SELECT event_type, count(*) FROM {s}.emitted_events GROUP BY 1") for s in SERVICES},
        "deliveries": await grouped("SELECT recipient, status, count(*) FROM routing.deliveries GROUP BY 1, 2"),
        "deadlines": await grouped("SELECT rule, status, count(*) FROM deadlines.deadlines GROUP BY 1, 2"),
        "counted": await conn.fetchval("SELECT sum(notifications) FROM reporting.notifications_by_authority"),
        "national": national,
    }


async def _one_run(infra, logs: Path, processes: int) -> tuple[dict, dict[str, list[float]]]:
    """Post the notifications and assessments to a run with `processes` processes of each
    consumer service; its figures, and the events each process applied."""
    from shared.auth import issue_token

    async with consumer_processes(infra, logs, processes) as run:
        await eventually(lambda: _group_shared(run), timeout=GROUP_SHARED_SECONDS,
                         what=f"each consumer group shared among {processes} process(es)")
        conn = await asyncpg.connect(run.database_url)
        try:
            council = await issue_token(conn, "council", local_authority="glasgow-city")
            inspectorate = await issue_token(conn, "inspectorate")
            admin = await issue_token(conn, "admin")
            intake = run.members["intake"][0]
            load = Load(intake.url, council)
            await load.run(NOTIFICATIONS, concurrency=4)
            async with httpx.AsyncClient(base_url=intake.url, timeout=10) as client:
                for case_id in list(load.accepted)[:ASSESSED]:
                    answer = await client.post(
                        f"/v1/cases/{case_id}/events", headers={"Authorization": f"Bearer {inspectorate}"},
                        json={"event_type": "notification.criteria_assessed", "data": {"meets_criteria": True}},
                    )
                    assert answer.status_code == 201, answer.text
            await assert_nothing_lost_nothing_twice(run.database_url, run.bootstrap, load)
            await eventually(lambda: _settled(conn), timeout=SETTLED_SECONDS, what="every emitted event processed")
            figures = await _figures(conn, run.members["reporting"][0], admin)
            async with httpx.AsyncClient(timeout=5) as client:
                applied = {s: [await _consumed(client, m) for m in run.members[s]] for s in CONSUMERS}
        finally:
            await conn.close()
    return figures, applied


async def test_two_processes_of_each_consumer_share_the_work_with_the_same_results(infra, tmp_path):
    one, _ = await _one_run(infra, tmp_path / "one", processes=1)
    two, applied = await _one_run(infra, tmp_path / "two", processes=2)

    assert one["counted"] == NOTIFICATIONS
    assert sum(one["processed"]["routing"].values()) >= NOTIFICATIONS + ASSESSED
    # Both processes of every consumer service applied events: the work was shared.
    for service, per_process in applied.items():
        assert all(count > 0 for count in per_process), f"{service}: a process applied nothing: {per_process}"
    # And the results are the very same as one process's: each effect once.
    assert two == one
