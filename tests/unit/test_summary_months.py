"""Which days of a period a report reads from the summaries by month, and which from the
rows (services/reporting/repository.py): together every day once."""

from __future__ import annotations

import datetime as dt
import uuid

from hypothesis import given
from hypothesis import strategies as st

from services.reporting.domain import CaseRows, Notification, Review, replace
from services.reporting.repository import AGGREGATES, Scope, Summaries, _left_over, stale_dates

UTC = dt.timezone.utc
FIRST = dt.date(2019, 1, 1)
_day = st.integers(0, 3 * 365).map(lambda d: FIRST + dt.timedelta(days=d))
_month = st.integers(0, 40).map(lambda m: dt.date(2019 + m // 12, m % 12 + 1, 1))
_settled = st.one_of(st.none(), _day.map(lambda d: dt.datetime.combine(d, dt.time(9), UTC)))


@given(period_from=_day, length=st.integers(0, 500), months=st.dictionaries(_month, _settled),
       as_at=st.one_of(st.none(), _day.map(lambda d: dt.datetime.combine(d, dt.time(12), UTC))))
def test_the_summarised_months_and_the_days_left_over_cover_the_period_once(period_from, length, months, as_at):
    period_to = period_from + dt.timedelta(days=length)
    scope = Scope(period_from, period_to, as_at=as_at)
    for aggregate in AGGREGATES.values():
        used = Summaries(months).usable(aggregate, scope)
        assert used == sorted(used) and set(used) <= set(months)
        days = [day for month in used for day in _days(month, _month_end(month))]
        days += [day for first, last in _left_over(period_from, period_to, used) for day in _days(first, last)]
        assert sorted(days) == list(_days(period_from, period_to))
        for month in used:  # forwards: only months whose every forward fell due by as_at
            settled = months[month]
            assert not (aggregate.settles and as_at and settled and settled > as_at)


def test_as_of_a_past_moment_or_on_the_cohort_basis_the_rows_are_read():
    months = {dt.date(2020, m, 1): None for m in range(1, 13)}
    year = (dt.date(2020, 1, 1), dt.date(2020, 12, 31))
    past = Scope(*year, as_of=dt.datetime(2021, 1, 1, tzinfo=UTC))
    cohort = Scope(*year, basis="cohort")
    assert all(not Summaries(months).usable(a, past) for a in AGGREGATES.values())
    assert {a.kind for a in AGGREGATES.values() if Summaries(months).usable(a, cohort)} == {"notifications"}
    assert len(Summaries(months).usable(AGGREGATES["review_lists"], Scope(*year))) == 12


def test_a_batch_notes_the_dates_of_the_rows_it_changed():
    n = Notification(
        case_id=uuid.uuid4(), local_authority="fife", received_at=dt.datetime(2020, 1, 31, tzinfo=UTC),
        received_on=dt.date(2020, 1, 31), incident_date=dt.date(2020, 1, 30), working_days_taken=1,
        criterion="practice_concerns", incident_type="suicide", order_type="parole_licence", subject_role="perpetrator",
        mappa_applies=False, mappa_category=None, mappa_level=None, domestic_abuse_aggravated=False,
        historical=False, signed_off_by="service_manager", sg_forward_due_at=dt.datetime(2020, 2, 4, tzinfo=UTC),
    )
    r = Review(
        review_id=n.case_id, case_id=n.case_id, local_authority="fife", received_at=dt.datetime(2020, 3, 2, tzinfo=UTC),
        received_on=dt.date(2020, 3, 2), review_type="initial_analysis", signed_off_by="service_manager",
        reviewer_independent=True, risk_assessment_completed=True, risk_assessment_up_to_date=True, risk_tools=(),
        risk_management_plan_in_place=True, risk_management_plan_informed=True, order_reviews_referenced=True,
        good_practice_identified=False, findings=(), submission_due_on=dt.date(2020, 4, 30),
        response_due_on=dt.date(2020, 4, 2),
    )
    before = CaseRows(n, (r,))
    assert stale_dates({n.case_id: None}, {n.case_id: before}) == {dt.date(2020, 1, 31), dt.date(2020, 3, 2)}
    assert stale_dates({n.case_id: before}, {n.case_id: before}) == set()  # nothing changed
    responded = replace(r, responded_on=dt.date(2020, 5, 6))
    after = CaseRows(n, (responded,), replaced=(("reviews", r, None),))
    assert stale_dates({n.case_id: before}, {n.case_id: after}) == {dt.date(2020, 3, 2), dt.date(2020, 5, 6)}
    assessed = CaseRows(replace(n, meets_criteria=True), (r,))
    assert stale_dates({n.case_id: before}, {n.case_id: assessed}) == {dt.date(2020, 1, 31)}


def _days(first: dt.date, last: dt.date):
    return (first + dt.timedelta(days=d) for d in range((last - first).days + 1))


def _month_end(month: dt.date) -> dt.date:
    following = dt.date(month.year + month.month // 12, month.month % 12 + 1, 1)
    return following - dt.timedelta(days=1)
