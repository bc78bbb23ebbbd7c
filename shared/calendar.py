"""Calendar arithmetic of SPEC §4, pure: working days, calendar months and the end of a
day in Scotland.

A working day is Monday to Friday, less Scotland's bank holidays (the `holidays`
package, GB, subdivision SCT) and the extra closures listed in
`reference/closures.csv` (edit that file, not code, for a one-off closure).
Counting: day 1 is the first working day *after* the start, so
`working_days_between(start, add_working_days(start, n)) == n`.
"""

from __future__ import annotations

import calendar
import csv
import datetime as dt
import functools
import io
from importlib.resources import files
from typing import Iterable
from zoneinfo import ZoneInfo

import holidays

LONDON = ZoneInfo("Europe/London")


def _read_closures(text: str) -> frozenset[dt.date]:
    return frozenset(dt.date.fromisoformat(row["date"]) for row in csv.DictReader(io.StringIO(text)))


EXTRA_CLOSURES = _read_closures((files("shared.reference") / "closures.csv").read_text())


@functools.cache
def _bank_holidays(year: int) -> frozenset[dt.date]:
    return frozenset(holidays.country_holidays("GB", subdiv="SCT", years=year))


def is_working_day(day: dt.date, closures: Iterable[dt.date] = EXTRA_CLOSURES) -> bool:
    return day.weekday() < 5 and day not in _bank_holidays(day.year) and day not in closures


@functools.lru_cache(maxsize=65536)
def add_working_days(start: dt.date, days: int) -> dt.date:
    """The `days`-th working day after `start` (start itself never counts)."""
    return _step_working_days(start, days, dt.timedelta(days=1))


@functools.lru_cache(maxsize=65536)
def subtract_working_days(end: dt.date, days: int) -> dt.date:
    """The `days`-th working day before `end` (end itself never counts)."""
    return _step_working_days(end, days, dt.timedelta(days=-1))


def _step_working_days(day: dt.date, days: int, step: dt.timedelta) -> dt.date:
    if days < 0:
        raise ValueError("days must be zero or more")
    counted = 0
    while counted < days:
        day += step
        counted += is_working_day(day)
    return day


@functools.cache
def _running_count(year: int) -> tuple[int, ...]:
    """Working days of `year` up to and including each of its days (index: day of year - 1)."""
    counts, count, day = [], 0, dt.date(year, 1, 1)
    while day.year == year:
        count += is_working_day(day)
        counts.append(count)
        day += dt.timedelta(days=1)
    return tuple(counts)


def _working_days_so_far(day: dt.date) -> int:
    return _running_count(day.year)[day.timetuple().tm_yday - 1]


def working_days_between(start: dt.date, end: dt.date) -> int:
    """Working days after `start` up to and including `end` (0 when end <= start).
    From a count per day of each year, so the reports' rebuild pays no loop per event."""
    if end <= start:
        return 0
    whole_years = sum(_running_count(year)[-1] for year in range(start.year, end.year))
    return whole_years + _working_days_so_far(end) - _working_days_so_far(start)


def add_months(day: dt.date, months: int) -> dt.date:
    """The same day `months` later, clamped to the end of a shorter month (31 Jan + 1 → 28/29 Feb)."""
    index = day.year * 12 + day.month - 1 + months
    year, month = divmod(index, 12)
    month += 1
    return dt.date(year, month, min(day.day, calendar.monthrange(year, month)[1]))


def local_date(moment: dt.datetime) -> dt.date:
    """The date in Scotland at that moment."""
    return moment.astimezone(LONDON).date()


def end_of_day(day: dt.date) -> dt.datetime:
    """The moment a deadline on `day` falls due: midnight at its end, Europe/London, in UTC."""
    return dt.datetime.combine(day + dt.timedelta(days=1), dt.time(), LONDON).astimezone(dt.timezone.utc)


def due_after_months(start: dt.datetime, months: int) -> dt.datetime:
    return end_of_day(add_months(local_date(start), months))


def due_after_working_days(start: dt.datetime, days: int) -> dt.datetime:
    return end_of_day(add_working_days(local_date(start), days))
