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
