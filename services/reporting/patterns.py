"""The under-reporting signal (docs/reports.md, "Reporting patterns"): pure rules.

Per local authority and period: the notifications, the calendar quarters of the period
with none, the longest run of such quarters, and, where the caseload file gives the
people under statutory supervision, the rate per 1,000 supervised and a one-sided
Poisson test of the count against the national rate.

The test: an authority supervising S person-years in the period would, at the national
rate R (national notifications / national supervised person-years), expect λ = R × S
notifications. If notifications arrive as a Poisson process, P(X ≤ observed | λ) is the
chance of so few or fewer; below the threshold (`Settings.under_reporting_p_value`,
default 0.05) the count is flagged as improbably low. The cumulative distribution is
summed here in log space (no scipy on the platform).
"""

from __future__ import annotations

import csv
import datetime as dt
import functools
import io
import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from importlib.resources import files

from shared.calendar import add_months

NATIONAL = "scotland"  # the caseload file's row for the whole country


def poisson_cdf(observed: int, expected: float) -> float:
    """P(X ≤ observed) for X ~ Poisson(expected): Σ e^-λ λ^k / k!, each term in log space
    so a large λ neither overflows nor underflows before the sum."""
    if observed < 0:
        return 0.0
    if expected <= 0:
        return 1.0
    log_terms = [k * math.log(expected) - expected - math.lgamma(k + 1) for k in range(observed + 1)]
    top = max(log_terms)
    return min(1.0, math.exp(top) * sum(math.exp(t - top) for t in log_terms))


# --- the caseload file ----------------------------------------------------------------


@dataclass(frozen=True)
class Caseload:
    local_authority: str  # a slug, or "scotland" for the national total
    year: int  # the financial year starting 1 April of `year` (2013: 2013-14)
    supervised: int
    source: str


def parse_caseload(text: str, authorities: Iterable[str]) -> dict[tuple[str, int], Caseload]:
    """The caseload file's rows by (authority, year); a bad row is a ValueError naming it."""
    known = set(authorities) | {NATIONAL}
    rows: dict[tuple[str, int], Caseload] = {}
    for number, row in enumerate(csv.DictReader(io.StringIO(text)), start=2):
        try:
            entry = Caseload(row["local_authority"].strip(), int(row["year"]), int(row["supervised"]),
                             (row.get("source") or "").strip())
        except (KeyError, TypeError, ValueError) as error:
            raise ValueError(f"supervised_caseload.csv line {number}: {error!r}") from None
        if entry.local_authority not in known:
            raise ValueError(f"supervised_caseload.csv line {number}: unknown local authority {entry.local_authority!r}")
        if entry.supervised <= 0:
            raise ValueError(f"supervised_caseload.csv line {number}: supervised must be positive")
        if (entry.local_authority, entry.year) in rows:
            raise ValueError(f"supervised_caseload.csv line {number}: {entry.local_authority} {entry.year} twice")
        rows[entry.local_authority, entry.year] = entry
    return rows


@functools.cache
def load_caseload() -> dict[tuple[str, int], Caseload]:
    """The shipped file, read once (an operator's edit takes effect at the next start)."""
    from shared.reference import LOCAL_AUTHORITIES

    text = files("shared.reference").joinpath("supervised_caseload.csv").read_text(encoding="utf-8")
    return parse_caseload(text, LOCAL_AUTHORITIES)


def _financial_year(day: dt.date) -> int:
    return day.year if day.month >= 4 else day.year - 1


def _supervised_in(caseload: Mapping[tuple[str, int], Caseload], authority: str, year: int) -> int | None:
    """The authority's caseload for the financial year; a year the file lacks takes the
    nearest year it has (the latest earlier one first)."""
    years = sorted(y for a, y in caseload if a == authority)
    if not years:
        return None
    earlier = [y for y in years if y <= year]
    return caseload[authority, earlier[-1] if earlier else years[0]].supervised


def person_years(caseload, authority: str, period_from: dt.date, period_to: dt.date) -> float | None:
    """People under supervision × the share of each financial year the period covers."""
    total, day = 0.0, period_from
    while day <= period_to:
        year = _financial_year(day)
        year_start, year_end = dt.date(year, 4, 1), dt.date(year + 1, 3, 31)
        last = min(year_end, period_to)
        supervised = _supervised_in(caseload, authority, year)
        if supervised is None:
            return None
        total += supervised * ((last - day).days + 1) / ((year_end - year_start).days + 1)
        day = last + dt.timedelta(days=1)
    return total


# --- quarters --------------------------------------------------------------------------


def quarters_of(period_from: dt.date, period_to: dt.date) -> list[dt.date]:
    """The first days of the calendar quarters the period touches."""
    first = dt.date(period_from.year, 3 * ((period_from.month - 1) // 3) + 1, 1)
    quarters = []
    while first <= period_to:
        quarters.append(first)
        first = add_months(first, 3)
    return quarters


def longest_run(flags: Iterable[bool]) -> int:
    best = run = 0
    for flag in flags:
        run = run + 1 if flag else 0
        best = max(best, run)
    return best


@dataclass(frozen=True)
class AuthorityPattern:
    local_authority: str
    notifications: int
    quarters: int
    quarters_with_none: int
    longest_run_with_none: int
    supervised_person_years: float | None = None
    rate_per_1000: float | None = None
    expected: float | None = None
    p_value: float | None = None
    flagged: bool = False


def reporting_patterns(
    period_from: dt.date, period_to: dt.date, by_quarter: Mapping[tuple[str, dt.date], int],
    authorities: Iterable[str], caseload: Mapping[tuple[str, int], Caseload], threshold: float,
) -> tuple[dict, list[AuthorityPattern]]:
    """The national rate and each authority's pattern; `by_quarter`: notifications by
    (authority, first day of the quarter)."""
    quarters = quarters_of(period_from, period_to)
    authorities = list(authorities)
    counts = {a: sum(by_quarter.get((a, q), 0) for q in quarters) for a in authorities}
    national_count = sum(counts.values())
    national_years = person_years(caseload, NATIONAL, period_from, period_to)
    if national_years is None:  # no national row: the authorities' rows, if all are there
        years = [person_years(caseload, a, period_from, period_to) for a in authorities]
        national_years = None if None in years else sum(years)  # type: ignore[arg-type]
    rate = national_count / national_years if national_years else None
    national = {
        "notifications": national_count,
        "supervised_person_years": _round(national_years),
        "rate_per_1000": _round(rate and 1000 * rate),
        "threshold": threshold,
    }
    patterns = []
    for authority in authorities:
        empty = [by_quarter.get((authority, q), 0) == 0 for q in quarters]
        supervised = person_years(caseload, authority, period_from, period_to)
        pattern = AuthorityPattern(authority, counts[authority], len(quarters), sum(empty), longest_run(empty))
        if supervised and rate is not None:
            expected = rate * supervised
            p_value = poisson_cdf(counts[authority], expected)
            pattern = AuthorityPattern(
                **{**pattern.__dict__, "supervised_person_years": _round(supervised),
                   "rate_per_1000": _round(1000 * counts[authority] / supervised),
                   "expected": _round(expected), "p_value": round(p_value, 4), "flagged": p_value < threshold}
            )
        patterns.append(pattern)
    return national, patterns


def _round(value: float | None, places: int = 2) -> float | None:
    return None if value is None else round(value, places)
