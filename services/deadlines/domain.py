"""Deadline rules, pure. For now only `review_submission`: 3 calendar months from receipt."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from shared.calendar import due_after_months

REVIEW_SUBMISSION_MONTHS = 3


@dataclass(frozen=True)
class Deadline:
    rule: str
    started_at: dt.datetime
    due_at: dt.datetime


def review_submission(received_at: dt.datetime) -> Deadline:
    return Deadline("review_submission", received_at, due_after_months(received_at, REVIEW_SUBMISSION_MONTHS))
