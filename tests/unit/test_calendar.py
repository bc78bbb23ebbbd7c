import datetime as dt

from hypothesis import given
from hypothesis import strategies as st

from shared.calendar import Timescale, add_months, end_of_day, judge


def test_months_clamp_to_the_end_of_a_shorter_month():
    assert add_months(dt.date(2026, 1, 31), 1) == dt.date(2026, 2, 28)
    assert add_months(dt.date(2028, 1, 31), 1) == dt.date(2028, 2, 29)
    assert add_months(dt.date(2026, 11, 30), 3) == dt.date(2027, 2, 28)
    assert add_months(dt.date(2026, 10, 15), 3) == dt.date(2027, 1, 15)


def test_a_day_ends_at_midnight_london_time_in_summer_and_winter():
    assert end_of_day(dt.date(2026, 7, 1)) == dt.datetime(2026, 7, 1, 23, 0, tzinfo=dt.timezone.utc)
    assert end_of_day(dt.date(2026, 12, 1)) == dt.datetime(2026, 12, 2, 0, 0, tzinfo=dt.timezone.utc)


def test_receipt_late_in_the_evening_counts_on_the_london_date():
    # 23:30 UTC on 31 July is 00:30 on 1 August in London.
    received = dt.datetime(2026, 7, 31, 23, 30, tzinfo=dt.timezone.utc)
    assert judge(received, Timescale(months=3)).due_at == end_of_day(dt.date(2026, 11, 1))


@given(st.dates(min_value=dt.date(2000, 1, 1), max_value=dt.date(2100, 1, 1)), st.integers(0, 36))
def test_adding_months_moves_the_month_and_never_overshoots(day, months):
    later = add_months(day, months)
    assert (later.year - day.year) * 12 + later.month - day.month == months
    assert later.day <= day.day


@given(st.dates(min_value=dt.date(2000, 1, 1), max_value=dt.date(2100, 1, 1)), st.integers(0, 36))
def test_a_later_start_never_gives_an_earlier_date(day, months):
    assert add_months(day + dt.timedelta(days=1), months) >= add_months(day, months)


# --- working days --------------------------------------------------------------------

from shared.calendar import (  # noqa: E402
    add_working_days,
    is_working_day,
    start_of_day,
    working_days_between,
)

D = dt.date


def test_scottish_bank_holidays_are_not_working_days():
    assert not is_working_day(D(2026, 12, 25))  # Christmas, a Friday
    assert not is_working_day(D(2026, 12, 28))  # Boxing Day falls on Saturday: moved to Monday
    assert not is_working_day(D(2027, 1, 1))  # New Year's Day
    assert not is_working_day(D(2027, 1, 4))  # 2 January falls on Saturday: moved to Monday
    assert not is_working_day(D(2026, 4, 3))  # Good Friday
    assert is_working_day(D(2026, 4, 6))  # Easter Monday is not a bank holiday in Scotland
    assert not is_working_day(D(2026, 8, 3))  # first Monday of August
    assert is_working_day(D(2026, 8, 31))  # England's late summer holiday is not Scotland's
    assert not is_working_day(D(2025, 12, 1))  # St Andrew's Day on a Sunday: moved to Monday
    assert not is_working_day(D(2026, 11, 30))  # St Andrew's Day, a Monday


def test_day_one_is_the_first_working_day_after_the_start():
    assert add_working_days(D(2026, 11, 24), 1) == D(2026, 11, 25)  # Tue -> Wed
    assert add_working_days(D(2026, 11, 20), 1) == D(2026, 11, 23)  # Fri -> Mon
    assert add_working_days(D(2026, 11, 21), 0) == D(2026, 11, 21)
    # Over Christmas and New Year: 24 Dec 2026 (Thu) + 5 working days.
    # 29, 30, 31 Dec, 5 and 6 Jan (25 and 28 Dec, 1 and 4 Jan are holidays).
    assert add_working_days(D(2026, 12, 24), 5) == D(2027, 1, 6)
    # Good Friday 2026 is 3 April: Thu 2 April + 2 working days is Tue 7 April.
    assert add_working_days(D(2026, 4, 2), 2) == D(2026, 4, 7)


def test_a_working_day_deadline_is_breached_when_the_next_working_day_begins_across_the_clock_change():
    # Thu 22 Oct 2026 + 2 working days = Mon 26 Oct (after the clocks go back on 25 Oct):
    # breached as Tue 27 Oct begins, London time.
    start = dt.datetime(2026, 10, 22, 10, 0, tzinfo=dt.timezone.utc)
    assert judge(start, Timescale(working_days=2)).due_at == dt.datetime(2026, 10, 27, 0, 0, tzinfo=dt.timezone.utc)
    # Wed 25 Mar 2026 + 2 = Fri 27 Mar; the next working day is Mon 30 Mar, after the
    # clocks go forward (29 Mar): it begins at 23:00 UTC on the 29th.
    start = dt.datetime(2026, 3, 25, 10, 0, tzinfo=dt.timezone.utc)
    assert judge(start, Timescale(working_days=2)).due_at == dt.datetime(2026, 3, 29, 23, 0, tzinfo=dt.timezone.utc)


# --- the one verdict ---------------------------------------------------------------------

FIVE = Timescale(working_days=5, warning_working_days=1)
UTC = dt.timezone.utc


def test_the_observed_disagreement_st_andrews_day_2026_receipt_is_in_time():
    """Incident Fri 20 Nov 2026, received Mon 30 Nov (St Andrew's Day, a holiday): the five
    working days are 23-27 Nov, the next working day is Tue 1 Dec, so it is in time."""
    verdict = judge(D(2026, 11, 20), FIVE, dt.datetime(2026, 11, 30, 10, tzinfo=UTC))
    assert (verdict.in_time, verdict.working_days_taken, verdict.working_days_late) == (True, 5, 0)
    assert verdict.last_day == D(2026, 11, 27)
    assert verdict.due_at == start_of_day(D(2026, 12, 1)) == dt.datetime(2026, 12, 1, tzinfo=UTC)
    assert verdict.warn_at == start_of_day(D(2026, 11, 27))  # one working day before the breach
    late = judge(D(2026, 11, 20), FIVE, dt.datetime(2026, 12, 1, 9, tzinfo=UTC))
    assert (late.in_time, late.working_days_taken, late.working_days_late) == (False, 6, 1)


def test_receipt_on_the_saturday_after_the_last_working_day_is_in_time():
    verdict = judge(D(2026, 10, 30), FIVE, dt.datetime(2026, 11, 7, 12, tzinfo=UTC))  # Fri 30 Oct: day 5 is Fri 6 Nov
    assert (verdict.in_time, verdict.working_days_taken, verdict.working_days_late) == (True, 5, 0)
    assert verdict.due_at == start_of_day(D(2026, 11, 9))
    late = judge(D(2026, 10, 30), FIVE, dt.datetime(2026, 11, 14, 12, tzinfo=UTC))
    assert (late.in_time, late.working_days_taken, late.working_days_late) == (False, 10, 5)


def test_st_andrews_day_on_a_sunday_moves_to_the_monday_and_that_monday_counts_as_in_time():
    # 30 Nov 2025 is a Sunday: the holiday is Mon 1 Dec 2025. Incident Fri 21 Nov 2025:
    # days 24-28 Nov; the Saturday, Sunday and the Monday holiday follow; breach Tue 2 Dec.
    verdict = judge(D(2025, 11, 21), FIVE, dt.datetime(2025, 12, 1, 16, tzinfo=UTC))
    assert not is_working_day(D(2025, 12, 1))
    assert (verdict.in_time, verdict.working_days_taken) == (True, 5)
    assert verdict.due_at == dt.datetime(2025, 12, 2, tzinfo=UTC)


def test_over_christmas_and_new_year():
    # Incident Tue 22 Dec 2026: 23, 24, 29, 30, 31 Dec (25, 28 Dec are holidays); then
    # 1 Jan and Mon 4 Jan (2 Jan on a Saturday) are holidays: the breach is Tue 5 Jan 2027.
    verdict = judge(D(2026, 12, 22), FIVE)
    assert verdict.last_day == D(2026, 12, 31)
    assert verdict.due_at == dt.datetime(2027, 1, 5, tzinfo=UTC)
    assert verdict.warn_at == dt.datetime(2026, 12, 31, tzinfo=UTC)
    on_the_holiday = judge(D(2026, 12, 22), FIVE, dt.datetime(2027, 1, 4, 11, tzinfo=UTC))
    assert (on_the_holiday.in_time, on_the_holiday.working_days_taken) == (True, 5)
    tuesday = judge(D(2026, 12, 22), FIVE, dt.datetime(2027, 1, 5, 0, 0, tzinfo=UTC))
    assert (tuesday.in_time, tuesday.working_days_taken, tuesday.working_days_late) == (False, 6, 1)


def test_calendar_months_fall_due_at_the_end_of_the_last_day():
    verdict = judge(dt.datetime(2026, 11, 2, 10, tzinfo=UTC), Timescale(months=3, warning_working_days=1))
    assert verdict.last_day == D(2027, 2, 2) and verdict.due_at == end_of_day(D(2027, 2, 2))
    assert verdict.warn_at == end_of_day(D(2027, 2, 1))
    # Met on the Saturday after a month ending on a Friday: late, at least one working day.
    friday = judge(D(2026, 10, 30), Timescale(months=1), dt.datetime(2026, 12, 1, 10, tzinfo=UTC))
    assert friday.last_day == D(2026, 11, 30) and friday.in_time is False
    saturday = judge(D(2026, 9, 4), Timescale(months=3), dt.datetime(2026, 12, 5, 10, tzinfo=UTC))
    assert (saturday.in_time, saturday.working_days_late) == (False, 1)


@given(
    st.dates(min_value=D(2000, 1, 1), max_value=D(2060, 12, 31)),
    st.integers(1, 25),
    st.integers(-5 * 86400, 60 * 86400),
)
def test_a_stop_is_in_time_exactly_when_before_the_breach_moment(start, limit, seconds):
    timescale = Timescale(working_days=limit)
    due = judge(start, timescale).due_at
    stopped = due + dt.timedelta(seconds=seconds)
    verdict = judge(start, timescale, stopped)
    assert verdict.in_time == (stopped < due)
    assert verdict.working_days_late == max(0, verdict.working_days_taken - limit)
    assert verdict.in_time == (verdict.working_days_taken <= limit)


def test_working_days_between_counts_after_the_start_up_to_the_end():
    assert working_days_between(D(2026, 11, 20), D(2026, 11, 23)) == 1
    assert working_days_between(D(2026, 11, 23), D(2026, 11, 23)) == 0
    assert working_days_between(D(2026, 11, 24), D(2026, 11, 20)) == 0
    assert working_days_between(D(2026, 12, 24), D(2027, 1, 6)) == 5


working_dates = st.dates(min_value=D(2000, 1, 1), max_value=D(2060, 12, 31))


@given(working_dates, st.integers(0, 60))
def test_a_due_date_is_never_a_weekend_or_holiday(start, days):
    due = add_working_days(start, days)
    assert days == 0 or is_working_day(due)


@given(working_dates, st.integers(0, 60))
def test_counting_the_working_days_to_the_due_date_gives_the_limit_back(start, days):
    assert working_days_between(start, add_working_days(start, days)) == days


@given(working_dates, st.integers(-30, 800))
def test_working_days_between_is_a_count_of_the_days_after_start_up_to_end(start, days):
    end = start + dt.timedelta(days=days)
    counted = sum(is_working_day(start + dt.timedelta(days=n)) for n in range(1, days + 1))
    assert working_days_between(start, end) == counted


@given(working_dates, st.integers(1, 30), st.integers(0, 60))
def test_a_later_start_never_gives_an_earlier_due_date(start, shift, days):
    assert add_working_days(start + dt.timedelta(days=shift), days) >= add_working_days(start, days)
