import datetime as dt

from hypothesis import given, strategies as st

from shared.calendar import add_months, due_after_months, end_of_day


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
    assert due_after_months(received, 3) == end_of_day(dt.date(2026, 11, 1))


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
    due_after_working_days,
    is_working_day,
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


def test_a_working_day_deadline_ends_at_midnight_london_across_the_clock_change():
    # Thu 22 Oct 2026 + 2 working days = Mon 26 Oct, after the clocks go back (25 Oct).
    start = dt.datetime(2026, 10, 22, 10, 0, tzinfo=dt.timezone.utc)
    assert due_after_working_days(start, 2) == dt.datetime(2026, 10, 27, 0, 0, tzinfo=dt.timezone.utc)
    # Thu 26 Mar 2026 + 2 = Mon 30 Mar, after the clocks go forward (29 Mar): 23:00 UTC.
    start = dt.datetime(2026, 3, 26, 10, 0, tzinfo=dt.timezone.utc)
    assert due_after_working_days(start, 2) == dt.datetime(2026, 3, 30, 23, 0, tzinfo=dt.timezone.utc)


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
