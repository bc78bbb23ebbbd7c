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
import time
import uuid
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


def run_import(
    path: Path, database_url: str, bootstrap: str, profile: str | None = None
) -> tuple[float, int, float, str]:
    """Seconds, peak RSS in kB of the `sir import` process, the CPU seconds of it and its
    relay (user + system: what holds on a shared machine where wall time does not), and its stdout. `profile`: record
    it with py-spy (collapsed stacks) into that file (the RSS is then py-spy's or the import's)."""
    env = dict(os.environ, DATABASE_URL=database_url, KAFKA_BOOTSTRAP=bootstrap, SIR_LOG_LEVEL="WARNING")
    command = [sys.executable, "-m", "services.cli", "import", str(path)]
    if profile:
        # --subprocesses: the relay's process too (its stacks begin with its pid).
        command = [str(Path(sys.executable).parent / "py-spy"), "record", "-f", "raw", "-r", "100", "--idle",
                   "--subprocesses", "-o", profile, "--", *command]
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.perf_counter()
    done = subprocess.run(command, env=env, capture_output=True, text=True)
    seconds = time.perf_counter() - started
    if done.returncode != 0:
        raise SystemExit(f"sir import failed ({done.returncode}): {done.stderr[-2000:]}")
    # The largest peak of the children waited for so far: only this one.
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime
    return seconds, after.ru_maxrss, cpu, done.stdout + done.stderr


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
        seconds, peak_kb, cpu, output = run_import(path, database_url, broker.bootstrap, args.profile)
        for line in output.strip().splitlines():
            if line.startswith("imported ") or "events/s stored" in line:
                print(line)
        ceiling, copy_ceiling = asyncio.run(ceilings(path, database_url, lines))
    rate = lines / seconds
    print(f"sir import: {seconds:.1f} s (storing and publishing), {rate:,.0f} events/s, peak RSS {peak_kb / 1024:.0f} MB"
          f" ({'under' if peak_kb < 200 * 1024 else 'OVER'} the 200 MB bound)")
    print(f"CPU of sir import and its relay: {cpu:.1f} s, {cpu / lines * 1e6:.0f} us an event")
    print(f"ceiling: asyncpg executemany of the same rows {ceiling:,.0f} events/s; ratio import/ceiling {rate / ceiling:.2f}")
    print(f"         COPY of the same rows {copy_ceiling:,.0f} events/s; ratio import/COPY {rate / copy_ceiling:.2f}")
    report_row(f"history import, {size / 1e6:.0f} MB, {lines:,} events",
               f"{rate:,.0f} events/s, peak RSS {peak_kb / 1024:.0f} MB",
               f"asyncpg executemany {ceiling:,.0f} rows/s (COPY {copy_ceiling:,.0f})", ratio(rate, ceiling),
               "≥ 0.2, RSS < 200 MB")


if __name__ == "__main__":
    main()
