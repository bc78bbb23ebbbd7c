"""SPEC §4 "One verdict": the deadlines service and the reports judge every working-day
timescale alike, for any dates (a property test over random incidents, receipts and
forwards), because both call shared.calendar.judge."""

from __future__ import annotations

import datetime as dt
import uuid

from hypothesis import given, settings
from hypothesis import strategies as st

from services.deadlines.domain import RULES, working_days_late
from services.reporting.domain import (
    NOTIFICATION_WORKING_DAYS,
    NotificationCounts,
    apply_case_event,
    notification_figures,
)
from shared.events import ANY_EVENT
from tests.factories import envelope, notification

UTC = dt.timezone.utc
LONDON_DAYS = st.dates(min_value=dt.date(2000, 1, 1), max_value=dt.date(2045, 12, 31))


def _notified(incident: dt.date, received_at: dt.datetime):
    body = envelope("incident.notified", notification(incident_date=incident.isoformat()), case_id=uuid.uuid4())
    return ANY_EVENT.validate_python(body | {"received_at": received_at.isoformat(), "recorded_at": received_at.isoformat()})


def _reporting_says(event) -> tuple[bool, int]:
    """In time and working days taken, as the national report counts the notification."""
    row = apply_case_event(None, event).notification
    counts = NotificationCounts(total=1)
    counts.working_days[row.working_days_taken] += 1
    # repository.NOTIFICATION_COUNTS["in_time"]: working_days_taken <= 5, counted in SQL
    counts.totals["in_time"] = int(row.working_days_taken <= 5)
    return notification_figures(counts)["notified_within_5_working_days"]["count"] == 1, row.working_days_taken


def _deadlines_say(event) -> tuple[bool, int]:
    """In time and working days late, as the deadlines service judges the notification rule."""
    rule = RULES["notification"]
    started, received = rule.start.moment(event), rule.stop.moment(event)
    late = working_days_late("notification", started, received)
    return late == 0 and received < rule.due_at(started), late


def test_the_observed_disagreement_incident_friday_received_on_st_andrews_day():
    event = _notified(dt.date(2026, 11, 20), dt.datetime(2026, 11, 30, 10, tzinfo=UTC))
    assert _reporting_says(event) == (True, 5)
    assert _deadlines_say(event) == (True, 0)


@settings(max_examples=400)
@given(LONDON_DAYS, st.integers(0, 40), st.integers(0, 24 * 3600 - 1))
def test_deadlines_and_reporting_agree_on_the_notification_rule(incident, days_after, seconds):
    received = dt.datetime.combine(incident + dt.timedelta(days=days_after), dt.time(), UTC) + dt.timedelta(seconds=seconds)
    if received.astimezone(UTC).date() < incident:
        return
    event = _notified(incident, received)
    in_time, taken = _reporting_says(event)
    deadline_in_time, late = _deadlines_say(event)
    assert in_time == deadline_in_time
    assert late == max(0, taken - NOTIFICATION_WORKING_DAYS)


@settings(max_examples=400)
@given(st.datetimes(dt.datetime(2000, 1, 1), dt.datetime(2045, 1, 1), timezones=st.just(UTC)), st.integers(0, 30 * 86400))
def test_deadlines_and_reporting_agree_on_forwarding_to_the_scottish_government(received_at, seconds):
    delivered_at = received_at + dt.timedelta(seconds=seconds)
    event = _notified(received_at.date() - dt.timedelta(days=1), received_at)
    reporting_in_time = delivered_at < apply_case_event(None, event).notification.sg_forward_due_at
    rule = RULES["sg_forward"]
    assert reporting_in_time == (working_days_late("sg_forward", rule.start.moment(event), delivered_at) == 0)
