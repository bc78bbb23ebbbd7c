"""The deadline rules, pure: the rules file, matching, due and warning times, lateness."""

from __future__ import annotations

import datetime as dt
import re
import uuid
from importlib.resources import files

import pytest
from hypothesis import given
from hypothesis import strategies as st

from services.deadlines.domain import (
    RULE_NAMES,
    RULES,
    RulesError,
    as_moment,
    deadline_event,
    due_date,
    event_id,
    first_fire_at,
    is_watched,
    parse_rules,
    working_days_late,
)
from shared.calendar import add_working_days, is_working_day, subtract_working_days
from shared.events import ANY_EVENT
from tests.factories import envelope, mappa_notification, notification, review

UTC = dt.timezone.utc
RULES_TEXT = (files("services.deadlines") / "rules.toml").read_text()


def _event(event_type, data, received_at="2026-11-02T10:00:00+00:00", **kwargs):
    body = envelope(event_type, data, **kwargs)
    body["received_at"] = body["recorded_at"] = received_at
    return ANY_EVENT.validate_python(body)


def test_the_rules_file_has_every_rule_of_the_spec_with_its_limit_and_owner():
    table = {r.name: (r.limit, r.owner, r.source) for r in RULES.rules}
    assert table == {
        "notification": ("5 working days", "council", "guidance"),
        "sg_forward": ("2 working days", "inspectorate", "guidance"),
        "sog_forward": ("2 working days", "inspectorate", "assumed"),
        "review_submission": ("3 calendar months", "council", "guidance"),
        "comprehensive_review": ("3 calendar months", "council", "assumed"),
        "inspectorate_response": ("1 calendar months", "inspectorate", "guidance"),
        "additional_info": ("20 working days", "council", "assumed"),
    }
    assert {r.name for r in RULES.rules} == set(RULE_NAMES)
    assert all(r.warning_working_days == 1 for r in RULES.rules)


def test_a_limit_changes_in_the_file_not_in_code():
    rules = parse_rules(RULES_TEXT.replace("limit = { working_days = 2 }", "limit = { working_days = 4 }", 1))
    start = dt.datetime(2026, 11, 2, 10, tzinfo=UTC)  # Monday
    assert RULES["sg_forward"].due_at(start) == dt.datetime(2026, 11, 5, tzinfo=UTC)
    # Day 4 is Friday 6 Nov: breached as Monday 9 Nov begins (the one verdict; was the end of Friday).
    assert rules["sg_forward"].due_at(start) == dt.datetime(2026, 11, 9, tzinfo=UTC)


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (('event = "review.submitted" }', 'event = "review.sent" }'), "unknown event type 'review.sent'"),
        (('"data.outcome"', '"data.result"'), "has no field 'data.result'"),
        (("limit = { months = 1 }", "limit = { months = 0 }"), "rules.inspectorate_response.limit.months"),
        (("limit = { months = 1 }", "limit = { weeks = 4 }"), "rules.inspectorate_response.limit"),
        (('owner = "inspectorate"', 'owner = "police"'), "owner"),
        (('at = "data.delivered_at"', 'at = "data.recipient"'), "is not a date or a timestamp"),
        (("[rules.additional_info]", "[rules.extra_info]"), "rules missing: ['additional_info']"),
        (("warning_working_days = 1", "warning_working_days = -1"), "warning_working_days"),
        (("\n[defaults]\n", "\n[defaults\n"), "not valid TOML"),
    ],
)
def test_a_bad_rules_file_is_refused_naming_what_is_wrong(edit, message):
    with pytest.raises(RulesError, match=re.escape(message)):
        parse_rules(RULES_TEXT.replace(*edit, 1))


def test_rules_start_on_their_events_and_conditions():
    assert [r.name for r in RULES.started_by(_event("incident.notified", notification()))] == [
        "notification", "sg_forward", "review_submission",
    ]
    assert "sog_forward" in [r.name for r in RULES.started_by(_event("incident.notified", mappa_notification()))]
    responded = {"outcome": "comprehensive_review_required"}
    assert [r.name for r in RULES.started_by(_event("review.responded", responded, role="inspectorate"))] == [
        "comprehensive_review"
    ]
    assert RULES.started_by(_event("review.responded", {"outcome": "concluded"}, role="inspectorate")) == []


def test_rules_stop_on_their_events_and_conditions():
    def stopped(event):
        return [r.name for r in RULES.stopped_by(event)]

    def forwarded(recipient):
        data = {"recipient": recipient, "channel": "topic", "attempts": 1, "delivered_at": "2026-11-03T09:00:00Z"}
        return _event("notification.forwarded", data, role="service")

    assert stopped(forwarded("scottish-government")) == ["sg_forward"]
    assert stopped(forwarded("sog:tayside")) == ["sog_forward"]
    assert stopped(_event("review.submitted", review())) == ["review_submission"]
    assert stopped(_event("review.submitted", review(review_type="comprehensive"))) == [
        "review_submission", "comprehensive_review",
    ]
    # The notification rule is judged by the event that starts it, never as a stop.
    assert stopped(_event("incident.notified", notification())) == []
    assert RULES["sg_forward"].stop.moment(forwarded("scottish-government")) == dt.datetime(2026, 11, 3, 9, tzinfo=UTC)
    assert [r.name for r in RULES.rules if r.stop_may_come_first] == ["sg_forward", "sog_forward"]


def test_closing_events_cancel():
    assert RULES.cancels(_event("case.closed", {"reason": "withdrawn"}, role="inspectorate"))
    assert RULES.cancels(_event("notification.criteria_assessed", {"meets_criteria": False}, role="inspectorate"))
    assert not RULES.cancels(_event("notification.criteria_assessed", {"meets_criteria": True}, role="inspectorate"))
    assert RULES.cancels(_event("sog.decision_recorded", {"scr_under_mappa": True}, role="sog"))


def test_the_notification_rule_counts_from_the_incident_date():
    rule = RULES["notification"]
    notified = _event("incident.notified", notification(incident_date="2026-12-22"), received_at="2027-01-08T10:00:00Z")
    started = rule.start.moment(notified)
    assert started == dt.datetime(2026, 12, 22, tzinfo=UTC)
    # Tue 22 Dec: 23, 24, then Christmas, a weekend and the Boxing Day holiday (Mon 28), 29, 30, 31.
    verdict = rule.verdict(started)
    assert verdict.last_day == dt.date(2026, 12, 31) and is_working_day(verdict.last_day)
    # Breached when the next working day begins: 1 Jan and Mon 4 Jan are holidays (was 1 Jan).
    assert verdict.due_at == rule.due_at(started) == dt.datetime(2027, 1, 5, tzinfo=UTC)


def test_a_summer_date_starts_at_midnight_in_scotland():
    assert as_moment(dt.date(2026, 7, 1)) == dt.datetime(2026, 6, 30, 23, tzinfo=UTC)


def test_warnings_go_out_one_working_day_before_the_due_date():
    rule = RULES["review_submission"]
    start = dt.datetime(2026, 11, 2, 10, tzinfo=UTC)
    due = rule.due_at(start)  # 3 months: end of Tue 2 Feb 2027
    assert due == dt.datetime(2027, 2, 3, tzinfo=UTC)
    assert rule.warn_at(start) == dt.datetime(2027, 2, 2, tzinfo=UTC)  # end of Mon 1 Feb
    month_end = dt.datetime(2026, 11, 30, 12, tzinfo=UTC)  # 28 Feb 2027 is a Sunday
    assert due_date(rule.due_at(month_end)) == dt.date(2027, 2, 28)
    assert due_date(rule.warn_at(month_end)) == dt.date(2027, 2, 26)  # the Friday before
    # A working-day rule warns one working day before the breach moment: sg_forward from
    # Wed 25 Nov 2026 is breached as Tue 1 Dec begins (Mon 30 Nov is St Andrew's Day), so
    # the warning comes as Fri 27 Nov, its last working day, begins.
    sg = RULES["sg_forward"]
    assert sg.due_at(dt.datetime(2026, 11, 25, 10, tzinfo=UTC)) == dt.datetime(2026, 12, 1, tzinfo=UTC)
    assert sg.warn_at(dt.datetime(2026, 11, 25, 10, tzinfo=UTC)) == dt.datetime(2026, 11, 27, tzinfo=UTC)


def test_lateness_is_counted_in_working_days_after_the_last_day():
    started = dt.datetime(2026, 10, 30, tzinfo=UTC)  # Fri 30 Oct: 5 working days end Fri 6 Nov
    assert working_days_late("notification", started, dt.datetime(2026, 11, 6, 16, tzinfo=UTC)) == 0
    # Saturday after the last working day: in time under the one verdict (was 1 day late).
    assert working_days_late("notification", started, dt.datetime(2026, 11, 7, 9, tzinfo=UTC)) == 0
    assert working_days_late("notification", started, dt.datetime(2026, 11, 9, 0, tzinfo=UTC)) == 1  # Monday
    assert working_days_late("notification", started, dt.datetime(2026, 11, 13, 9, tzinfo=UTC)) == 5
    # A calendar-month rule met on the Saturday after a Friday last day is late by at least 1.
    month = dt.datetime(2026, 9, 4, 10, tzinfo=UTC)  # review_submission: last day Fri 4 Dec
    assert working_days_late("review_submission", month, dt.datetime(2026, 12, 5, 9, tzinfo=UTC)) == 1


@given(st.dates(dt.date(2000, 1, 1), dt.date(2040, 12, 31)), st.integers(0, 60))
def test_subtracting_working_days_undoes_adding_them(start, days):
    end = add_working_days(start, days)
    back = subtract_working_days(end, days)
    assert back <= start and add_working_days(back, days) == end


@given(st.sampled_from(RULE_NAMES),
       st.datetimes(dt.datetime(2000, 1, 1), dt.datetime(2040, 1, 1), timezones=st.just(UTC)),
       st.integers(-100_000_000, 100_000_000))
def test_late_exactly_when_met_at_or_after_the_due_time(rule, started, seconds):
    due = RULES[rule].due_at(started)
    met = due + dt.timedelta(seconds=seconds)
    assert (working_days_late(rule, started, met) > 0) == (met >= due)


def test_history_is_watched_once_settled_and_late_warnings_are_skipped():
    event = _event("incident.notified", notification(), received_at="2026-11-02T10:00:00+00:00")
    soon, past = dt.datetime(2026, 11, 5, tzinfo=UTC), dt.datetime(2026, 11, 2, tzinfo=UTC)
    assert is_watched(soon, event, imported=False)
    # Imported: watched whether ahead or past due (still open when its history is applied).
    assert is_watched(soon, event, imported=True) and is_watched(past, event, imported=True)
    assert not is_watched(past, event, imported=False)
    warn = dt.datetime(2026, 11, 4, tzinfo=UTC)
    assert first_fire_at(soon, warn, event.recorded_at) == warn
    assert first_fire_at(soon, past, event.recorded_at) == soon
    assert first_fire_at(soon, None, event.recorded_at) == soon
    settle = dt.datetime(2026, 11, 4, 12, tzinfo=UTC)
    assert first_fire_at(soon, warn, event.recorded_at, settle) == settle
    assert first_fire_at(past, None, event.recorded_at, settle) == settle


def test_deadline_events_have_ids_that_name_the_fact():
    case = uuid.uuid4()
    assert event_id(case, "sg_forward", 1, "breached") == event_id(case, "sg_forward", 1, "breached")
    assert len({event_id(case, "sg_forward", s, k) for s in (1, 2) for k in ("opened", "breached")}) == 4
    moment = dt.datetime(2026, 11, 2, tzinfo=UTC)
    deadline = {"case_id": case, "local_authority": "fife", "rule": "sg_forward", "sequence": 1,
                "started_at": moment, "due_at": moment}
    event = deadline_event("met", deadline, received_at=moment, recorded_at=moment, met_at=moment, working_days_late=0)
    assert event.event_type == "deadline.met" and event.event_id == event_id(case, "sg_forward", 1, "met")
    assert ANY_EVENT.validate_json(event.model_dump_json()) == event
