"""Reporting's pure rules: projection rows from events, and figures from counts."""

from __future__ import annotations

import datetime as dt
import json
import statistics as stats
import uuid
from collections import Counter
from decimal import ROUND_HALF_UP, Decimal
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from services.reporting.domain import (
    NotificationCounts,
    QuarterCounts,
    Report,
    ReviewCounts,
    apply_case_event,
    apply_deadline_event,
    first_forward,
    forward_of,
    national_report,
    quarter_period,
    quarterly_report,
    ratio,
    report_schema,
    statistics,
)
from shared.events import ANY_EVENT
from tests.factories import envelope, notification, review

CASE = uuid.uuid4()


def event(event_type: str, data: dict, received_at: str, role: str = "council"):
    body = envelope(event_type, data, case_id=CASE, role=role) | {"received_at": received_at, "recorded_at": received_at}
    return ANY_EVENT.validate_python(body)


def fold(*events):
    case = None
    for e in events:
        case = apply_case_event(case, e)
    return case


def test_ratio_rounds_to_one_decimal_and_has_no_percent_of_nothing():
    assert ratio(40, 111) == {"count": 40, "base": 111, "percent": 36.0}
    assert ratio(2, 3) == {"count": 2, "base": 3, "percent": 66.7}
    assert ratio(0, 0) == {"count": 0, "base": 0, "percent": None}


def test_percentages_round_half_up_never_to_even():
    # 49/80 = 61.25%: the published figure is 61.3 (Python's round gives 61.2).
    assert ratio(49, 80)["percent"] == 61.3
    assert ratio(1, 8)["percent"] == 12.5 and ratio(1, 16)["percent"] == 6.3  # 6.25
    assert ratio(3, 8)["percent"] == 37.5 and ratio(5, 16)["percent"] == 31.3  # 31.25


@given(st.lists(st.integers(min_value=6, max_value=1000), min_size=1, max_size=60))
def test_statistics_of_a_histogram_are_those_of_the_values(values):
    result = statistics(Counter(values))
    assert result["min"] == min(values) and result["max"] == max(values)
    assert result["median"] == stats.median(values)
    assert result["mean"] == float(
        (Decimal(sum(values)) / len(values)).quantize(Decimal("0.1"), rounding=ROUND_HALF_UP)
    )


def test_statistics_of_nothing():
    assert statistics({}) == {"min": None, "max": None, "median": None, "mean": None}


def test_a_notification_counts_working_days_from_the_incident_to_its_scottish_date():
    # Friday 7 June 2013 to Friday 14 June: 5 working days. 23:30 UTC on the 14th is
    # already the 15th in Scotland (BST), a Saturday: still 5.
    case = fold(event("incident.notified", notification(incident_date="2013-06-07"), "2013-06-14T23:30:00Z"))
    n = case.notification
    assert n.received_on == dt.date(2013, 6, 15) and n.working_days_taken == 5
    # Forwarding is in time up to the second working day after receipt (Tuesday 18th):
    # breached as Wednesday 19th begins in Scotland (the one verdict).
    assert n.sg_forward_due_at == dt.datetime(2013, 6, 18, 23, tzinfo=dt.timezone.utc)
    assert n.review_owed_since == n.received_on and n.closed_on is None


def test_a_case_folds_reviews_requests_responses_and_closing():
    notified = event("incident.notified", notification(incident_date="2014-01-06"), "2014-01-08T10:00:00Z")
    # A finding listed twice is one finding of the review (the report counts reviews).
    iar = event("review.submitted", review(findings=["staffing_shortfall", "staffing_shortfall"]), "2014-03-10T10:00:00Z")
    asked = event("review.additional_info_requested", {}, "2014-03-12T10:00:00Z", "inspectorate")
    given_ = event("review.additional_info_provided", {}, "2014-03-20T10:00:00Z")
    needs = event("review.responded", {"outcome": "comprehensive_review_required", "iar_decision_appropriate": False},
                  "2014-04-14T10:00:00Z", "inspectorate")
    comprehensive = event("review.submitted", review(review_type="comprehensive"), "2014-06-02T10:00:00Z")
    done = event("review.responded", {"outcome": "concluded", "high_quality": True}, "2014-06-20T10:00:00Z", "inspectorate")
    closed = event("case.closed", {"reason": "concluded"}, "2014-06-23T10:00:00Z", "inspectorate")

    case = fold(notified, iar, asked, given_, needs, comprehensive, done, closed)
    first, second = case.reviews
    assert first.review_type == "initial_analysis" and first.info_requests == 1
    assert first.findings == ("staffing_shortfall",)
    assert first.submission_due_on == dt.date(2014, 4, 8)  # 3 months from receipt
    assert first.response_due_on == dt.date(2014, 4, 10) and first.responded_on == dt.date(2014, 4, 14)  # late
    assert first.outcome == "comprehensive_review_required" and first.iar_decision_appropriate is False
    # The comprehensive review's clock starts at the response that asked for it.
    assert second.submission_due_on == dt.date(2014, 7, 14)
    assert second.high_quality is True and second.info_requests == 0
    assert case.notification.closed_on == dt.date(2014, 6, 23) and case.notification.closed_reason == "concluded"


def test_criteria_not_met_closes_and_events_before_a_notification_count_nothing():
    assert fold(event("review.submitted", review(), "2014-03-10T10:00:00Z")) is None
    case = fold(
        event("incident.notified", notification(incident_date="2014-01-06"), "2014-01-08T10:00:00Z"),
        event("notification.criteria_assessed", {"meets_criteria": False}, "2014-01-09T10:00:00Z", "inspectorate"),
    )
    assert case.notification.meets_criteria is False and case.notification.closed_reason == "criteria_not_met"
    # A notification seen twice (a replay the consumer let through) changes nothing.
    again = apply_case_event(case, event("incident.notified", notification(incident_date="2014-01-06"), "2014-01-08T10:00:00Z"))
    assert again is case


def test_the_first_delivery_to_a_recipient_counts():
    def forwarded(at):
        return forward_of(event("notification.forwarded", {
            "recipient": "scottish-government", "channel": "email", "attempts": 1, "delivered_at": at}, at, "service"))

    early, late = forwarded("2014-01-09T10:00:00Z"), forwarded("2014-01-20T10:00:00Z")
    assert first_forward(first_forward(None, late), early) == early == first_forward(first_forward(None, early), late)


def test_deadline_rows_keep_what_each_event_settles():
    data = {"rule": "review_submission", "started_at": "2014-01-08T10:00:00Z", "due_at": "2014-04-08T23:00:00Z"}
    opened = apply_deadline_event(None, event("deadline.opened", data, "2014-01-08T10:00:00Z", "admin"))
    met = apply_deadline_event(opened, event(
        "deadline.met", data | {"met_at": "2014-05-01T10:00:00Z", "working_days_late": 16}, "2014-05-01T10:00:00Z", "admin"))
    assert opened.met_at is None and met.met_at == dt.datetime(2014, 5, 1, 10, tzinfo=dt.timezone.utc)
    cancelled = apply_deadline_event(met, event("deadline.cancelled", data, "2014-06-01T10:00:00Z", "admin"))
    assert cancelled.cancelled_at == dt.datetime(2014, 6, 1, 10, tzinfo=dt.timezone.utc) and cancelled.met_at == met.met_at


def test_quarters():
    assert quarter_period(2014, 1) == (dt.date(2014, 1, 1), dt.date(2014, 3, 31))
    assert quarter_period(2014, 4) == (dt.date(2014, 10, 1), dt.date(2014, 12, 31))
    with pytest.raises(ValueError):
        quarter_period(2014, 5)


def sample_counts() -> tuple[NotificationCounts, ReviewCounts]:
    n = NotificationCounts(total=4)
    n.totals.update(sg_forwarded=4, sg_forwarded_in_time=3, sg_forward_judged=4, in_time=1, late=3,
                    signed_off_senior=3)
    n.by_authority.update({"fife": 3, "moray": 1})
    n.by_incident_type.update({"suicide": 1, "stalking": 3})
    n.by_sign_off.update({"team_manager": 1, "service_manager": 3})
    n.working_days.update({2: 1, 8: 2, 30: 1})
    r = ReviewCounts()
    r.by_type["initial_analysis"] = Counter(reviews=3, in_time=2, risk_management_plan_in_place=2,
                                            risk_management_plan_informed=1, with_info_requests=1)
    r.responses_by_type["initial_analysis"] = Counter(responses=2, in_time=2, iar_judged=2, iar_appropriate=1)
    return n, r


def test_the_national_report_shape_and_bases():
    n, r = sample_counts()
    report = national_report(dt.date(2014, 1, 1), dt.date(2014, 12, 31), dt.datetime(2026, 1, 1, tzinfo=dt.timezone.utc), n, r)
    Report.model_validate(report)
    figures = report["figures"]
    assert figures["notified_within_5_working_days"] == ratio(1, 4)
    assert figures["late_notification_working_days"] == {"min": 8, "max": 30, "median": 8, "mean": 15.3}
    assert figures["notifications_signed_off_by_service_manager_or_above"] == ratio(3, 4)
    assert figures["forwarded_to_sg_within_2_working_days"] == ratio(3, 4)
    # The plans informed by the assessment are a share of the plans, not of the reviews.
    assert figures["risk_management_plans_informed_by_assessment"] == ratio(1, 2)
    assert figures["comprehensive_reviews"] == ratio(0, 3)
    by_authority = report["tables"]["notifications_by_authority"]
    assert len(by_authority["rows"]) == 32 and by_authority["rows"][0] == ["Fife", 3, 75.0]
    assert len(report["tables"]["notifications_by_incident_type"]["rows"]) == 19
    assert [row[0] for row in report["tables"]["timeliness"]["rows"]] == [
        "Notified within 5 working days", "Forwarded to the Scottish Government within 2 working days",
        "Inspectorate responses within 1 month", "Reviews within 3 months",
    ]


def test_the_quarterly_report_adds_authorities_open_overdue_and_breaches():
    n, r = sample_counts()
    q = QuarterCounts()
    q.open_cases.update({"fife": 2})
    q.overdue_items.update({"moray": 1})
    q.breaches.update({"fife": 1})
    q.breaches_by_rule.update({"notification": 1})
    report = quarterly_report(2014, 2, dt.datetime(2026, 1, 1, tzinfo=dt.timezone.utc), n, r, q)
    Report.model_validate(report)
    assert report["period"] == {"from": "2014-04-01", "to": "2014-06-30"}
    assert report["figures"]["open_cases_at_quarter_end"] == 2
    rows = {row[0]: row[1:] for row in report["tables"]["by_authority"]["rows"]}
    assert rows["Fife"] == [3, 2, 0, 1] and rows["Moray"] == [1, 0, 1, 0] and len(rows) == 32


def test_the_published_schema_is_current():
    published = json.loads((Path(__file__).parents[2] / "docs" / "report.schema.json").read_text())
    assert published == report_schema(), "run `sir report schema`"
