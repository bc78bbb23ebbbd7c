"""Reporting's consumers: one pure decider per topic (domain.py) between its loader and
saver (repository.py), behind the shell (shared/process.py). No SQL here.

- case events → `decide_case`: the case's row in `notifications` (the report's columns and
  the case's lifecycle, which the casework view reads) and its reviews;
- routing events → `decide_forward`: the first forward to each recipient;
- deadline events → `decide_deadline`: each deadline's times and status (the quarterly
  report's overdue items and breaches, and the casework view's owed deadlines).

`sir report rebuild` (commands.py) folds the same deciders over every event in memory.
"""

from __future__ import annotations

from services.reporting import repository
from services.reporting.domain import DEADLINE_STATUS, decide_case, decide_deadline, decide_forward
from shared.lifecycle import POSTED_BY
from shared.process import Process

SERVICE = "reporting"

CASES = Process(
    SERVICE, decide_case, repository.load_cases, repository.save_cases,
    wants=lambda event: event.event_type in POSTED_BY,
)
FORWARDS = Process(
    SERVICE, decide_forward, repository.load_forwards, repository.save_forwards,
    wants=lambda event: event.event_type == "notification.forwarded",
)
DEADLINES = Process(
    SERVICE, decide_deadline, repository.load_deadlines, repository.save_deadlines,
    wants=lambda event: event.event_type in DEADLINE_STATUS,
)
