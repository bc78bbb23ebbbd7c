"""Calendar arithmetic of SPEC §4, pure: calendar months and the end of a day in Scotland."""

from __future__ import annotations

import calendar
import datetime as dt
from zoneinfo import ZoneInfo

LONDON = ZoneInfo("Europe/London")


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
