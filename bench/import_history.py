"""Benchmark: `sir import` of a large history file, memory and speed.

Writes a file of valid history (`--megabytes`, default 100: whole concluded cases of six
events each, a case's lines spread over the file as an export by date would), then runs
`sir import FILE` as its own process against a fresh database (bench_database) and a
Tansu started here, and prints the process's peak RSS (target: under 200 MB for 100 MB),
the events stored per second, and as a ceiling measured in the same run the events per
second of a bare asyncpg `executemany` (batches of 1,000) and of a COPY of the same rows
into a table of the same shape (bench/ceilings.py), with the ratios.

    .venv/bin/python bench/import_history.py                  # 100 MB
    .venv/bin/python bench/import_history.py --megabytes 5    # quick check
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import os
import resource
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

from ceilings import copy_rows, executemany_rows, ratio, report_row
from pipeline import bench_database

from shared import devstack

NAMESPACE = uuid.UUID("b3c1e7a2-0000-4000-8000-1a2b3c4d5e6f")
NOTIFIED = {
    "council_reference": "BENCH-0000", "incident_date": "2024-03-01", "criterion": "charged_with_serious_offence",
    "incident_type": "serious_assault", "order_type": "parole_licence", "subject_role": "perpetrator",
    "mappa": {"applies": False}, "domestic_abuse_aggravated": False, "historical": False,
    "signed_off_by": "service_manager",
}
REVIEW = {
    "review_type": "initial_analysis", "signed_off_by": "head_of_justice_social_work", "reviewer_independent": True,
    "risk_assessment": {"completed": True, "up_to_date": True, "tools": ["lscmi"]},
    "risk_management_plan": {"in_place": True, "informed_by_assessment": True},
    "order_reviews_referenced": True, "good_practice_identified": False, "findings": [],
}
STEPS = [
    ("incident.notified", "council", "2024-03-05T10:00:00Z", NOTIFIED),
    ("notification.forwarded", "service", "2024-03-05T10:00:00Z",
     {"recipient": "scottish-government", "channel": "email", "attempts": 1, "delivered_at": "2024-03-06T09:00:00Z"}),
    ("notification.criteria_assessed", "inspectorate", "2024-03-07T10:00:00Z", {"meets_criteria": True}),
    ("review.submitted", "council", "2024-05-20T10:00:00Z", REVIEW),
    ("review.responded", "inspectorate", "2024-06-10T10:00:00Z", {"outcome": "concluded"}),
    ("case.closed", "inspectorate", "2024-06-11T10:00:00Z", {"reason": "concluded"}),
]
# Cases whose lines are interleaved: the file holds blocks of this many cases, step by step.
SPREAD = 500


def write_history(path: Path, megabytes: int) -> int:
    """Whole cases until the file holds `megabytes` MB; returns the number of lines."""
    target, written, lines, case_number = megabytes * 1_000_000, 0, 0, 0
    with path.open("w") as file:
        while written < target:
            block = [uuid.uuid5(NAMESPACE, str(case_number + i)) for i in range(SPREAD)]
            case_number += SPREAD
            for step, (event_type, role, received_at, data) in enumerate(STEPS):
                for case_id in block:
                    line = json.dumps({
                        "event_id": str(uuid.uuid5(case_id, str(step))), "event_type": event_type, "schema_version": 1,
                        "case_id": str(case_id), "local_authority": "glasgow-city", "received_at": received_at,
                        "actor": {"role": role, "id": "legacy"}, "data": data,
                    }) + "\n"
                    file.write(line)
                    written += len(line)
                    lines += 1
    return lines


@dataclass
class ImportRun:
    """What `run_import` measured of one `sir import`."""

    stored_seconds: float  # until it said every event is stored (what the import answers)
    published_seconds: float  # until it ended: every event published too
    peak_kb: int  # peak RSS of the `sir import` process (or py-spy's, when profiled)
    cpu_seconds: float  # user + system of `sir import` and the processes under it (its relay)
    database_cpu_seconds: float  # of the PostgreSQL backends serving the run's database
    output: str


def run_import(path: Path, database_url: str, bootstrap: str, profile: str | None = None) -> ImportRun:
    """Run `sir import` on `path` and time it twice: until it reports the events stored
    (the line its progress ends with: the events are in the system of record, and the
    outbox guarantees they are published) and until it has ended (its relay has published
    them all). CPU: of it and the processes under it (its relay), which holds on a shared
    machine where wall time does not, and of the PostgreSQL backends of the run's database. `profile`: record it
    with py-spy (collapsed stacks) into that file (the RSS is then py-spy's or the import's)."""
    env = dict(os.environ, DATABASE_URL=database_url, KAFKA_BOOTSTRAP=bootstrap, SIR_LOG_LEVEL="WARNING")
    command = [sys.executable, "-m", "services.cli", "import", str(path)]
    if profile:
        # --subprocesses: the relay's process too (its stacks begin with its pid).
        command = [str(Path(sys.executable).parent / "py-spy"), "record", "-f", "raw", "-r", "100", "--idle",
                   "--subprocesses", "-o", profile, "--", *command]
    processes = ProcessCpu(database_url.rsplit("/", 1)[1])
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.perf_counter()
    stored_at = None
    lines = []
    with processes, subprocess.Popen(
        command, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    ) as child:
        processes.root = child.pid
        assert child.stdout is not None
        for line in child.stdout:  # its progress and its report, as they come
            if stored_at is None and "events/s stored" in line:
                stored_at = time.perf_counter()
            lines.append(line)
    seconds = time.perf_counter() - started
    output = "".join(lines)
    if child.returncode != 0:
        raise SystemExit(f"sir import failed ({child.returncode}): {output[-2000:]}")
    # The largest peak of the children waited for so far: only this one.
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    reaped = after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime
    cpu = max(reaped, processes.descendant_seconds())  # sampled: a little short of the reaped
    return ImportRun(
        (stored_at or started + seconds) - started, seconds, after.ru_maxrss, cpu, processes.backend_seconds(), output
    )


class ProcessCpu:
    """CPU seconds (user + system) of the PostgreSQL backends serving one database, and of
    one process and all its descendants, while it is entered: read from /proc by a thread
    ten times a second (the server titles its processes `postgres: USER DATABASE ...`),
    so a process's last tenth of a second may be missed. Descendants count whoever
    reaps them (a process reparented when its parent ends is in no rusage of ours)."""

    def __init__(self, database: str):
        self.title = f" {database} ".encode()
        self.root: int | None = None  # the process whose descendants count, once started
        self.backends: dict[int, int] = {}  # pid -> clock ticks
        self.descendants: dict[int, int] = {}
        self._parents: dict[int, int] = {}
        self._titled: set[int] = set()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> ProcessCpu:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join()

    def _run(self) -> None:
        while not self._stop.wait(0.1):
            self.sample()

    def _descends(self, pid: int) -> bool:
        while pid > 1:
            if pid == self.root:
                return True
            pid = self._parents.get(pid, 0)
        return False

    def sample(self) -> None:
        stats = {}
        for entry in os.scandir("/proc"):
            if not entry.name.isdigit():
                continue
            try:
                with open(f"/proc/{entry.name}/stat") as file:
                    fields = file.read().rsplit(")", 1)[1].split()
                pid = int(entry.name)
                # A process reparented (its parent ended) keeps the parent it had.
                self._parents.setdefault(pid, int(fields[1]))
                stats[pid] = int(fields[11]) + int(fields[12])  # utime + stime
                if pid not in self._titled:  # a backend's title is set as it starts
                    self._titled.add(pid)
                    with open(f"/proc/{entry.name}/cmdline", "rb") as file:
                        if self.title in file.read() + b" ":
                            self.backends[pid] = stats[pid]
            except OSError:  # ended meanwhile
                continue
        for pid, ticks in stats.items():
            if pid in self.backends:
                self.backends[pid] = ticks
            elif self.root is not None and self._descends(pid):
                self.descendants[pid] = ticks

    def backend_seconds(self) -> float:
        return sum(self.backends.values()) / os.sysconf("SC_CLK_TCK")

    def descendant_seconds(self) -> float:
        return sum(self.descendants.values()) / os.sysconf("SC_CLK_TCK")


def ceiling_rows(path: Path, lines: int, sample: int = 50_000) -> list[tuple]:
    """The file's first `sample` events as the rows of a table like intake.events
    (bench/ceilings.py EVENT_TABLE): what any import must at least write."""
    rows = []
    with path.open() as file:
        for line in itertools.islice(file, min(sample, lines)):
            event = json.loads(line)
            rows.append((uuid.UUID(event["event_id"]), uuid.UUID(event["case_id"]), event["event_type"],
                         event["local_authority"], line))
    return rows


async def ceilings(path: Path, database_url: str, lines: int) -> tuple[float, float]:
    """Rows/s of a bare executemany (batches of 1,000) and of a COPY of the same rows."""
    rows = ceiling_rows(path, lines)
    return await executemany_rows(database_url, rows), await copy_rows(database_url, rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--megabytes", type=int, default=100)
    parser.add_argument("--profile", help="record `sir import` with py-spy into this file (pip install py-spy)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as directory, bench_database() as database_url, devstack.Tansu() as broker:
        path = Path(directory) / "history.ndjson"
        lines = write_history(path, args.megabytes)
        size = path.stat().st_size
        print(f"history: {size / 1e6:.1f} MB, {lines:,} events in {lines // len(STEPS):,} cases")
        run = run_import(path, database_url, broker.bootstrap, args.profile)
        for line in run.output.strip().splitlines():
            if line.startswith("imported ") or "events/s stored" in line:
                print(line)
        ceiling, copy_ceiling = asyncio.run(ceilings(path, database_url, lines))
    stored, published = lines / run.stored_seconds, lines / run.published_seconds
    print(f"sir import: stored in {run.stored_seconds:.1f} s ({stored:,.0f} events/s: what the import answers),"
          f" published in {run.published_seconds:.1f} s ({published:,.0f} events/s: when it ended),"
          f" peak RSS {run.peak_kb / 1024:.0f} MB ({'under' if run.peak_kb < 200 * 1024 else 'OVER'} the 200 MB bound)")
    print(f"CPU of sir import and its processes: {run.cpu_seconds:.1f} s, {run.cpu_seconds / lines * 1e6:.0f} us an event;"
          f" of PostgreSQL's backends for the run: {run.database_cpu_seconds:.1f} s,"
          f" {run.database_cpu_seconds / lines * 1e6:.0f} us an event")
    print(f"ceiling: asyncpg executemany of the same rows {ceiling:,.0f} events/s;"
          f" ratio stored/ceiling {stored / ceiling:.2f}, published/ceiling {published / ceiling:.2f}")
    print(f"         COPY of the same rows {copy_ceiling:,.0f} events/s;"
          f" ratio stored/COPY {stored / copy_ceiling:.2f}, published/COPY {published / copy_ceiling:.2f}")
    for measured, rate in (("stored", stored), ("stored and published", published)):
        report_row(f"history import ({measured}), {size / 1e6:.0f} MB, {lines:,} events",
                   f"{rate:,.0f} events/s, peak RSS {run.peak_kb / 1024:.0f} MB",
                   f"asyncpg executemany {ceiling:,.0f} rows/s (COPY {copy_ceiling:,.0f})", ratio(rate, ceiling),
                   "≥ 0.2, RSS < 200 MB")

if __name__ == "__main__":
    main()
