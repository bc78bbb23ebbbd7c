"""Calendar arithmetic of SPEC §4, pure: working days, calendar months and the end of a
day in Scotland.

A working day is Monday to Friday, less Scotland's bank holidays (the `holidays`
package, GB, subdivision SCT) and the extra closures listed in
`reference/closures.csv` (edit that file, not code, for a one-off closure).
Counting: day 1 is the first working day *after* the start, so
`working_days_between(start, add_working_days(start, n)) == n`.

`judge` is the one verdict of SPEC §4: every due time, warning, met-or-late and count of
working days taken or late, in the deadlines service and in every report, comes from it.
"""

from __future__ import annotations

import calendar
import csv
import datetime as dt
import functools
import io
from collections.abc import Iterable
from dataclasses import dataclass
from importlib.resources import files
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


@functools.cache
def _year_counts(year: int) -> tuple[int, tuple[int, ...]]:
    """The ordinal of 1 January of `year`, and `_running_count(year)`."""
    return dt.date(year, 1, 1).toordinal(), _running_count(year)


def _working_days_so_far(day: dt.date) -> int:
    first, counts = _year_counts(day.year)
    return counts[day.toordinal() - first]


def working_days_between(start: dt.date, end: dt.date) -> int:
    """Working days after `start` up to and including `end` (0 when end <= start).
    From a count per day of each year, so the reports' rebuild pays no loop per event."""
    if end <= start:
        return 0
    whole_years = 0
    for year in range(start.year, end.year):
        whole_years += _running_count(year)[-1]
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


def start_of_day(day: dt.date) -> dt.datetime:
    """Midnight at the start of `day`, Europe/London, in UTC."""
    return dt.datetime.combine(day, dt.time(), LONDON).astimezone(dt.timezone.utc)


# --- the one verdict (SPEC §4 "One verdict") ----------------------------------------------


@dataclass(frozen=True)
class Timescale:
    """A limit: `working_days` or `months` (exactly one), and how many working days
    before the breach a warning goes out (0: none)."""

    working_days: int | None = None
    months: int | None = None
    warning_working_days: int = 0

    def __post_init__(self) -> None:
        if (self.working_days is None) == (self.months is None):
            raise ValueError("a timescale is in working days or in calendar months, not both or neither")


@dataclass(frozen=True)
class Verdict:
    """What a timescale says of one start and (perhaps) its stop.

    last_day: the last working day allowed (the limit-th working day after the start; for
        months, the same day `months` later, clamped).
    due_at: the breach moment: for working days, when the next working day after
        `last_day` begins; for months, the end of `last_day` (Europe/London, in UTC).
    warn_at: `warning_working_days` working days before the breach (None: no warning).
    in_time: stopped before `due_at` (None while no stop).
    working_days_taken: working days after the start up to and including the day of the
        stop (None while no stop).
    working_days_late: 0 when in time; else the working days after `last_day` up to and
        including the day of the stop, at least 1 (None while no stop).
    """

    last_day: dt.date
    due_at: dt.datetime
    warn_at: dt.datetime | None
    in_time: bool | None = None
    working_days_taken: int | None = None
    working_days_late: int | None = None


def _day_of(moment: dt.date | dt.datetime) -> dt.date:
    return local_date(moment) if isinstance(moment, dt.datetime) else moment


def judge(
    started: dt.date | dt.datetime, timescale: Timescale, stopped: dt.date | dt.datetime | None = None
) -> Verdict:
    """The one verdict for a deadline: deadlines (due, warning, met or breached, days late)
    and every report (within N working days, the late statistics, breaches) call this.

    A working-day rule counts the working days after the start (its Scottish date) up to
    and including the day of the stop; the stop is in time when they are no more than the
    limit, so a stop on the weekend or holiday directly after the last working day is in
    time, and the breach comes when the next working day begins. A date (not a moment) as
    the stop means a stop during that day.
    """
    return _judge_days(_day_of(started), timescale, None if stopped is None else _day_of(stopped))


def _judge_days(start_day: dt.date, timescale: Timescale, stop_day: dt.date | None) -> Verdict:
    """`judge` by days (all it depends on)."""
    limits = _limits(start_day, timescale)
    if stop_day is None:
        return limits
    # By days, so a moment and its date give the same answer: a moment is in time exactly
    # when it is before `due_at`.
    taken = working_days_between(start_day, stop_day)
    if timescale.working_days is not None:
        late = late_by(taken, timescale.working_days)
    else:  # late after the last day, by at least one working day (a Saturday after a Friday)
        late = 0 if stop_day <= limits.last_day else max(1, working_days_between(limits.last_day, stop_day))
    return Verdict(limits.last_day, limits.due_at, limits.warn_at, late == 0, taken, late)


@functools.lru_cache(maxsize=65536)
def _limits(start_day: dt.date, timescale: Timescale) -> Verdict:
    """The verdict of a start with no stop yet, remembered: a rebuild judges a million
    events over a few thousand distinct days."""
    if timescale.working_days is not None:
        last_day = add_working_days(start_day, timescale.working_days)
        breach_day = add_working_days(last_day, 1)
        due_at = start_of_day(breach_day)
        warn_at = (
            start_of_day(subtract_working_days(breach_day, timescale.warning_working_days))
            if timescale.warning_working_days else None
        )
    else:
        assert timescale.months is not None  # a timescale has exactly one of the two (__post_init__)
        last_day = add_months(start_day, timescale.months)
        due_at = end_of_day(last_day)
        warn_at = (
            end_of_day(subtract_working_days(last_day, timescale.warning_working_days))
            if timescale.warning_working_days else None
        )
    return Verdict(last_day, due_at, warn_at)


def late_by(working_days_taken: int, limit: int) -> int:
    """A working-day rule's working days late: those taken beyond the limit (0: in time).
    `judge` says this of each stop; a report counting stored days taken asks it too."""
    return max(0, working_days_taken - limit)
