"""The under-reporting signal's pure rules (services/reporting/patterns.py): the Poisson
tail, quarters without a notification, person-years of supervision, and synthetic counts
that should and should not be flagged."""

from __future__ import annotations

import datetime as dt
import math

import pytest

from services.reporting.patterns import (
    load_caseload,
    longest_run,
    parse_caseload,
    person_years,
    poisson_cdf,
    quarters_of,
    reporting_patterns,
)
from shared.reference import LOCAL_AUTHORITIES

D = dt.date


def test_poisson_cdf_against_the_closed_form():
    assert poisson_cdf(0, 1.0) == pytest.approx(math.exp(-1))
    assert poisson_cdf(2, 2.0) == pytest.approx(5 * math.exp(-2))
    assert poisson_cdf(10, 0.0) == 1.0 and poisson_cdf(-1, 3.0) == 0.0
    # a large mean neither overflows nor loses the tail: P(X <= 900 | 1000) is about 0.0010
    assert poisson_cdf(900, 1000.0) == pytest.approx(0.00080, abs=0.0003)
    assert poisson_cdf(1000, 1000.0) == pytest.approx(0.508, abs=0.002)


def test_quarters_and_runs():
    quarters = quarters_of(D(2013, 6, 1), D(2015, 1, 31))
    assert quarters[0] == D(2013, 4, 1) and quarters[-1] == D(2015, 1, 1) and len(quarters) == 8
    assert longest_run([True, True, False, True, True, True, False]) == 3
    assert longest_run([]) == 0


def test_the_shipped_file_has_the_national_total_the_report_quotes():
    caseload = load_caseload()
    assert caseload["scotland", 2013].supervised == 26366
    # a whole financial year is its caseload in person-years
    assert person_years(caseload, "scotland", D(2013, 4, 1), D(2014, 3, 31)) == pytest.approx(26366)
    assert person_years(caseload, "fife", D(2013, 4, 1), D(2014, 3, 31)) is None


def test_a_bad_caseload_row_names_its_line():
    with pytest.raises(ValueError, match=r"line 2.*unknown local authority"):
        parse_caseload("local_authority,year,supervised,source\nnowhere,2013,10,x\n", LOCAL_AUTHORITIES)


CASELOAD = parse_caseload(
    "local_authority,year,supervised,source\n"
    "scotland,2013,20000,test\n"
    "glasgow-city,2013,4000,test\n"  # a fifth of the country
    "fife,2013,1000,test\n", LOCAL_AUTHORITIES,
)
YEAR = (D(2013, 4, 1), D(2014, 3, 31))


def _pattern(by_quarter, authority, threshold=0.05):
    national, patterns = reporting_patterns(*YEAR, by_quarter, LOCAL_AUTHORITIES, CASELOAD, threshold)
    return national, next(p for p in patterns if p.local_authority == authority)


def _spread(total: int, authority: str) -> dict:
    return {(authority, q): total // 4 for q in quarters_of(*YEAR)}


def test_an_authority_far_below_the_national_rate_is_flagged():
    # 100 notifications nationally (5 per 1,000): Glasgow's fifth would be 20; it sent 8
    counts = _spread(92, "city-of-edinburgh") | {("glasgow-city", D(2013, 4, 1)): 8}
    national, glasgow = _pattern(counts, "glasgow-city")
    assert national["rate_per_1000"] == 5.0 and glasgow.expected == 20.0
    assert glasgow.rate_per_1000 == 2.0 and glasgow.p_value < 0.05 and glasgow.flagged
    assert glasgow.quarters_with_none == 3 and glasgow.longest_run_with_none == 3


def test_a_count_near_the_national_rate_is_not_flagged_nor_one_without_a_caseload():
    counts = _spread(80, "city-of-edinburgh") | _spread(20, "glasgow-city")
    _, glasgow = _pattern(counts, "glasgow-city")
    assert not glasgow.flagged and glasgow.p_value > 0.4 and glasgow.quarters_with_none == 0
    _, moray = _pattern(counts, "moray")  # no caseload: quarters only, never a flag
    assert moray.rate_per_1000 is None and not moray.flagged and moray.quarters_with_none == 4


def test_the_threshold_is_the_operators():
    counts = _spread(84, "city-of-edinburgh") | _spread(16, "glasgow-city")  # P(X <= 16 | 20) is about 0.22
    assert not _pattern(counts, "glasgow-city")[1].flagged
    assert _pattern(counts, "glasgow-city", threshold=0.3)[1].flagged
